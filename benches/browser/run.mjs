// Loupe beside onnxruntime-web in one headless chromium session, on the same VGG16 weights:
//   - Loupe's wasm API on the CPU fallback (and on WebGPU with --webgpu): weight load, first
//     score, steady-state score (decode + resize + VGG16 + both heads), a 1000-candidate crop;
//   - the same through the app's worker, which on this isolated page runs the threaded build
//     (www/pkg-threads/) on every core;
//   - onnxruntime-web on the same 13-conv graph (exported from the same safetensors): wasm EP at
//     1 and 2 threads (the page is cross-origin isolated, so threads work), WebGPU EP with --webgpu;
//   - time to first score through the app's own worker, cold (empty cache) and warm (cached).
// A benchmark, not a test: it prints a table. From the repository root, after ./scripts/build-web.sh:
//   (cd benches/browser && npm ci) && node benches/browser/run.mjs [--webgpu] [--scores 5] [--crop 1000] [--rerank N]
// Needs /usr/bin/chromium, python3 with onnx + safetensors + numpy, ../shared/data (LOUPE_SHARED_DATA).
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const { values: options } = parseArgs({
  options: {
    webgpu: { type: "boolean", default: false },
    scores: { type: "string", default: "5" },
    runs: { type: "string", default: "5" },
    crop: { type: "string", default: "1000" },
    // The crop's exact re-scores (default: the library's).
    rerank: { type: "string" },
    weights: { type: "string", default: join(root, "weights") },
  },
});
const shared = process.env.LOUPE_SHARED_DATA || join(root, "..", "shared", "data");
if (!existsSync(join(root, "www", "pkg", "loupe_bg.wasm"))) throw new Error("build the app first: ./scripts/build-web.sh");

// The onnxruntime-web peer's model: the same graph the native bench times, from the same weights.
const scratch = mkdtempSync(join(tmpdir(), "loupe-bench-"));
const model = join(scratch, "vgg16.onnx");
execFileSync("python3", [join(root, "benches", "onnx_vgg16.py"), "--export", model, join(shared, "vgg16", "vgg16_imagenet_conv_bgr_caffe.safetensors")]);

const MIME = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".jpg": "image/jpeg" };
// URL prefix → folder. The app at the root, so its worker and client resolve as in production.
const mounts = [
  ["/bench/", here],
  ["/ort/", join(here, "node_modules", "onnxruntime-web", "dist")],
  ["/weights/", options.weights],
  ["/fixtures/", join(root, "tests", "fixtures")],
  ["/model/", scratch],
  ["/", join(root, "www")],
];
const server = createServer((request, response) => {
  const path = decodeURIComponent(new URL(request.url, "http://127.0.0.1").pathname);
  const [prefix, folder] = mounts.find(([p]) => path.startsWith(p));
  const file = normalize(join(folder, path.slice(prefix.length) || "index.html"));
  if (!file.startsWith(folder) || !existsSync(file) || statSync(file).isDirectory()) {
    response.writeHead(404).end();
    return;
  }
  // Cross-origin isolation: onnxruntime-web needs SharedArrayBuffer for more than one thread.
  response.writeHead(200, {
    "Content-Type": MIME[extname(file)] || "application/octet-stream",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cache-Control": "no-cache",
  });
  createReadStream(file).pipe(response);
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: [...FLAGS, "--enable-unsafe-webgpu"] });
const version = browser.version();
const cores = (await import("node:os")).availableParallelism();

/** A fresh page (and context: empty cache) at the bench page, running `fn(arg)`. */
async function inFreshPage(fn, arg, context = null) {
  const ctx = context || (await browser.newContext());
  const page = await ctx.newPage();
  page.on("console", (m) => (m.type() === "error" || m.text().includes("TIMING")) && console.error(`  page: ${m.text()}`));
  await page.goto(`${origin}/bench/bench.html`);
  await page.waitForFunction(() => window.loupeBench);
  try {
    return await page.evaluate(fn, arg);
  } finally {
    await page.close();
    if (!context) await ctx.close();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
const scores = Number(options.scores);
const runs = Number(options.runs);
const crop = Number(options.crop);

console.error("Loupe, CPU fallback");
const rerank = options.rerank === undefined ? undefined : Number(options.rerank);
const cpu = await inFreshPage((a) => window.loupeBench(a), { forceCpu: true, scores, cropCandidates: crop, rerank });
rows.push(["Loupe CPU (wasm, 1 thread)", "score: decode + VGG16 + both heads", median(cpu.scoreMs), cpu.firstScoreMs, cpu.loadMs, cpu.crop?.ms]);
console.error("Loupe, CPU fallback in the app's worker (the threaded build where it was built)");
const pooled = await inFreshPage((a) => window.workerBench(a), { scores, cropCandidates: crop, rerank });
const threadsSaid = pooled.threads > 1 ? `${pooled.threads} threads` : "1 thread: www/pkg-threads not built";
rows.push([`Loupe CPU (wasm, ${threadsSaid}; app worker)`, "score: decode + VGG16 + both heads", median(pooled.scoreMs), pooled.firstScoreMs, pooled.loadMs, pooled.crop?.ms]);
for (const threads of [1, 2]) {
  console.error(`onnxruntime-web wasm, ${threads} thread(s)`);
  const ort = await inFreshPage((a) => window.ortBench(a), { ep: "wasm", threads, runs });
  if (!ort.isolated) throw new Error("the bench page is not cross-origin isolated");
  rows.push([`onnxruntime-web wasm, ${threads} thread${threads > 1 ? "s" : ""}`, "forward: 13-conv graph", median(ort.forwardMs), ort.firstMs, null, null]);
}
if (options.webgpu) {
  console.error("Loupe, WebGPU (slow on a software adapter)");
  // No crop on a software GPU: 1000 candidates would take tens of minutes there.
  const gpu = await inFreshPage((a) => window.loupeBench(a), { forceCpu: false, scores: Math.min(scores, 1), cropCandidates: 0 });
  rows.push([`Loupe ${gpu.backend} (${gpu.precision})`, "score: decode + VGG16 + both heads", median(gpu.scoreMs), gpu.firstScoreMs, gpu.loadMs, gpu.crop?.ms]);
  console.error("onnxruntime-web WebGPU EP");
  const ort = await inFreshPage((a) => window.ortBench(a), { ep: "webgpu", threads: 1, runs: Math.min(runs, 1) });
  rows.push(["onnxruntime-web WebGPU EP", "forward: 13-conv graph", median(ort.forwardMs), ort.firstMs, null, null]);
}
console.error("time to first score through the app (CPU): cold, then warm");
const context = await browser.newContext();
const cold = await inFreshPage(() => window.firstScore(), null, context);
const warm = await inFreshPage(() => window.firstScore(), null, context);
await context.close();
await browser.close();
server.close();

const ms = (v) => (v == null ? "—" : `${(v / 1000).toFixed(2)} s`);
console.log(`\nchromium ${version}, ${cores} cores, weights ${options.weights}; photo tests/fixtures/rocket.jpg`);
console.log("| path | what is timed | steady state | first run | weight load | 1:1 crop, " + crop + " candidates" + (rerank === undefined ? "" : `, ${rerank} re-scores`) + " |");
console.log("|---|---|---|---|---|---|");
for (const [path, what, steady, first, load, cropMs] of rows) console.log(`| ${path} | ${what} | ${ms(steady)} | ${ms(first)} | ${ms(load)} | ${ms(cropMs)} |`);
console.log(`\ntime to first score (app worker, CPU, ${warm.threads} thread(s), from navigation): cold cache ${ms(cold.ms)}, warm cache ${ms(warm.ms)} (score ${warm.score.toFixed(3)})`);
// Where the warm start went, from the worker's own clock (times from its start, one step after another).
const t = warm.timings;
if (t) console.log(`warm start: worker ready ${ms(t.readyMs)} after its start (wasm compiled and instantiated at ${ms(t.wasmMs)}, weights read and verified at ${ms(t.weightsMs)}, loading them ${ms(t.loadMs)}); page start to ready ${ms(warm.ready)}; first score ${ms(warm.ms - warm.ready)}`);
console.log(`Loupe CPU score ${cpu.score.toFixed(3)}; crop best ${cpu.crop ? JSON.stringify(cpu.crop.best) : "—"}`);
console.log(`Loupe CPU in the worker (${pooled.threads} threads): score ${pooled.score.toFixed(3)}; crop best ${pooled.crop ? JSON.stringify(pooled.crop.best) : "—"}`);
