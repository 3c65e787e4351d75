// Loupe's inference worker: the page never freezes while VGG16 runs.
// Messages in:  {type:"init", forceCpu, base} | {id, type:"score", bytes} | {id, type:"crop", bytes, options}
// Messages out: {type:"progress", loaded, total} | {type:"ready", backend, models} | {type:"fatal", message}
//               {id, type:"result", result} | {id, type:"error", message} | {id, type:"cropProgress", done, total}
import init, { Loupe } from "./pkg/loupe.js";
import { fetchWeights } from "./weights.js";

let loupe = null;
let queue = Promise.resolve();
const messageOf = (error) => String(error?.message || error);

async function setUp({ forceCpu, base }) {
  await init({ module_or_path: new URL("./pkg/loupe_bg.wasm", import.meta.url) });
  loupe = await Loupe.create(Boolean(forceCpu));
  const files = await fetchWeights(base, (loaded, total) => postMessage({ type: "progress", loaded, total }));
  // The manifest lists a shared backbone (if any) before the heads that need it.
  const loaded = files.map(({ entry, bytes }) => ({ kind: entry.kind, file: entry.file, metadata: loupe.loadWeights(bytes) }));
  const models = loaded.filter((m) => m.kind !== "backbone");
  postMessage({ type: "ready", backend: loupe.backend, models });
}

async function handle(message) {
  const { id, type } = message;
  try {
    if (type === "score") {
      postMessage({ id, type: "result", result: await loupe.score(new Uint8Array(message.bytes)) });
    } else if (type === "crop") {
      const onProgress = (done, total) => postMessage({ id, type: "cropProgress", done, total });
      postMessage({ id, type: "result", result: await loupe.crop(new Uint8Array(message.bytes), message.options, onProgress) });
    } else {
      throw new Error(`unknown request ${type}`);
    }
  } catch (error) {
    postMessage({ id, type: "error", message: messageOf(error) });
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
