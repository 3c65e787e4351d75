// A promise API over the inference worker, shared by the app and the embeddable widget.
export class LoupeClient {
  /**
   * @param {object} options
   * @param {string} [options.weights] folder holding manifest.json (default: ./weights/ beside this file)
   * @param {boolean} [options.forceCpu] skip WebGPU
   * @param {(loaded:number, total:number)=>void} [options.onDownload]
   */
  constructor({ weights, forceCpu = false, onDownload } = {}) {
    this.settings = { base: new URL(weights || "./weights/", new URL(".", import.meta.url)).href, forceCpu, onDownload };
    this.pending = new Map();
    this.nextId = 1;
    /** How often a crashed worker was replaced. */
    this.restarts = 0;
    this.#start();
  }

  #start() {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.worker = worker;
    let started = false;
    this.ready = new Promise((resolve, reject) => {
      worker.addEventListener("message", ({ data }) => {
        if (worker !== this.worker) return; // a replaced worker's last words
        if (data.type === "progress") this.settings.onDownload?.(data.loaded, data.total);
        else if (data.type === "ready") resolve(((started = true), data));
        else if (data.type === "fatal") reject(new Error(data.message));
        else this.#settle(data);
      });
      worker.addEventListener("error", (event) => {
        if (worker !== this.worker) return;
        const reason = event.message || "the worker failed";
        if (!started) reject(new Error(reason));
        else this.#restart(reason);
      });
    });
    worker.postMessage({ type: "init", forceCpu: this.settings.forceCpu, base: this.settings.base });
  }

  // A worker that crashed (a WebAssembly trap, memory exhausted) cannot be trusted with the next
  // photo: it is replaced by a fresh one (weights from the cache), and what it was doing fails.
  #restart(reason) {
    this.worker.terminate();
    const failed = [...this.pending.values()];
    this.pending.clear();
    this.restarts += 1;
    this.#start();
    for (const request of failed) request.reject(new Error(`Loupe's worker stopped (${reason}); it was restarted, try again`));
  }

  #settle(data) {
    const request = this.pending.get(data.id);
    if (!request) return;
    if (data.type === "cropProgress") return request.onProgress?.(data.done, data.total);
    this.pending.delete(data.id);
    if (data.type === "result") request.resolve(data.result);
    else request.reject(new Error(data.message));
    if (data.fatal) this.#restart(data.message);
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

  /**
   * `{score, percentile, regression?, histogramModel?, ms}` for one photo.
   * @param {ArrayBuffer} bytes an encoded image
   */
  score(bytes) {
    return this.#request({ type: "score", bytes });
  }

  /**
   * `{topCrop, crops, focal, difficulty?}`, as loupeCrop() (but `width`/`height` here are an exact size in pixels).
   * @param {ArrayBuffer} bytes
   * @param {{aspect?:string,width?:number,height?:number,minScale?:number,candidates?:number,seed?:number,topK?:number}} options
   */
  crop(bytes, options, onProgress) {
    return this.#request({ type: "crop", bytes, options }, onProgress);
  }
}
