// Loupe's embeddable crop widget. One script tag on a host page:
//   <script type="module" src="/loupe/widget/loupe-crop.js"></script>
//   <loupe-crop src="photo.jpg" aspect="16:9" candidates="64"></loupe-crop>
// or from code, with smartcrop.js's call and answer (switch by changing the import):
//   const { topCrop, crops, focal } = await loupeCrop(imageOrUrlOrBlob, { width: 100, height: 100 });
//   import smartcrop from ".../loupe-crop.js";  smartcrop.crop(image, { width: 100, height: 100 }).then(({ topCrop }) => ...)
// Everything runs in the visitor's browser (a Web Worker, WebGPU or CPU); images never leave it.
import { LoupeClient } from "../client.js";

export { cloudinaryCrop, imgixFocalPoint, imgixRect, thumborCrop, thumborFocal } from "./crop-urls.js";

// What the element and loupeCrop() ask for unless told otherwise: few candidates, for a quick
// answer in a host page; a fixed seed, so a page crops the same way on every visit.
const DEFAULTS = { aspect: "1:1", candidates: 64, seed: 1, topK: 5 };

// The weights folder (manifest.json and the files it lists): beside the widget folder, as the app
// lays it out, unless the page says otherwise (configure(), `weightsUrl`, or the `weights` attribute).
let defaultWeights = new URL("../weights/", import.meta.url).href;
let timeoutMs; // the client's own default unless configured

/**
 * Where the weights live, for every later call and element that does not say: `configure({ weightsUrl: "/static/loupe/" })`;
 * `timeoutMs`: how long the worker may stay silent with work before the crop fails and the worker is replaced.
 */
export function configure({ weightsUrl, timeoutMs: silence } = {}) {
  if (weightsUrl) defaultWeights = new URL(weightsUrl, document.baseURI).href;
  if (silence !== undefined) {
    timeoutMs = silence;
    for (const existing of clients.values()) existing.timeoutMs = silence;
  }
}

// One worker (and one download of the weights) per weights folder, shared by every element and call.
const clients = new Map();
function client(weightsUrl) {
  const base = weightsUrl ? new URL(weightsUrl, document.baseURI).href : defaultWeights;
  if (!clients.has(base)) clients.set(base, new LoupeClient({ weights: base, timeoutMs }));
  return clients.get(base);
}

async function toBytes(image) {
  if (image instanceof ArrayBuffer) return image;
  if (image instanceof Blob) return image.arrayBuffer();
  const url = typeof image === "string" ? image : image?.currentSrc || image?.src;
  if (!url) throw new Error("loupeCrop: pass an image URL, <img>, Blob or ArrayBuffer");
  const response = await fetch(url);
  if (!response.ok) throw new Error(`loupeCrop: ${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

// "W:H" for a ratio given as a number (smartcrop's `aspect`, or width / height).
const ratio = (r) => `${Math.round(r * 10000)}:10000`;

/** The frame Loupe's crop search takes ("16:9" or an exact "640x480") from smartcrop-style options. */
function frameOf({ aspect, width, height }) {
  if (width !== undefined || height !== undefined) {
    // As in smartcrop.js: the proportions of the thumbnail wanted, not a size in source pixels.
    if (!(width > 0 && height > 0)) throw new Error("loupeCrop: width and height must both be positive numbers");
    return Number.isInteger(width) && Number.isInteger(height) ? `${width}:${height}` : ratio(width / height);
  }
  if (typeof aspect === "number") {
    if (!(aspect > 0 && Number.isFinite(aspect))) throw new Error(`loupeCrop: aspect must be a positive number, got ${aspect}`);
    return ratio(aspect);
  }
  return aspect ?? DEFAULTS.aspect;
}

/**
 * The best crops of an image, shaped like smartcrop.js's answer, in the image's pixels (upright):
 * `{ topCrop: {x, y, width, height, score, percentile}, crops: [...best first], focal: {x, y} }`.
 * `score` is the crop's aesthetic score (1..10), `percentile` its share of AVA's rated photos scored
 * lower, `focal` the top crop's centre; with the histogram model, `difficulty: {std, label}` says how
 * hard the top crop is to judge (the spread of the ratings it predicts).
 * @param {string|HTMLImageElement|Blob|ArrayBuffer} image
 * @param {{width?:number, height?:number, aspect?:number|string, minScale?:number, candidates?:number, seed?:number,
 *          topK?:number, weightsUrl?:string, onProgress?:(done:number, total:number) => void}} [options]
 *   `width`/`height` (or a numeric `aspect`): the frame's proportions, as in smartcrop.js;
 *   `aspect: "16:9"`, or `"640x480"` for exactly that many source pixels; `minScale`: the smallest
 *   crop as a share of the largest that fits (default 0.5; smartcrop's default is 1).
 */
export async function loupeCrop(image, options = {}) {
  const { onProgress, weightsUrl, width, height, aspect, ...rest } = options;
  const frame = frameOf({ aspect, width, height });
  const bytes = await toBytes(image);
  // The callback stays on this side: only plain data can be posted to the worker.
  return client(weightsUrl).crop(bytes, { ...DEFAULTS, ...rest, aspect: frame }, onProgress);
}

/** smartcrop.js's entry point, for a drop-in switch: `smartcrop.crop(image, options[, callback])`. */
const smartcrop = {
  async crop(image, options, callback) {
    const result = await loupeCrop(image, options);
    callback?.(result);
    return result;
  },
};
export default smartcrop;

// A constructed stylesheet, not a <style> element: pages whose CSP forbids inline styles
// (Loupe's own: style-src 'self') still style the widget.
const STYLE = new CSSStyleSheet();
STYLE.replaceSync(":host{display:inline-block;position:relative} canvas{max-width:100%;display:block} p{margin:.25rem 0;font:12px system-ui;color:#5d6875}");

class LoupeCropElement extends HTMLElement {
  static observedAttributes = ["src", "aspect", "candidates", "weights"];

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.adoptedStyleSheets = [STYLE];
    root.innerHTML = `<canvas part="canvas" role="img"></canvas><p part="status"></p>`;
    this.canvas = root.querySelector("canvas");
    this.status = root.querySelector("p");
    this.run = 0;
  }

  attributeChangedCallback() {
    if (this.isConnected) this.render();
  }

  connectedCallback() {
    this.render();
  }

  async render() {
    const src = this.getAttribute("src");
    if (!src) return;
    const run = ++this.run;
    const aspect = this.getAttribute("aspect") || DEFAULTS.aspect;
    const candidates = Number(this.getAttribute("candidates")) || DEFAULTS.candidates;
    const weightsUrl = this.getAttribute("weights") ?? undefined;
    this.status.textContent = "Finding the best crop…";
    this.dataset.state = "working";
    try {
      const bytes = await toBytes(new URL(src, document.baseURI).href);
      const bitmap = await createImageBitmap(new Blob([bytes]), { imageOrientation: "from-image" });
      const result = await loupeCrop(bytes, { aspect, candidates, topK: 1, weightsUrl });
      if (run !== this.run) return;
      const { x, y, width, height, score, percentile } = result.topCrop;
      this.canvas.width = width;
      this.canvas.height = height;
      this.canvas.getContext("2d").drawImage(bitmap, x, y, width, height, 0, 0, width, height);
      this.canvas.setAttribute("aria-label", `Best ${aspect} crop of ${src}`);
      this.status.textContent = `Best ${aspect} crop, score ${score.toFixed(2)} (better than ${Math.round(percentile)}% of AVA)`;
      Object.assign(this.dataset, { state: "done", x, y, width, height, score, percentile, focalX: result.focal.x, focalY: result.focal.y });
      if (result.difficulty) this.dataset.std = result.difficulty.std;
      this.dispatchEvent(new CustomEvent("loupe-crop", { detail: result }));
    } catch (error) {
      if (run !== this.run) return; // a newer run owns the element now
      this.status.textContent = `Could not crop: ${error.message}`;
      Object.assign(this.dataset, { state: "error", error: error.message });
    }
  }
}

// A page may load the module twice (two URLs for one file); the element is defined once.
if (!customElements.get("loupe-crop")) customElements.define("loupe-crop", LoupeCropElement);
