// A promise API over the inference worker, shared by the app and the embeddable widget.
export class LoupeClient {
  /**
   * @param {object} options
   * @param {string} [options.weights] folder holding manifest.json (default: ./weights/ beside this file)
   * @param {boolean} [options.forceCpu] skip WebGPU
   * @param {(loaded:number, total:number)=>void} [options.onDownload]
   */
  constructor({ weights, forceCpu = false, onDownload } = {}) {
    const base = new URL(weights || "./weights/", new URL(".", import.meta.url)).href;
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.pending = new Map();
    this.nextId = 1;
    this.ready = new Promise((resolve, reject) => {
      this.worker.addEventListener("message", ({ data }) => {
        if (data.type === "progress") onDownload?.(data.loaded, data.total);
        else if (data.type === "ready") resolve(data);
        else if (data.type === "fatal") reject(new Error(data.message));
        else this.#settle(data);
      });
      this.worker.addEventListener("error", (event) => reject(new Error(event.message || "worker failed to start")));
    });
    this.worker.postMessage({ type: "init", forceCpu, base });
  }

  #settle(data) {
    const request = this.pending.get(data.id);
    if (!request) return;
    if (data.type === "cropProgress") return request.onProgress?.(data.done, data.total);
    this.pending.delete(data.id);
    if (data.type === "result") request.resolve(data.result);
    else request.reject(new Error(data.message));
  }

  #request(message, onProgress) {
    return this.ready.then(
      () =>
        new Promise((resolve, reject) => {
          const id = this.nextId++;
          this.pending.set(id, { resolve, reject, onProgress });
          try {
            this.worker.postMessage({ ...message, id });
          } catch (error) {
            // A message the worker cannot receive (a function in the options: DataCloneError)
            // fails this request only, and leaves nothing pending.
            this.pending.delete(id);
            reject(error);
          }
        }),
    );
  }

  /** @param {ArrayBuffer} bytes an encoded image */
  score(bytes) {
    return this.#request({ type: "score", bytes });
  }

  /**
   * `{topCrop, crops, focal}`, as loupeCrop() (but `width`/`height` here are an exact size in pixels).
   * @param {ArrayBuffer} bytes
   * @param {{aspect?:string,width?:number,height?:number,minScale?:number,candidates?:number,seed?:number,topK?:number}} options
   */
  crop(bytes, options, onProgress) {
    return this.#request({ type: "crop", bytes, options }, onProgress);
  }
}
