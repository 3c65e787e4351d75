// The browser bench's page side: each function runs one measurement and returns plain numbers.
// run.mjs loads this page in headless chromium and calls them through page.evaluate.
import init, { Loupe } from "/pkg/loupe.js";
import { fetchWeights } from "/weights.js";
import { LoupeClient } from "/client.js";

const PHOTO = "/fixtures/rocket.jpg";

async function photoBytes() {
  return new Uint8Array(await (await fetch(PHOTO)).arrayBuffer());
}

async function timed(run) {
  const started = performance.now();
  const result = await run();
  return { ms: performance.now() - started, result };
}

/**
 * A first score, `scores` more, and optionally one 1:1 crop of the photo, through `score()` and
 * `crop(options)` (the wasm API or the app's client).
 */
async function scoresAndCrop({ score, crop }, { scores, cropCandidates, rerank }) {
  const first = await timed(score); // includes shader compiles / first-touch
  const times = [];
  for (let i = 0; i < scores; i++) times.push((await timed(score)).ms);
  let cropped = null;
  if (cropCandidates > 0) {
    const run = await timed(() => crop({ aspect: "1:1", candidates: cropCandidates, seed: 1, rerank }));
    cropped = { ms: run.ms, best: run.result.topCrop };
  }
  return { firstScoreMs: first.ms, scoreMs: times, score: first.result.score, crop: cropped };
}

/** Loupe's wasm API on one backend: weight loading, `scores` scores, and optionally one crop. */
window.loupeBench = async ({ forceCpu, ...runs }) => {
  await init({ module_or_path: "/pkg/loupe_bg.wasm" });
  const loupe = await Loupe.create(forceCpu);
  const load = await timed(async () => {
    for (const { bytes } of await fetchWeights(new URL("/weights/", location.href).href, () => {})) loupe.loadWeights(bytes);
  });
  const bytes = await photoBytes();
  const measured = await scoresAndCrop({ score: () => loupe.score(bytes), crop: (options) => loupe.crop(bytes, options) }, runs);
  return { backend: loupe.backend, precision: loupe.precision, loadMs: load.ms, ...measured };
};

/**
 * The app's worker on the CPU, as the page runs it: in this cross-origin isolated page that is the
 * threaded build (www/pkg-threads/, on every core) when it was built. Threads block while they
 * wait for each other, which only a worker may do, so this is timed through the app's client.
 */
window.workerBench = async (runs) => {
  const client = new LoupeClient({ forceCpu: true, timeoutMs: 3_600_000 });
  const { backend, threads, timings } = await client.ready;
  const bytes = (await photoBytes()).buffer;
  const measured = await scoresAndCrop({ score: () => client.score(bytes), crop: (options) => client.crop(bytes, options) }, runs);
  return { backend, threads, loadMs: timings.loadMs, ...measured };
};

/** onnxruntime-web on the same 13-conv VGG16 graph: one 224x224 forward, `runs` times. */
window.ortBench = async ({ ep, threads, runs }) => {
  const ort = await import(ep === "webgpu" ? "/ort/ort.webgpu.min.mjs" : "/ort/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = threads;
  const session = await ort.InferenceSession.create("/model/vgg16.onnx", { executionProviders: [ep] });
  const input = new ort.Tensor("float32", Float32Array.from({ length: 3 * 224 * 224 }, (_, i) => ((i * 7919) % 255) - 120), [1, 3, 224, 224]);
  const first = await timed(() => session.run({ input }));
  const times = [];
  for (let i = 0; i < runs; i++) times.push((await timed(() => session.run({ input }))).ms);
  return { firstMs: first.ms, forwardMs: times, isolated: crossOriginIsolated };
};

/** The app's own path (worker + Cache API) from page start to the first score on the CPU. */
window.firstScore = async () => {
  const client = new LoupeClient({ forceCpu: true });
  const { backend, threads, timings } = await client.ready;
  const ready = performance.now();
  const result = await client.score((await photoBytes()).buffer);
  return { ms: performance.now(), ready, timings, backend, threads, score: result.score };
};
