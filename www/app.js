// Loupe's page: drop/paste/pick photos → score, rating distribution, best crop; many → ranked gallery.
import { LoupeClient } from "./client.js";
import { drawHistogram } from "./histogram.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const client = new LoupeClient({
  forceCpu: params.has("cpu"),
  onDownload: (loaded, total) => {
    $("download").hidden = loaded >= total;
    $("download").max = total || 1;
    $("download").value = loaded;
    $("status").textContent = `Downloading the model: ${(loaded / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB (once; then cached)`;
  },
});

let current = null; // {bytes, bitmap, crops, shown}

client.ready.then(
  ({ backend, precision, threads, models }) => {
    document.body.dataset.backend = backend;
    document.body.dataset.precision = precision;
    document.body.dataset.threads = threads;
    const gpu = precision === "f16" ? "your GPU (WebGPU, f16)" : "your GPU (WebGPU)";
    const cpu = threads > 1 ? `your CPU (${threads} threads)` : "your CPU";
    $("status").textContent = `Ready: running on ${backend === "webgpu" ? gpu : cpu} — ${models.map((m) => m.kind).join(" + ")} model.`;
    $("untrained").hidden = models.every((m) => m.metadata.head_trained);
    document.body.dataset.ready = "true";
  },
  (error) => {
    $("status").textContent = "Loupe could not start.";
    showError(error.message);
  },
);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function handleFiles(files) {
  const images = [...files].filter((f) => f.size > 0 || f.type.startsWith("image/") || f.name);
  if (images.length === 0) return;
  showError("");
  if (images.length === 1) await scoreOne(images[0]);
  else await scoreMany(images);
}

async function scoreOne(file) {
  $("batch").hidden = true;
  const bytes = await file.arrayBuffer();
  let result;
  try {
    result = await client.score(bytes.slice(0));
  } catch (error) {
    $("single").hidden = true;
    showError(`${file.name}: ${error.message}`);
    return;
  }
  const bitmap = await createImageBitmap(new Blob([bytes]), { imageOrientation: "from-image" });
  current = { bytes, bitmap, name: file.name, crops: [], shown: null };
  $("single").hidden = false;
  drawPreview();
  // result: {score, percentile, regression?: {score, percentile}, histogramModel?: {score, percentile, histogram, std, difficulty}, ms}
  const { regression, histogramModel: histogram } = result;
  $("score").textContent = result.score.toFixed(2);
  $("percentile").textContent = `Better than ${Math.round(result.percentile)}% of the 255,502 photos rated on AVA.`;
  $("score").dataset.result = JSON.stringify(result); // exact values, for tests and tools
  const parts = [];
  if (regression) parts.push(`regression ${regression.score.toFixed(2)}`);
  if (histogram) parts.push(`histogram mean ${histogram.score.toFixed(2)}`);
  $("models").textContent = parts.join(" · ");
  $("histogram-figure").hidden = !histogram;
  if (histogram) {
    drawHistogram($("histogram"), histogram.histogram, histogram.score, histogram.std);
    $("histogram-caption").textContent = `Predicted share of ratings 1–10: mean ${histogram.score.toFixed(2)}, std ${histogram.std.toFixed(2)}.`;
  }
  $("difficulty").textContent = histogram?.difficulty ?? "";
  $("timing").textContent = `${Math.round(result.ms)} ms on ${document.body.dataset.backend}`;
  $("alternatives").replaceChildren();
  $("download-crop").hidden = true;
}

function drawPreview() {
  const canvas = $("canvas");
  const { bitmap, shown } = current;
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  if (!shown) return;
  ctx.fillStyle = "#0008";
  ctx.beginPath();
  ctx.rect(0, 0, bitmap.width, bitmap.height);
  ctx.rect(shown.x, shown.y, shown.width, shown.height);
  ctx.fill("evenodd");
  ctx.strokeStyle = "#f0b400";
  ctx.lineWidth = Math.max(2, bitmap.width / 300);
  ctx.strokeRect(shown.x, shown.y, shown.width, shown.height);
}

function cropOptions() {
  const choice = $("aspect").value === "custom" ? $("custom").value.trim() : $("aspect").value;
  // The field's own min, max and initial value (index.html) bound what is asked for.
  const field = $("candidates");
  const candidates = Math.max(Number(field.min), Math.min(Number(field.max), Number(field.value) || Number(field.defaultValue)));
  const size = /^(\d+)\s*x\s*(\d+)$/i.exec(choice);
  const shape = size ? { width: Number(size[1]), height: Number(size[2]) } : { aspect: choice };
  return { ...shape, candidates, topK: 5, seed: 1 };
}

async function findCrop() {
  if (!current) return;
  showError("");
  const button = $("crop-button");
  const progress = $("crop-progress");
  button.disabled = true;
  progress.hidden = false;
  progress.value = 0;
  try {
    const { crops } = await client.crop(current.bytes.slice(0), cropOptions(), (done, total) => {
      progress.max = total;
      progress.value = done;
    });
    current.crops = crops;
    showCrop(0);
    const list = $("alternatives");
    list.dataset.crops = JSON.stringify(crops);
    list.replaceChildren(
      ...crops.map((c, i) => {
        const item = document.createElement("li");
        const show = document.createElement("button");
        show.type = "button";
        show.textContent = `${c.width}×${c.height} at (${c.x}, ${c.y}) — ${c.score.toFixed(2)}`;
        show.addEventListener("click", () => showCrop(i));
        item.append(show);
        return item;
      }),
    );
    $("download-crop").hidden = false;
  } catch (error) {
    showError(`Crop: ${error.message}`);
  } finally {
    button.disabled = false;
    progress.hidden = true;
  }
}

function showCrop(index) {
  current.shown = current.crops[index];
  drawPreview();
}

function downloadCrop() {
  const { bitmap, shown, name } = current;
  if (!shown) return;
  const canvas = document.createElement("canvas");
  canvas.width = shown.width;
  canvas.height = shown.height;
  canvas.getContext("2d").drawImage(bitmap, shown.x, shown.y, shown.width, shown.height, 0, 0, shown.width, shown.height);
  canvas.toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name.replace(/\.[^.]*$/, "") + "-crop.jpg";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }, "image/jpeg", 0.92);
}

async function scoreMany(files) {
  $("single").hidden = true;
  $("batch").hidden = false;
  const gallery = $("gallery");
  gallery.replaceChildren();
  const entries = [];
  for (const [i, file] of files.entries()) {
    $("status").textContent = `Scoring ${i + 1} of ${files.length}…`;
    const item = document.createElement("li");
    const image = document.createElement("img");
    image.alt = file.name;
    image.src = URL.createObjectURL(file);
    const caption = document.createElement("p");
    item.append(image, caption);
    let score = -Infinity;
    try {
      const result = await client.score(await file.arrayBuffer());
      score = result.score;
      item.dataset.score = String(score);
      caption.innerHTML = "";
      caption.append(Object.assign(document.createElement("span"), { className: "rank" }), ` ${file.name}: ${score.toFixed(2)} (${Math.round(result.ms)} ms)`);
    } catch (error) {
      item.classList.add("failed");
      caption.textContent = `${file.name}: ${error.message}`;
    }
    entries.push({ item, score });
    entries.sort((a, b) => b.score - a.score);
    gallery.replaceChildren(...entries.map((e) => e.item));
    entries.forEach((e, rank) => {
      const badge = e.item.querySelector(".rank");
      if (badge) badge.textContent = `#${rank + 1}`;
    });
  }
  $("status").textContent = `Ranked ${files.length} photos on ${document.body.dataset.backend}.`;
}

$("files").addEventListener("change", (event) => {
  handleFiles(event.target.files);
  event.target.value = "";
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  handleFiles(event.dataTransfer.files);
});
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("files").click();
  }
});
document.addEventListener("paste", (event) => {
  const files = [...event.clipboardData.files];
  if (files.length) handleFiles(files);
});
$("aspect").addEventListener("change", () => ($("custom-label").hidden = $("aspect").value !== "custom"));
$("crop-button").addEventListener("click", findCrop);
$("download-crop").addEventListener("click", downloadCrop);
