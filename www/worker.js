// Loupe's inference worker: the page never freezes while VGG16 runs.
// Messages in:  {type:"init", forceCpu, base} | {id, type:"score", bytes} | {id, type:"crop", bytes, options}
// Messages out: {type:"progress", loaded, total} | {type:"ready", backend, precision, models, timings} | {type:"fatal", message}
//               {id, type:"result", result} | {id, type:"error", message, fatal} | {id, type:"cropProgress", done, total}
//               (`fatal`: the WebAssembly instance trapped and cannot be used again; the client restarts the worker)
import init, { Loupe } from "./pkg/loupe.js";
import { fetchWeights } from "./weights.js";

let loupe = null;
let queue = Promise.resolve();
const messageOf = (error) => String(error?.message || error);

async function setUp({ forceCpu, base }) {
  const started = performance.now();
  const since = (start) => Math.round(performance.now() - start);
  // One after the other: reading the weights while the wasm compiled saved nothing measurable on
  // a warm start, and a test run stalled once while both ran on WebGPU.
  await init({ module_or_path: new URL("./pkg/loupe_bg.wasm", import.meta.url) });
  loupe = await Loupe.create(Boolean(forceCpu));
  const wasmMs = since(started);
  const files = await fetchWeights(base, (loaded, total) => postMessage({ type: "progress", loaded, total }));
  const weightsMs = since(started);
  const loading = performance.now();
  // The manifest lists a shared backbone (if any) before the heads that need it.
  const loaded = files.map(({ entry, bytes }) => ({ kind: entry.kind, file: entry.file, metadata: loupe.loadWeights(bytes) }));
  const models = loaded.filter((m) => m.kind !== "backbone");
  // Where start-up time went, in ms from the worker's start.
  const timings = { wasmMs, weightsMs, loadMs: since(loading), readyMs: since(started) };
  postMessage({ type: "ready", backend: loupe.backend, precision: loupe.precision, models, timings });
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
