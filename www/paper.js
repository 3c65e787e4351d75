// The paper page: Fig. 2 from AVA's real vote counts, Tables 1-2 beside Loupe's own evaluation
// (weights/EVALUATION.md), and the regression and histogram models side by side on a photo.
import { LoupeClient } from "./client.js";
import { drawHistogram } from "./histogram.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The paper's numbers (Tables 1 and 2; the first five rows of Table 1 are from Kao et al.).
const PAPER_TABLE_1 = [
  ["GIST linear-SVR", 0.5222, null],
  ["GIST rbf-SVR", 0.5307, null],
  ["BoVW SIFT linear-SVR", 0.5401, null],
  ["BoVW SIFT rbf-SVR", 0.5513, null],
  ["Kao et al.", 0.451, null],
  ["No SW regression (NSWR)", 0.3373, 1.3951],
  ["SW regression (SWR)", 0.4847, 0.9754],
];
const PAPER_TABLE_2 = { mse: [0.6358, 1.0109], rmser: ["26.75%", "19.57%"] };

/**
 * Fig. 2 with Eq. 1 over it: the share of AVA's photos in each of the 90 bins, and each bin's weight
 * (log scale). `set`: the summary of the photos the weights were computed on (images, class counts).
 */
function drawSampleWeights(svg, { counts, weights, score_min: lo, score_max: hi }, set) {
  const W = 900, H = 320, left = 56, right = 64, top = 16, bottom = 40;
  const plotW = W - left - right, plotH = H - top - bottom;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const total = set.images;
  const shares = counts.map((c) => (100 * c) / total);
  const topShare = Math.ceil(Math.max(...shares));
  const slot = plotW / counts.length;
  const x = (score) => left + ((score - lo) / (hi - lo)) * plotW;
  const yShare = (s) => top + plotH - (s / topShare) * plotH;
  const used = weights.filter((w) => w > 0);
  const [logMin, logMax] = [Math.floor(Math.log10(Math.min(...used))), Math.ceil(Math.log10(Math.max(...used)))];
  const yWeight = (w) => top + plotH - ((Math.log10(w) - logMin) / (logMax - logMin)) * plotH;
  const label = (attrs, text) => svg.append(el("text", { "font-size": 12, fill: "#5d6875", ...attrs }, text));

  shares.forEach((share, i) => {
    const bar = el("rect", { class: "bin", x: left + i * slot + 0.5, y: yShare(share), width: Math.max(0.5, slot - 1), height: top + plotH - yShare(share), fill: "#9bbbe3" });
    const from = lo + ((hi - lo) * i) / counts.length;
    bar.append(el("title", {}, `${from.toFixed(1)}–${(from + (hi - lo) / counts.length).toFixed(1)}: ${counts[i].toLocaleString("en")} photos (${share.toFixed(2)}%), weight ${weights[i] ? weights[i].toFixed(1) : "—"}`));
    svg.append(bar);
  });
  const points = weights.map((w, i) => (w > 0 ? `${left + (i + 0.5) * slot},${yWeight(w)}` : null)).filter(Boolean);
  svg.append(el("polyline", { class: "weights", points: points.join(" "), fill: "none", stroke: "#b3261e", "stroke-width": 2 }));

  svg.append(el("line", { x1: left, x2: left + plotW, y1: top + plotH, y2: top + plotH, stroke: "#5d6875" }));
  for (let score = lo; score <= hi; score++) label({ x: x(score), y: H - bottom + 16, "text-anchor": "middle" }, String(score));
  label({ x: left + plotW / 2, y: H - 6, "text-anchor": "middle" }, "mean rating (score)");
  for (let s = 0; s <= topShare; s += Math.max(1, Math.round(topShare / 4))) label({ x: left - 6, y: yShare(s) + 4, "text-anchor": "end" }, `${s}%`);
  label({ x: 14, y: top + plotH / 2, transform: `rotate(-90 14 ${top + plotH / 2})`, "text-anchor": "middle" }, "share of AVA's photos");
  for (let p = logMin; p <= logMax; p++) label({ x: left + plotW + 6, y: yWeight(10 ** p) + 4, fill: "#b3261e" }, String(10 ** p));
  label({ x: W - 10, y: top + plotH / 2, transform: `rotate(90 ${W - 10} ${top + plotH / 2})`, "text-anchor": "middle", fill: "#b3261e" }, "sample weight (Eq. 1, log)");

  $("weights-caption").textContent =
    `Bars: the mean ratings of all ${total.toLocaleString("en")} AVA photos in ${counts.length} bins on [${lo}, ${hi}] ` +
    `(${((100 * set.average) / total).toFixed(1)}% lie between 4 and 7). Line: each bin's weight by Eq. 1, ` +
    `${Math.min(...used).toFixed(2)} to ${Math.round(Math.max(...used)).toLocaleString("en")}; empty bins get none. ` +
    `(The paper computes the weights on its training set, 249,502 of these photos.)`;
  svg.dataset.bins = String(counts.length);
}

/** The metrics tables of `loupe-train eval`'s report (EVALUATION.md), by model folder: {swr: {all: {...}, balanced: {...}}}. */
function parseEvaluation(markdown) {
  const models = {};
  let model = null;
  let header = null;
  for (const line of markdown.split("\n")) {
    const heading = /^# Evaluation of `(?:.*\/)?([^/`]+)\/[^/`]+`/.exec(line);
    if (heading) [model, header] = [(models[heading[1]] = {}), null];
    else if (!line.startsWith("|")) header = line.trim() === "" ? header : null;
    else if (model && !line.startsWith("|---")) {
      const cells = line.split("|").slice(1, -1).map((c) => c.trim());
      if (!header) header = cells;
      else if (header[0] === "test set") model[cells[0]] = Object.fromEntries(header.map((h, i) => [h, cells[i]]));
    }
  }
  return models;
}

function row(tbody, cells, className) {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  cells.forEach((text, i) => tr.append(Object.assign(document.createElement(i === 0 ? "th" : "td"), { textContent: text ?? "NA" })));
  if (className) tr.firstChild.scope = "row";
  tbody.append(tr);
}

async function drawTables() {
  const t1 = $("table1").tBodies[0];
  const t2 = $("table2").tBodies[0];
  PAPER_TABLE_1.forEach(([name, rs, ed]) => row(t1, [`paper: ${name}`, rs.toFixed(4), ed?.toFixed(4)]));
  row(t2, ["paper: SW histogram (SWH)", PAPER_TABLE_2.mse[0].toFixed(4), PAPER_TABLE_2.rmser[0], PAPER_TABLE_2.mse[1].toFixed(4), PAPER_TABLE_2.rmser[1]]);
  const response = await fetch("weights/EVALUATION.md");
  if (!response.ok) {
    $("tables-note").textContent = `These weights come without an EVALUATION.md (HTTP ${response.status}): only the paper's rows are shown.`;
    return;
  }
  const models = parseEvaluation(await response.text());
  const mse = (m, set) => m?.[set]?.["MSE (Eq. 4)"];
  for (const [key, name] of [["nswr", "NSWR"], ["swr", "SWR"]]) {
    if (models[key]) row(t1, [`Loupe: ${name}`, mse(models[key], "all"), mse(models[key], "balanced")], "loupe");
  }
  if (models.swh) {
    const r = (set) => models.swh[set]?.["RMSER (Eq. 5)"];
    row(t2, ["Loupe: SWH", mse(models.swh, "all"), r("all"), mse(models.swh, "balanced"), r("balanced")], "loupe");
  }
  document.body.dataset.loupeRows = String(document.querySelectorAll("tr.loupe").length);
}

let client = null; // started on the first photo: the tables and the chart need no model
async function scorePhoto(file) {
  $("error").hidden = true;
  client ??= new LoupeClient({ onDownload: (loaded, total) => ($("paper-status").textContent = `Downloading the models: ${(loaded / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB (once)`) });
  try {
    await client.ready;
    $("paper-status").textContent = `Scoring ${file.name}…`;
    const result = await client.score(await file.arrayBuffer());
    const { regression, histogramModel } = result;
    $("paper-photo").src = URL.createObjectURL(file);
    $("swr").hidden = !regression;
    $("swh").hidden = !histogramModel;
    if (regression) {
      $("swr-score").textContent = regression.score.toFixed(2);
      $("swr-percentile").textContent = `Better than ${Math.round(regression.percentile)}% of AVA's photos.`;
    }
    if (histogramModel) {
      $("swh-score").textContent = histogramModel.score.toFixed(2);
      $("swh-percentile").textContent = `Better than ${Math.round(histogramModel.percentile)}% of AVA's photos; std ${histogramModel.std.toFixed(2)}.`;
      drawHistogram($("swh-histogram"), histogramModel.histogram, histogramModel.score, histogramModel.std);
      $("swh-difficulty").textContent = histogramModel.difficulty;
    }
    $("side-by-side").hidden = false;
    $("side-by-side").dataset.result = JSON.stringify(result);
    $("paper-status").textContent = `${file.name}: scored on ${(await client.ready).backend} in ${Math.round(result.ms)} ms.`;
  } catch (error) {
    $("error").textContent = `${file.name}: ${error.message}`;
    $("error").hidden = false;
  }
}

$("paper-file").addEventListener("change", (event) => {
  if (event.target.files[0]) scorePhoto(event.target.files[0]);
  event.target.value = "";
});

Promise.all([
  fetch("paper/ava-sample-weights.json")
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`paper/ava-sample-weights.json: HTTP ${r.status}`))))
    .then((stats) => drawSampleWeights($("weights-chart"), stats.sample_weights, stats.sets[stats.sample_weights.computed_on])),
  drawTables(),
]).then(
  () => (document.body.dataset.ready = "true"),
  (error) => {
    $("error").textContent = error.message;
    $("error").hidden = false;
  },
);
