// The histogram model's 10-bin rating distribution as an SVG bar chart, mean and std marked.
const SVG = "http://www.w3.org/2000/svg";
const W = 320, H = 160, LEFT = 8, BOTTOM = 22, TOP = 10;

function el(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Draw `histogram` (shares of ratings 1..10) into `svg`, with `mean` and `std` marked. */
export function drawHistogram(svg, histogram, mean, std) {
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const slot = (W - 2 * LEFT) / histogram.length;
  const top = Math.max(...histogram, 0.01);
  const x = (rating) => LEFT + (rating - 0.5) * slot; // centre of rating's bar
  const plotH = H - BOTTOM - TOP;
  // ±1 std band behind the bars.
  svg.append(el("rect", { x: x(mean - std), y: TOP, width: Math.max(0, 2 * std * slot), height: plotH, fill: "#1b6fd114" }));
  histogram.forEach((p, i) => {
    const h = (p / top) * plotH;
    const bar = el("rect", { class: "bar", x: LEFT + i * slot + 2, y: TOP + plotH - h, width: slot - 4, height: h, fill: "#1b6fd1", rx: 2 });
    bar.append(el("title", {}, `rating ${i + 1}: ${(100 * p).toFixed(1)}%`));
    svg.append(bar);
    svg.append(el("text", { x: LEFT + (i + 0.5) * slot, y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#5d6875" }, String(i + 1)));
  });
  svg.append(el("line", { x1: x(mean), x2: x(mean), y1: TOP - 4, y2: TOP + plotH, stroke: "#b3261e", "stroke-width": 2 }));
  svg.append(el("text", { x: x(mean) + 4, y: TOP + 6, "font-size": 11, fill: "#b3261e" }, `mean ${mean.toFixed(2)}`));
}
