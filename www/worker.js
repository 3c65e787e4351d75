// Loupe's inference worker: the page never freezes while VGG16 runs.
// Messages in:  {type:"init", forceCpu, base} | {id, type:"score", bytes} | {id, type:"crop", bytes, options}
// Messages out: {type:"loading", step} (what set-up is doing, for a stall's message) | {type:"progress", loaded, total} | {type:"ready", backend, precision, threads, models, timings} | {type:"fatal", message}
//               {id, type:"result", result} | {id, type:"error", message, fatal} | {id, type:"cropProgress", done, total}
//               (`fatal`: the WebAssembly instance trapped and cannot be used again; the client restarts the worker)
import { fetchWeights } from "./weights.js";

let Loupe = null;
let loupe = null;
let queue = Promise.resolve();
const messageOf = (error) => String(error?.message || error);

// Which build to load: the threaded CPU build (pkg-threads/) where it can help — the page is
// cross-origin isolated (threads need SharedArrayBuffer), there is more than one core, and WebGPU
// is refused or missing — else the main one (pkg/: WebGPU, CPU fallback). Where the threaded
// build was not made, loading it fails and setUp falls back to the main one.
const MAIN_BUILD = { dir: "./pkg/", threads: 0 };
async function chooseBuild(forceCpu) {
  const cores = navigator.hardwareConcurrency || 1;
  if (!self.crossOriginIsolated || cores < 2) return MAIN_BUILD;
  if (!forceCpu && (await navigator.gpu?.requestAdapter().catch(() => null))) return MAIN_BUILD;
  return { dir: "./pkg-threads/", threads: cores };
}

// A build's glue, its wasm instantiated, and for the threaded build its pool started.
async function load({ dir, threads }) {
  const pkg = await import(`${dir}loupe.js`);
  await pkg.default({ module_or_path: new URL(`${dir}loupe_bg.wasm`, import.meta.url) });
  if (threads) await poolStarted(pkg, threads);
  return pkg;
}

// The pool's workers start from blob: URLs. A Content-Security-Policy that refuses them (no
// `blob:` in worker-src) would leave initThreadPool waiting forever: that refusal, or a pool not
// up within POOL_START_MS, fails the threaded build instead.
const POOL_START_MS = 10_000;
function poolStarted(pkg, threads) {
  return new Promise((resolve, reject) => {
    const refused = (event) => {
      if (event.effectiveDirective === "worker-src") reject(new Error("the Content-Security-Policy's worker-src refuses the pool's blob: workers"));
    };
    self.addEventListener("securitypolicyviolation", refused);
    const timer = setTimeout(() => reject(new Error(`the thread pool did not start within ${POOL_START_MS / 1000} s`)), POOL_START_MS);
    pkg
      .initThreadPool(threads)
      .then(resolve, reject)
      .finally(() => {
        clearTimeout(timer);
        self.removeEventListener("securitypolicyviolation", refused);
      });
  });
}

async function setUp({ forceCpu, base }) {
  const started = performance.now();
  const since = (start) => Math.round(performance.now() - start);
  const step = (what) => postMessage({ type: "loading", step: what });
  const build = await chooseBuild(Boolean(forceCpu));
  step("compiling the WebAssembly");
  // One after the other: reading the weights while the wasm compiled saved nothing measurable on
  // a warm start, and a test run stalled once while both ran on WebGPU.
  const pkg = await load(build).catch((error) => {
    if (!build.threads) throw error;
    // A build that was not made, a CSP that refuses the pool's workers, or a device that cannot
    // reserve the shared memory (4 GiB of address space, up front): one thread is slower, not broken.
    console.warn(`Loupe's threaded build did not start (${messageOf(error)}); using one thread`);
    return load(MAIN_BUILD);
  });
  Loupe = pkg.Loupe;
  step(forceCpu ? "starting the CPU backend" : "asking the browser for WebGPU");
  loupe = await Loupe.create(Boolean(forceCpu));
  const wasmMs = since(started);
  step("downloading the weights");
  const files = await fetchWeights(base, (loaded, total) => postMessage({ type: "progress", loaded, total }));
  const weightsMs = since(started);
  step("loading the weights");
  const loading = performance.now();
  // The manifest lists a shared backbone (if any) before the heads that need it.
  const loaded = files.map(({ entry, bytes }) => ({ kind: entry.kind, file: entry.file, metadata: loupe.loadWeights(bytes) }));
  const models = loaded.filter((m) => m.kind !== "backbone");
  // Where start-up time went, in ms from the worker's start.
  const timings = { wasmMs, weightsMs, loadMs: since(loading), readyMs: since(started) };
  postMessage({ type: "ready", backend: loupe.backend, precision: loupe.precision, threads: loupe.threads, models, timings });
}

// The photo's bytes are copied into WebAssembly memory: a file over the library's limit is refused
// before that copy, which could exhaust the memory of the worker.
function photo(bytes) {
  const limit = Loupe.maxFileBytes();
  if (bytes.byteLength > limit) {
    throw new Error(`the file is ${(bytes.byteLength / 2 ** 20).toFixed(0)} MB; Loupe reads photos of up to ${limit / 2 ** 20} MB`);
  }
  return new Uint8Array(bytes);
}

async function handle(message) {
  const { id, type } = message;
  try {
    if (type === "score") {
      postMessage({ id, type: "result", result: await loupe.score(photo(message.bytes)) });
    } else if (type === "crop") {
      const onProgress = (done, total) => postMessage({ id, type: "cropProgress", done, total });
      postMessage({ id, type: "result", result: await loupe.crop(photo(message.bytes), message.options, onProgress) });
    } else {
      throw new Error(`unknown request ${type}`);
    }
  } catch (error) {
    postMessage({ id, type: "error", message: messageOf(error), fatal: error instanceof WebAssembly.RuntimeError });
  }
}

onmessage = ({ data }) => {
  if (data.type === "init") {
    setUp(data).catch((error) => postMessage({ type: "fatal", message: messageOf(error) }));
    return;
  }
  // One request at a time: the model is not re-entrant.
  queue = queue.then(() => handle(data));
};
