// Loupe in a real browser: Debian's chromium, headless, driven by playwright-core.
// Run by scripts/test.sh, which builds www/pkg and the `loupe` CLI and passes:
//   LOUPE_BIN     the native CLI (serves the app, and scores the same photo for comparison)
//   LOUPE_FULL    a weights folder with full VGG16 models (the shipped weights/ when present)
//   LOUPE_TINY    a weights folder with tiny-width models (fast crops on SwiftShader)
// Both backends: WebGPU (--enable-unsafe-webgpu, SwiftShader) and the CPU fallback (no flag).
// `loupe serve` makes the pages cross-origin isolated, so the CPU fallback runs the threaded build
// (www/pkg-threads/, when scripts/build-web.sh could make it); the single-threaded CPU build is
// checked here in the page itself and runs in npm-package.test.mjs (a host without isolation).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const fixtures = join(root, "tests", "fixtures");
const artifacts = join(here, "artifacts");
mkdirSync(artifacts, { recursive: true });
const { LOUPE_BIN, LOUPE_FULL, LOUPE_TINY } = process.env;
assert.ok(LOUPE_BIN && LOUPE_FULL && LOUPE_TINY, "run through scripts/test.sh (LOUPE_BIN, LOUPE_FULL, LOUPE_TINY)");

const scratch = mkdtempSync(join(tmpdir(), "loupe-browser-"));
const textAsJpeg = join(scratch, "notes.jpg");
writeFileSync(textAsJpeg, "Shopping list: film, lens cloth, tripod.\n".repeat(30));
const truncatedJpeg = join(scratch, "truncated.jpg");
writeFileSync(truncatedJpeg, readFileSync(join(fixtures, "rocket.jpg")).subarray(0, 700));
const photo = join(fixtures, "rocket.jpg");
const batch = ["rocket.jpg", "coffee.jpg", "chelsea.jpg"].map((f) => join(fixtures, f));

// The threaded build needs the nightly toolchain; without it the CPU fallback runs single-threaded.
const threadedBuilt = existsSync(join(root, "www", "pkg-threads", "loupe_bg.wasm"));
if (!threadedBuilt) console.log("www/pkg-threads was not built (no nightly toolchain): the CPU tests run the single-threaded build");

const FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"];
const servers = [];

function serve(weights, port) {
  const server = spawn(LOUPE_BIN, ["serve", "--app", join(root, "www"), "--weights", weights, "--port", String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.stdout.on("data", (chunk) => {
      const match = /http:\/\/127\.0\.0\.1:\d+\//.exec(String(chunk));
      if (match) resolve(match[0]);
    });
    server.on("exit", (code) => reject(new Error(`loupe serve exited with ${code}`)));
  });
}

// The tiny weights with one byte of a weight file flipped (the manifest unchanged).
const flipped = join(scratch, "flipped-weights");
cpSync(LOUPE_TINY, flipped, { recursive: true });
const damaged = readFileSync(join(flipped, "regression.loupe"));
damaged[damaged.length >> 1] ^= 0x10;
writeFileSync(join(flipped, "regression.loupe"), damaged);

let fullUrl, tinyUrl, flippedUrl;
before(async () => {
  fullUrl = await serve(LOUPE_FULL, 18081);
  tinyUrl = await serve(LOUPE_TINY, 18082);
  flippedUrl = await serve(flipped, 18084);
});
after(() => servers.forEach((s) => s.kill()));

function nativeScores(weights, file) {
  // Every file the app loads (a shared backbone first, then the heads), in manifest order.
  const manifest = JSON.parse(readFileSync(join(weights, "manifest.json"), "utf8"));
  const files = manifest.models.flatMap((m) => ["-w", join(weights, m.file)]);
  const out = execFileSync(LOUPE_BIN, ["score", "--json", ...files, file]);
  return JSON.parse(String(out).trim().split("\n").pop());
}

for (const backend of ["webgpu", "cpu"]) {
  describe(`app on ${backend}`, () => {
    let browser, context, page;
    const requests = [];

    before(async () => {
      const args = backend === "webgpu" ? [...FLAGS, "--enable-unsafe-webgpu"] : FLAGS;
      browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args });
      context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
      context.on("request", (request) => requests.push(request.url()));
      page = await context.newPage();
      // Errors and warnings (a stalled load that was tried again says so in one), less the one
      // every pool worker of the threaded build gives: wasm-bindgen-rayon 1.3.0's worker helper
      // calls wasm-bindgen's init with the old positional parameters.
      page.on("console", (message) => {
        const worth = ["error", "warning"].includes(message.type()) && !message.text().startsWith("using deprecated parameters for the initialization function");
        if (worth) console.log(`[${backend} console] ${message.text()}`);
      });
    });
    after(async () => {
      await browser?.close();
      const outside = requests.filter((url) => !/^(http:\/\/127\.0\.0\.1:\d+\/|blob:|data:)/.test(url));
      assert.deepEqual(outside, [], "a request left 127.0.0.1");
    });

    async function open(url) {
      await page.goto(url);
      await page.waitForFunction(() => document.body.dataset.ready === "true" || !document.getElementById("error").hidden, null, { timeout: 300_000 });
      assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").textContent());
    }

    // One photo the app should score: waits until its score is on the page, or an error naming it.
    async function upload(file) {
      // Clear the score a previous photo left, so only this photo's can end the wait.
      await page.evaluate(() => delete document.getElementById("score").dataset.result);
      await page.setInputFiles("#files", file);
      const name = file.split("/").pop();
      await page.waitForFunction(
        (name) => "result" in document.getElementById("score").dataset || document.getElementById("error").textContent.startsWith(`${name}:`),
        name,
        { timeout: 600_000 },
      );
      assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").textContent());
    }

    test("scores a real photo like the native CLI, with a 10-bar histogram", async () => {
      const started = Date.now();
      await open(fullUrl);
      assert.equal(await page.evaluate(() => document.body.dataset.backend), backend);
      // f16 activations exactly where the adapter offers shader-f16 (the CPU fallback is f32).
      const hasF16 = backend === "webgpu" && (await page.evaluate(async () => (await navigator.gpu.requestAdapter())?.features.has("shader-f16") ?? false));
      assert.equal(await page.evaluate(() => document.body.dataset.precision), hasF16 ? "f16" : "f32");
      console.log(`${backend}: computes in ${hasF16 ? "f16" : "f32"}`);
      // Threads: the threaded build on the CPU fallback of an isolated page with several cores.
      const { isolated, cores } = await page.evaluate(() => ({ isolated: crossOriginIsolated, cores: navigator.hardwareConcurrency }));
      assert.equal(isolated, true, "loupe serve isolates the app's pages");
      const threads = Number(await page.evaluate(() => document.body.dataset.threads));
      assert.equal(threads, backend === "cpu" && threadedBuilt && cores > 1 ? cores : 1);
      console.log(`${backend}: computes on ${threads} thread(s) of ${cores} cores`);
      await upload(photo);
      const seconds = (Date.now() - started) / 1000;
      console.log(`${backend}: time to first score (page load + weights + one VGG16 forward for both heads) ${seconds.toFixed(1)} s`);
      const shown = await page.evaluate(() => JSON.parse(document.getElementById("score").dataset.result));
      assert.ok(shown.score >= 1 && shown.score <= 10, `score ${shown.score}`);
      assert.equal(await page.locator("#histogram rect.bar").count(), 10);
      const native = nativeScores(LOUPE_FULL, photo);
      assert.ok(Math.abs(shown.regression.score - native.regression.score) < 1e-3, `wasm ${shown.regression.score} vs native ${native.regression.score}`);
      assert.ok(Math.abs(shown.histogramModel.score - native.histogram.score) < 1e-3, `wasm ${shown.histogramModel.score} vs native ${native.histogram.score}`);
      assert.ok(Math.abs(shown.histogramModel.std - native.histogram.std) < 1e-3);
      // The AVA percentile: the same as the native CLI's, and said in words on the page.
      assert.ok(Math.abs(shown.regression.percentile - native.regression.percentile) < 0.05, JSON.stringify(shown));
      assert.equal(shown.percentile, shown.regression.percentile);
      assert.equal(await page.locator("#percentile").textContent(), `Better than ${Math.round(shown.percentile)}% of the 255,502 photos rated on AVA.`);
      // The difficulty in words is the library's, for that std.
      assert.ok(shown.histogramModel.difficulty, JSON.stringify(shown));
      assert.equal(await page.locator("#difficulty").textContent(), shown.histogramModel.difficulty);
      await page.screenshot({ path: join(artifacts, `${backend}-score.png`), fullPage: true });
    });

    test("the single-threaded CPU build, run in the page, scores like the native CLI too", { skip: backend !== "cpu" }, async () => {
      // What pages without cross-origin isolation (most host sites) run where WebGPU is missing.
      await open(fullUrl);
      const shown = await page.evaluate(async (bytes) => {
        const pkg = await import("/pkg/loupe.js");
        await pkg.default({ module_or_path: "/pkg/loupe_bg.wasm" });
        const { fetchWeights } = await import("/weights.js");
        const loupe = await pkg.Loupe.create(true);
        for (const file of await fetchWeights(new URL("/weights/", location.href).href, () => {})) loupe.loadWeights(file.bytes);
        return { backend: loupe.backend, threads: loupe.threads, result: await loupe.score(new Uint8Array(bytes)) };
      }, [...readFileSync(photo)]);
      assert.deepEqual([shown.backend, shown.threads], ["cpu", 1]);
      const native = nativeScores(LOUPE_FULL, photo);
      assert.ok(Math.abs(shown.result.regression.score - native.regression.score) < 1e-3, `wasm ${shown.result.regression.score} vs native ${native.regression.score}`);
      assert.ok(Math.abs(shown.result.histogramModel.score - native.histogram.score) < 1e-3, `wasm ${shown.result.histogramModel.score} vs native ${native.histogram.score}`);
      assert.ok(Math.abs(shown.result.histogramModel.std - native.histogram.std) < 1e-3);
    });

    test("where the page's CSP refuses the pool's blob: workers, the app runs on one thread instead", { skip: backend !== "cpu" || !threadedBuilt }, async () => {
      // The worker script's policy without blob: in worker-src, as a host site's stricter one.
      const context = await browser.newContext();
      let rewritten = false;
      await context.route("**/worker.js", async (route) => {
        const response = await route.fetch();
        const csp = response.headers()["content-security-policy"];
        const strict = csp.replace("worker-src 'self' blob:", "worker-src 'self'");
        rewritten = strict !== csp;
        await route.fulfill({ response, headers: { ...response.headers(), "content-security-policy": strict } });
      });
      try {
        const strictPage = await context.newPage();
        const warnings = [];
        strictPage.on("console", (message) => message.type() === "warning" && warnings.push(message.text()));
        await strictPage.goto(tinyUrl);
        await strictPage.waitForFunction(() => document.body.dataset.ready === "true" || !document.getElementById("error").hidden, null, { timeout: 300_000 });
        assert.ok(rewritten, "the served worker's CSP allows blob: workers, and the test took it out");
        assert.equal(await strictPage.locator("#error").isHidden(), true, await strictPage.locator("#error").textContent());
        assert.deepEqual(await strictPage.evaluate(() => [document.body.dataset.backend, document.body.dataset.threads]), ["cpu", "1"]);
        assert.ok(warnings.some((w) => /threaded build did not start \(.*worker-src/.test(w)), JSON.stringify(warnings));
        await strictPage.setInputFiles("#files", photo);
        await strictPage.waitForFunction(() => "result" in document.getElementById("score").dataset || !document.getElementById("error").hidden, null, { timeout: 300_000 });
        assert.equal(await strictPage.locator("#error").isHidden(), true, await strictPage.locator("#error").textContent());
      } finally {
        await context.close();
      }
    });

    test("a text file named .jpg and a truncated JPEG show errors, and the app keeps working", async () => {
      await open(tinyUrl);
      for (const bad of [textAsJpeg, truncatedJpeg]) {
        await page.setInputFiles("#files", bad);
        await page.locator("#error").waitFor({ state: "visible", timeout: 120_000 });
        const message = await page.locator("#error").textContent();
        assert.match(message, /notes\.jpg|truncated\.jpg/);
        console.log(`${backend}: ${message}`);
        await page.screenshot({ path: join(artifacts, `${backend}-error-${bad.endsWith("notes.jpg") ? "text" : "truncated"}.png`) });
        await upload(photo); // and the error is gone
      }
    });

    test("a weight file with one flipped byte: the checksum error on the page", async () => {
      await page.goto(flippedUrl);
      await page.locator("#error").waitFor({ state: "visible", timeout: 300_000 });
      assert.match(await page.locator("#error").textContent(), /regression\.loupe: checksum mismatch/);
      assert.equal(await page.evaluate(() => document.body.dataset.ready), undefined);
      await page.screenshot({ path: join(artifacts, `${backend}-failure-flipped-byte.png`) });
    });

    test("a load that stalls is tried once more in a fresh worker; one that stalls again fails, saying where", async () => {
      // The worker's manifest request is held without an answer (a stuck download, as a stuck
      // GPU would be) for the first `hold` requests.
      let hold = 0;
      const manifest = "**/weights/manifest.json";
      await context.route(manifest, (route) => (hold-- > 0 ? undefined : route.continue()));
      const warnings = [];
      const onConsole = (message) => message.type() === "warning" && warnings.push(message.text());
      page.on("console", onConsole);
      try {
        await page.goto(new URL("client.js", tinyUrl).href); // a page of the app's origin, without a client of its own
        const load = (holds) => {
          hold = holds;
          return page.evaluate(async () => {
            const { LoupeClient } = await import("./client.js");
            const client = new LoupeClient({ weights: "./weights/", timeoutMs: 5000 });
            const outcome = await client.ready.then((ready) => `ready on ${ready.backend}`, (error) => error.message);
            client.worker.terminate();
            return { outcome, restarts: client.restarts };
          });
        };
        const once = await load(1);
        assert.match(once.outcome, /^ready on /, JSON.stringify(once));
        assert.equal(once.restarts, 1);
        assert.ok(
          warnings.some((w) => w.includes("loading stalled (no answer for 5 s while downloading the weights); trying once more")),
          JSON.stringify(warnings),
        );
        const twice = await load(2);
        assert.equal(twice.outcome, "Loupe could not load its models (no answer for 5 s while downloading the weights); reload the page to try again");
        assert.equal(twice.restarts, 1);
      } finally {
        page.off("console", onConsole);
        await context.unroute(manifest);
      }
    });

    test("a crashed worker is restarted: the photo in flight fails with the reason, the next one scores", async () => {
      await open(tinyUrl);
      await upload(photo);
      // The app's worker (the threaded build's pool workers are listed too).
      const worker = page.workers().find((w) => w.url().endsWith("/worker.js"));
      assert.ok(worker, "the app's inference worker");
      // What a WebAssembly trap escaping the worker looks like to the page: an uncaught error there.
      await worker.evaluate(() => {
        self.onmessage = () => {
          throw new WebAssembly.RuntimeError("unreachable");
        };
      });
      await page.setInputFiles("#files", photo);
      await page.locator("#error").waitFor({ state: "visible", timeout: 120_000 });
      assert.match(await page.locator("#error").textContent(), /rocket\.jpg: Loupe's worker stopped \(.*unreachable.*\); it was restarted/);
      await page.screenshot({ path: join(artifacts, `${backend}-failure-worker-restarted.png`) });
      await upload(photo); // a fresh worker (weights from the cache) scores it
    });

    test("crops with the requested aspect", async () => {
      await open(tinyUrl);
      await upload(photo);
      await page.selectOption("#aspect", "4:5");
      await page.fill("#candidates", "6");
      await page.click("#crop-button");
      await page.waitForFunction(() => document.querySelector("#alternatives li") || !document.getElementById("error").hidden, null, { timeout: 600_000 });
      assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").textContent());
      const crops = await page.evaluate(() => JSON.parse(document.getElementById("alternatives").dataset.crops));
      assert.ok(crops.length >= 1 && crops.length <= 5);
      for (const c of crops) {
        assert.ok(Math.abs(c.width * 5 - c.height * 4) <= 5, `not 4:5: ${c.width}x${c.height}`);
        assert.ok(c.x >= 0 && c.y >= 0 && c.x + c.width <= 640 && c.y + c.height <= 427);
      }
      assert.ok(crops.every((c, i) => i === 0 || crops[i - 1].score >= c.score));
      await page.screenshot({ path: join(artifacts, `${backend}-crop.png`), fullPage: true });
    });

    test("batch mode orders three photos by score", async () => {
      await open(tinyUrl);
      await page.setInputFiles("#files", batch);
      await page.waitForFunction(() => document.querySelectorAll("#gallery li[data-score]").length === 3, null, { timeout: 600_000 });
      const scores = await page.evaluate(() => [...document.querySelectorAll("#gallery li")].map((li) => Number(li.dataset.score)));
      assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
      await page.screenshot({ path: join(artifacts, `${backend}-batch.png`), fullPage: true });
    });

    test("the paper page shows Tables 1-2 beside Loupe's evaluation, Fig. 2, and both models on a photo", async () => {
      await page.goto(new URL("paper.html", fullUrl).href);
      await page.waitForFunction(() => document.body.dataset.ready === "true" || !document.getElementById("error").hidden, null, { timeout: 60_000 });
      assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").textContent());
      const tableText = (id) => page.evaluate((id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => [...tr.cells].map((c) => c.textContent)), id);
      const table1 = await tableText("table1");
      assert.deepEqual(table1.slice(5, 7), [["paper: No SW regression (NSWR)", "0.3373", "1.3951"], ["paper: SW regression (SWR)", "0.4847", "0.9754"]]);
      // Loupe's rows: the MSEs of weights/EVALUATION.md, read here with a pattern of its own.
      const evaluation = readFileSync(join(LOUPE_FULL, "EVALUATION.md"), "utf8");
      const mse = (model, set) => new RegExp(`Evaluation of \`[^\`]*/${model}/[^\`]*\`[\\s\\S]*?\\| ${set} \\| \\d+ \\| ([0-9.]+) \\|`).exec(evaluation)[1];
      assert.deepEqual(table1.slice(7), [["Loupe: NSWR", mse("nswr", "all"), mse("nswr", "balanced")], ["Loupe: SWR", mse("swr", "all"), mse("swr", "balanced")]]);
      const table2 = await tableText("table2");
      assert.deepEqual(table2[0], ["paper: SW histogram (SWH)", "0.6358", "26.75%", "1.0109", "19.57%"]);
      assert.equal(table2[1][1], mse("swh", "all"));
      // Fig. 2: one bar per bin of Eq. 1, and the weight curve over the non-empty ones.
      const stats = JSON.parse(readFileSync(join(root, "www", "paper", "ava-sample-weights.json"), "utf8")).sample_weights;
      assert.equal(await page.locator("#weights-chart rect.bin").count(), 90);
      const points = await page.evaluate(() => document.querySelector("#weights-chart polyline.weights").getAttribute("points").split(" ").length);
      assert.equal(points, stats.counts.filter((c) => c > 0).length);
      assert.match(await page.locator("#weights-caption").textContent(), /all 255,502 AVA photos in 90 bins/);
      await page.screenshot({ path: join(artifacts, `${backend}-paper.png`), fullPage: true });

      await page.setInputFiles("#paper-file", photo);
      await page.waitForFunction(() => "result" in document.getElementById("side-by-side").dataset || !document.getElementById("error").hidden, null, { timeout: 600_000 });
      assert.equal(await page.locator("#error").isHidden(), true, await page.locator("#error").textContent());
      const shown = await page.evaluate(() => JSON.parse(document.getElementById("side-by-side").dataset.result));
      const native = nativeScores(LOUPE_FULL, photo);
      assert.ok(Math.abs(shown.regression.score - native.regression.score) < 1e-3, `SWR: wasm ${shown.regression.score} vs native ${native.regression.score}`);
      assert.ok(Math.abs(shown.histogramModel.score - native.histogram.score) < 1e-3, `SWH: wasm ${shown.histogramModel.score} vs native ${native.histogram.score}`);
      assert.equal(await page.locator("#swr-score").textContent(), shown.regression.score.toFixed(2));
      assert.equal(await page.locator("#swh-score").textContent(), shown.histogramModel.score.toFixed(2));
      assert.equal(await page.locator("#swh-histogram rect.bar").count(), 10);
      await page.screenshot({ path: join(artifacts, `${backend}-paper-photo.png`), fullPage: true });
    });

    test("the widget example page crops", async () => {
      await page.goto(new URL("widget/example.html", tinyUrl).href);
      await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("hero").dataset.state), null, { timeout: 600_000 });
      const state = await page.evaluate(() => ({ ...document.getElementById("hero").dataset }));
      assert.equal(state.state, "done", JSON.stringify(state));
      assert.ok(Math.abs(Number(state.width) * 9 - Number(state.height) * 16) <= 16, `not 16:9: ${state.width}x${state.height}`);
      assert.ok(Number(state.percentile) >= 0 && Number(state.percentile) <= 100, `percentile ${state.percentile}`);
      await page.screenshot({ path: join(artifacts, `${backend}-widget.png`) });
      // loupeCrop with an onProgress callback (it used to be posted to the worker: DataCloneError).
      const called = await page.evaluate(async () => {
        const { loupeCrop } = await import("./loupe-crop.js");
        const progress = [];
        const crops = await loupeCrop("sample.jpg", { aspect: "1:1", candidates: 8, topK: 1, onProgress: (done, total) => progress.push([done, total]) });
        return { progress, crops };
      });
      assert.ok(called.progress.length > 0, "onProgress was never called");
      // Absurd requests are clear errors, and the widget keeps working.
      const failures = await page.evaluate(async () => {
        const { loupeCrop } = await import("./loupe-crop.js");
        const said = (promise) => promise.then(() => "no error", (error) => error.message);
        const element = document.getElementById("hero");
        const states = [];
        new MutationObserver(() => states.push(element.dataset.state)).observe(element, { attributes: true, attributeFilter: ["data-state"] });
        element.setAttribute("candidates", "1000000000");
        await new Promise((resolve) => {
          const check = () => (element.dataset.state === "error" ? resolve() : setTimeout(check, 100));
          check();
        });
        const hugeCandidates = element.dataset.error;
        // A run whose photo fails after a newer run started must not overwrite the newer result.
        states.length = 0;
        element.setAttribute("candidates", "8");
        element.setAttribute("src", "missing.jpg");
        element.setAttribute("src", "sample.jpg");
        const newer = states.length;
        await new Promise((resolve) => {
          const check = () => (element.dataset.state === "done" ? resolve() : setTimeout(check, 100));
          check();
        });
        return {
          hugeCandidates,
          afterNewerRun: states.slice(newer),
          tooLarge: await said(loupeCrop(new ArrayBuffer(101 * 2 ** 20), { candidates: 4 })),
          zeroWidth: await said(loupeCrop("sample.jpg", { width: 0, height: 3 })),
        };
      });
      assert.match(failures.hugeCandidates, /candidates/i, JSON.stringify(failures));
      assert.ok(!failures.afterNewerRun.includes("error"), `a stale run's error showed: ${JSON.stringify(failures.afterNewerRun)}`);
      assert.match(failures.tooLarge, /101 MB; Loupe reads photos of up to 100 MB/);
      assert.match(failures.zeroWidth, /width and height must both be positive/);
      // A worker that stops answering (a stuck GPU, a hung download) fails the request after the
      // configured silence and is replaced; the next crop works.
      const worker = page.workers().find((w) => w.url().endsWith("/worker.js"));
      assert.ok(worker, "the widget's inference worker");
      await worker.evaluate(() => {
        self.onmessage = () => {}; // takes the request and never answers
      });
      const stall = await page.evaluate(async () => {
        const { loupeCrop, configure } = await import("./loupe-crop.js");
        configure({ timeoutMs: 2000 });
        const started = performance.now();
        const message = await loupeCrop("sample.jpg", { candidates: 4 }).then(() => "no error", (error) => error.message);
        const waited = performance.now() - started;
        configure({ timeoutMs: 300_000 });
        const after = await loupeCrop("sample.jpg", { candidates: 4, topK: 1 });
        return { message, waited, afterWidth: after.topCrop.width };
      });
      assert.match(stall.message, /Loupe's worker stopped \(no answer for 2 s\); it was restarted/, JSON.stringify(stall));
      assert.ok(stall.waited >= 2000, `failed after ${stall.waited} ms`);
      assert.ok(stall.afterWidth > 0, JSON.stringify(stall));
      await page.screenshot({ path: join(artifacts, `${backend}-widget-after-failures.png`) });
      const [done, total] = called.progress.at(-1);
      assert.ok(done > 0 && done <= total, JSON.stringify(called.progress));
      // smartcrop.js's answer: the top crop, every crop best first, the focal point.
      const { topCrop, crops, focal } = called.crops;
      assert.equal(topCrop.width, topCrop.height);
      assert.deepEqual(crops[0], topCrop);
      assert.ok(topCrop.percentile >= 0 && topCrop.percentile <= 100);
      assert.deepEqual(focal, { x: topCrop.x + topCrop.width / 2, y: topCrop.y + topCrop.height / 2 });
    });
  });
}
