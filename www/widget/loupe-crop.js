// Loupe's embeddable crop widget. One script tag on a host page:
//   <script type="module" src="/loupe/widget/loupe-crop.js"></script>
//   <loupe-crop src="photo.jpg" aspect="16:9" candidates="64"></loupe-crop>
// or from code:  const [best] = await loupeCrop(imageOrUrlOrBlob, { aspect: "1:1" });
// Everything runs in the visitor's browser (a Web Worker, WebGPU or CPU); images never leave it.
import { LoupeClient } from "../client.js";

// What the element and loupeCrop() ask for unless told otherwise: few candidates, for a quick
// answer in a host page; a fixed seed, so a page crops the same way on every visit.
const DEFAULTS = { aspect: "1:1", candidates: 64, seed: 1, topK: 5 };

let sharedClient = null;
function client() {
  sharedClient ??= new LoupeClient({ weights: new URL("../weights/", import.meta.url).href });
  return sharedClient;
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

/**
 * The best crops of an image, best first: [{x, y, width, height, score, percentile}].
 * @param {string|HTMLImageElement|Blob|ArrayBuffer} image
 * @param {{aspect?:string, width?:number, height?:number, candidates?:number, seed?:number, topK?:number,
 *          onProgress?:(done:number, total:number) => void}} [options]
 */
export async function loupeCrop(image, options = {}) {
  const bytes = await toBytes(image);
  // The callback stays on this side: only plain data can be posted to the worker.
  const { onProgress, ...cropOptions } = options;
  return client().crop(bytes, { ...DEFAULTS, ...cropOptions }, onProgress);
}

class LoupeCropElement extends HTMLElement {
  static observedAttributes = ["src", "aspect", "candidates"];

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>:host{display:inline-block;position:relative}canvas{max-width:100%;display:block}
      p{margin:.25rem 0;font:12px system-ui;color:#5d6875}</style><canvas part="canvas" role="img"></canvas><p part="status"></p>`;
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
    this.status.textContent = "Finding the best crop…";
    this.dataset.state = "working";
    try {
      const bytes = await toBytes(new URL(src, document.baseURI).href);
      const bitmap = await createImageBitmap(new Blob([bytes]), { imageOrientation: "from-image" });
      const [best] = await loupeCrop(bytes, { aspect, candidates, topK: 1 });
      if (run !== this.run) return;
      this.canvas.width = best.width;
      this.canvas.height = best.height;
      this.canvas.getContext("2d").drawImage(bitmap, best.x, best.y, best.width, best.height, 0, 0, best.width, best.height);
      this.canvas.setAttribute("aria-label", `Best ${aspect} crop of ${src}`);
      this.status.textContent = `Best ${aspect} crop, score ${best.score.toFixed(2)} (better than ${Math.round(best.percentile)}% of AVA)`;
      const { x, y, width, height, score, percentile } = best;
      Object.assign(this.dataset, { state: "done", x, y, width, height, score, percentile });
      this.dispatchEvent(new CustomEvent("loupe-crop", { detail: best }));
    } catch (error) {
      if (run !== this.run) return; // a newer run owns the element now
      this.status.textContent = `Could not crop: ${error.message}`;
      Object.assign(this.dataset, { state: "error", error: error.message });
    }
  }
}

customElements.define("loupe-crop", LoupeCropElement);
