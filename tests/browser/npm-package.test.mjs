// The npm package as a host site gets it: `npm pack`'s tarball (scripts/build-npm.sh) installed into
// a fresh folder, a plain HTML page importing it from node_modules, served by `loupe serve` with
// the weights elsewhere (`weightsUrl`), cropping a photo in headless chromium on both backends.
// Served without cross-origin isolation, as most host sites are: the single-threaded build there.
// Also: the package's TypeScript types compile against a consumer's code.
//   LOUPE_BIN, LOUPE_TINY as for app.test.mjs; LOUPE_NPM_TARBALL: the packed package.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const artifacts = join(here, "artifacts");
mkdirSync(artifacts, { recursive: true });
const { LOUPE_BIN, LOUPE_TINY, LOUPE_NPM_TARBALL } = process.env;
assert.ok(LOUPE_BIN && LOUPE_TINY && LOUPE_NPM_TARBALL, "run through scripts/test-browser.sh (LOUPE_BIN, LOUPE_TINY, LOUPE_NPM_TARBALL)");

// A host site: its own package.json, the tarball installed like any npm dependency, a photo and a page.
const site = mkdtempSync(join(tmpdir(), "loupe-host-"));
writeFileSync(join(site, "package.json"), JSON.stringify({ name: "a-host-site", private: true, type: "module" }));
execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--silent", LOUPE_NPM_TARBALL], { cwd: site, stdio: "inherit" });
copyFileSync(join(root, "tests", "fixtures", "rocket.jpg"), join(site, "photo.jpg")); // 640x427, CC0
writeFileSync(
  join(site, "index.html"),
  `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A host's page</title><link rel="icon" href="data:,">
<script type="module" src="host.js"></script></head>
<body><img id="photo" src="photo.jpg" alt="A rocket">
<loupe-crop id="hero" src="photo.jpg" aspect="16:9" candidates="8" weights="/weights/"></loupe-crop></body></html>`,
);
// What a smartcrop.js user writes, with only the import changed.
writeFileSync(
  join(site, "host.js"),
  `import smartcrop, { configure, cloudinaryCrop } from "./node_modules/loupe-crop/widget/loupe-crop.js";
configure({ weightsUrl: "/weights/" });
window.hostResult = smartcrop
  .crop(document.getElementById("photo"), { width: 100, height: 100, candidates: 8, topK: 3 })
  .then((result) => ({ ...result, cloudinary: cloudinaryCrop(result.topCrop) }), (error) => ({ error: error.message }));
`,
);

test("the package installs with its files and no weights, and its types compile", () => {
  const installed = join(site, "node_modules", "loupe-crop");
  const files = ["package.json", "README.md", "index.d.ts", "widget/loupe-crop.js", "widget/crop-urls.js", "worker.js", "client.js", "weights.js", "pkg/loupe.js", "pkg/loupe_bg.wasm"];
  // The threaded build, when scripts/build-web.sh could make it (it needs the nightly toolchain).
  if (existsSync(join(root, "www", "pkg-threads", "loupe_bg.wasm"))) files.push("pkg-threads/loupe.js", "pkg-threads/loupe_bg.wasm");
  for (const file of files) {
    assert.ok(existsSync(join(installed, file)), `${file} is missing from the package`);
  }
  assert.ok(!existsSync(join(installed, "weights")), "the weights must not be in the package");
  writeFileSync(
    join(site, "consumer.ts"),
    `import smartcrop, { loupeCrop, configure, imgixRect, type LoupeCropResult } from "loupe-crop";
import { thumborCrop } from "loupe-crop/crop-urls";
configure({ weightsUrl: "/weights/" });
async function thumbnail(img: HTMLImageElement): Promise<string> {
  const result: LoupeCropResult = await loupeCrop(img, { width: 4, height: 3, minScale: 0.8 });
  const again = await smartcrop.crop(img, { aspect: 1.5 });
  const p: number = result.topCrop.percentile + again.focal.x;
  return imgixRect(result.topCrop) + thumborCrop(again.crops[0]) + p;
}
document.querySelector("loupe-crop")?.addEventListener("loupe-crop", (event) => console.log(event.detail.topCrop.score));
export { thumbnail };
`,
  );
  const tsc = join(here, "node_modules", ".bin", "tsc");
  execFileSync(tsc, ["--noEmit", "--strict", "--target", "es2022", "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom", "consumer.ts"], {
    cwd: site,
    stdio: "inherit",
  });
});

let server, url;
before(async () => {
  server = spawn(LOUPE_BIN, ["serve", "--app", site, "--weights", LOUPE_TINY, "--port", "18083", "--no-isolation"], { stdio: ["ignore", "pipe", "inherit"] });
  url = await new Promise((resolve, reject) => {
    server.stdout.on("data", (chunk) => {
      const match = /http:\/\/127\.0\.0\.1:\d+\//.exec(String(chunk));
      if (match) resolve(match[0]);
    });
    server.on("exit", (code) => reject(new Error(`loupe serve exited with ${code}`)));
  });
});
after(() => server?.kill());

const FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"];
for (const backend of ["webgpu", "cpu"]) {
  describe(`the packed package on ${backend}`, () => {
    test("a plain page importing it from node_modules crops a photo, smartcrop-style and as an element", async () => {
      const args = backend === "webgpu" ? [...FLAGS, "--enable-unsafe-webgpu"] : FLAGS;
      const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args });
      const requests = [];
      try {
        const page = await browser.newPage();
        page.on("request", (request) => requests.push(request.url()));
        // Errors and warnings (a stalled load that was tried again says so in one).
        page.on("console", (message) => ["error", "warning"].includes(message.type()) && console.log(`[${backend} console] ${message.text()}`));
        const started = Date.now();
        await page.goto(url);
        assert.equal(await page.evaluate(() => crossOriginIsolated), false);
        const result = await page.evaluate(() => window.hostResult);
        const calledIn = (Date.now() - started) / 1000;
        assert.equal(result.error, undefined, result.error);
        const { topCrop, crops, focal } = result;
        assert.equal(topCrop.width, topCrop.height, "width: 100, height: 100 asks for a square");
        assert.ok(topCrop.x >= 0 && topCrop.y >= 0 && topCrop.x + topCrop.width <= 640 && topCrop.y + topCrop.height <= 427, JSON.stringify(topCrop));
        assert.ok(topCrop.width >= 427 * 0.5 - 1, `smaller than minScale 0.5 allows: ${topCrop.width}`);
        assert.ok(crops.length >= 1 && crops.length <= 3);
        assert.deepEqual(crops[0], topCrop);
        assert.ok(crops.every((c, i) => i === 0 || crops[i - 1].score >= c.score));
        assert.deepEqual(focal, { x: topCrop.x + topCrop.width / 2, y: topCrop.y + topCrop.height / 2 });
        assert.ok(topCrop.score >= 1 && topCrop.score <= 10 && topCrop.percentile >= 0 && topCrop.percentile <= 100, JSON.stringify(topCrop));
        // The tiny weights have a histogram model: it says how hard the top crop is to judge.
        assert.ok(result.difficulty?.std > 0 && result.difficulty.label, JSON.stringify(result.difficulty));
        assert.equal(result.cloudinary, `c_crop,x_${topCrop.x},y_${topCrop.y},w_${topCrop.width},h_${topCrop.height}`);

        await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("hero").dataset.state), null, { timeout: 600_000 });
        const hero = await page.evaluate(() => ({ ...document.getElementById("hero").dataset }));
        assert.equal(hero.state, "done", JSON.stringify(hero));
        assert.ok(Math.abs(Number(hero.width) * 9 - Number(hero.height) * 16) <= 16, `not 16:9: ${hero.width}x${hero.height}`);
        assert.equal(Number(hero.focalX), Number(hero.x) + Number(hero.width) / 2);
        assert.ok(Number(hero.std) > 0, `data-std ${hero.std}`);
        await page.screenshot({ path: join(artifacts, `npm-package-${backend}.png`), fullPage: true });
        const elementIn = (Date.now() - started) / 1000;
        console.log(`${backend}: packed package cropped ${JSON.stringify(topCrop)} (${calledIn.toFixed(1)} s after page load); element ${hero.width}x${hero.height} (${elementIn.toFixed(1)} s)`);
      } finally {
        await browser.close();
      }
      assert.ok(requests.some((u) => u.endsWith("/node_modules/loupe-crop/pkg/loupe_bg.wasm")), "the wasm came from the installed package");
      assert.ok(!requests.some((u) => u.includes("/pkg-threads/")), "a page without cross-origin isolation cannot run the threaded build");
      assert.ok(requests.some((u) => u.endsWith("/weights/manifest.json")), "the weights came from weightsUrl");
      const outside = requests.filter((u) => !/^(http:\/\/127\.0\.0\.1:\d+\/|blob:|data:)/.test(u));
      assert.deepEqual(outside, [], "a request left 127.0.0.1");
    });
  });
}
