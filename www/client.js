// A promise API over the inference worker, shared by the app and the embeddable widget.

// Five minutes without a word: far beyond a crop's progress interval or a forward pass on a
// software GPU (about a minute), so only a stuck worker meets it.
const DEFAULT_TIMEOUT_MS = 300_000;

export class LoupeClient {
  /**
   * @param {object} options
   * @param {string} [options.weights] folder holding manifest.json (default: ./weights/ beside this file)
   * @param {boolean} [options.forceCpu] skip WebGPU
   * @param {(loaded:number, total:number)=>void} [options.onDownload]
   * @param {number} [options.timeoutMs] how long the worker may stay silent while it has work
   */
  constructor({ weights, forceCpu = false, onDownload, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    this.settings = { base: new URL(weights || "./weights/", new URL(".", import.meta.url)).href, forceCpu, onDownload };
    this.pending = new Map();
    this.nextId = 1;
    /** How often a crashed or stalled worker was replaced (a stalled load's second try included). */
    this.restarts = 0;
    this.#timeoutMs = timeoutMs;
    this.#start();
  }

  #timeoutMs;
  /** Silence allowed, in ms, while the worker loads or has a request. Setting it restarts the clock. */
  get timeoutMs() {
    return this.#timeoutMs;
  }
  set timeoutMs(ms) {
    this.#timeoutMs = ms;
    this.#watch();
  }

  #start() {
    this.loaded = false;
    this.ready = new Promise((resolve, reject) => {
      this.#loading = { resolve, reject, step: "starting the worker", retried: false };
    });
    this.ready.catch(() => clearTimeout(this.watchdog));
    this.#spawn();
  }

  /** The load in progress: its promise's settlers, the step the worker last reported, whether it was retried. */
  #loading;

  // A worker for the load in progress; a stalled load spawns a second one that settles the same promise.
  #spawn() {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    this.worker = worker;
    const loading = this.#loading;
    worker.addEventListener("message", ({ data }) => {
      if (worker !== this.worker) return; // a replaced worker's last words
      if (data.type === "progress") this.settings.onDownload?.(data.loaded, data.total);
      else if (data.type === "loading") loading.step = data.step;
      else if (data.type === "ready") loading.resolve(((this.loaded = true), data));
      else if (data.type === "fatal") loading.reject(new Error(data.message));
      else this.#settle(data);
      this.#watch();
    });
    worker.addEventListener("error", (event) => {
      if (worker !== this.worker) return;
      const reason = event.message || "the worker failed";
      if (!this.loaded) loading.reject(new Error(reason));
      else this.#restart(reason);
    });
    worker.postMessage({ type: "init", forceCpu: this.settings.forceCpu, base: this.settings.base });
    this.#watch();
  }

  // A worker that says nothing for timeoutMs while it loads or has work is stuck (a download that
  // never ends, a GPU that never answers): what it was doing fails instead of waiting forever.
  // Every message (download and crop progress included) restarts the clock. A load that stalls is
  // tried once more in a fresh worker (weights from the cache) before it fails: a stall there
  // (seen on a software GPU) has not come back on a second try.
  #watch() {
    clearTimeout(this.watchdog);
    if (this.loaded && this.pending.size === 0) return;
    this.watchdog = setTimeout(() => {
      const silence = `no answer for ${this.timeoutMs / 1000} s`;
      if (this.loaded) return this.#restart(silence);
      this.worker.terminate();
      const loading = this.#loading;
      const stalled = `${silence} while ${loading.step}`;
      if (!loading.retried) {
        loading.retried = true;
        this.restarts += 1;
        console.warn(`Loupe: loading stalled (${stalled}); trying once more`);
        return this.#spawn();
      }
      loading.reject(new Error(`Loupe could not load its models (${stalled}); reload the page to try again`));
    }, this.timeoutMs);
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
          this.#watch();
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
