// www/weights.js against a scripted server and Cache API (plain node: fetch, Response and
// crypto.subtle are node's own): checksums, a full or missing cache, a changed manifest, a
// failing server with a verified cached copy.
import { beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

globalThis.self = globalThis;
const { fetchWeights } = await import("../../www/weights.js");

const BASE = "https://host.example/weights/";
const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");
const file = (n, fill) => new Uint8Array(n).fill(fill);

let served, requests, store, putFails, openFails;
function manifestOf(files) {
  return JSON.stringify({ models: Object.entries(files).map(([name, bytes]) => ({ file: name, kind: name, bytes: bytes.length, sha256: sha(bytes) })) });
}
beforeEach(() => {
  served = { "backbone.loupe": file(300, 7), "regression.loupe": file(40, 9) };
  served["manifest.json"] = manifestOf(served);
  requests = [];
  store = new Map();
  putFails = false;
  openFails = false;
  globalThis.fetch = async (url) => {
    requests.push(url.replace(BASE, ""));
    const body = served[url.replace(BASE, "")];
    if (served.status) return new Response("unavailable", { status: served.status });
    return body === undefined ? new Response("not found", { status: 404 }) : new Response(body);
  };
  globalThis.caches = {
    async open() {
      if (openFails) throw new DOMException("storage is blocked", "SecurityError");
      return {
        async match(url) {
          return store.has(url) ? new Response(store.get(url)) : undefined;
        },
        async put(url, response) {
          if (putFails) throw new DOMException("quota exceeded", "QuotaExceededError");
          store.set(url, new Uint8Array(await response.arrayBuffer()));
        },
      };
    },
  };
});
const names = (files) => files.map((f) => f.entry.file);
const progress = () => {};

test("a file with one flipped byte is refused with the checksum error, and nothing is kept for offline use", async () => {
  served["regression.loupe"] = file(40, 9);
  served["regression.loupe"][17] ^= 1;
  await assert.rejects(fetchWeights(BASE, progress), /regression\.loupe: checksum mismatch/);
  assert.equal(store.has(`${BASE}manifest.json`), false, "the manifest was cached before its files were verified");
});

test("a second visit downloads nothing, and works with the server gone", async () => {
  assert.deepEqual(names(await fetchWeights(BASE, progress)), ["backbone.loupe", "regression.loupe"]);
  requests = [];
  const again = await fetchWeights(BASE, progress);
  assert.deepEqual(requests, ["manifest.json"]);
  assert.deepEqual(again[0].bytes, served["backbone.loupe"]);
  served.status = 503; // the server fails: the verified cached manifest and files
  requests = [];
  assert.deepEqual(names(await fetchWeights(BASE, progress)), ["backbone.loupe", "regression.loupe"]);
  assert.deepEqual(requests, ["manifest.json"]);
});

test("a changed manifest refetches the changed file only", async () => {
  await fetchWeights(BASE, progress);
  served["regression.loupe"] = file(50, 3);
  served["manifest.json"] = manifestOf({ "backbone.loupe": served["backbone.loupe"], "regression.loupe": served["regression.loupe"] });
  requests = [];
  const files = await fetchWeights(BASE, progress);
  assert.deepEqual(requests, ["manifest.json", "regression.loupe"]);
  assert.deepEqual(files[1].bytes, served["regression.loupe"]);
});

test("a full cache (put fails) or no cache at all still loads the weights", async () => {
  putFails = true;
  assert.deepEqual(names(await fetchWeights(BASE, progress)), ["backbone.loupe", "regression.loupe"]);
  requests = [];
  await fetchWeights(BASE, progress);
  assert.deepEqual(requests, ["manifest.json", "backbone.loupe", "regression.loupe"], "nothing was cached, so all is downloaded again");
  openFails = true;
  assert.deepEqual(names(await fetchWeights(BASE, progress)), ["backbone.loupe", "regression.loupe"]);
});

test("an HTTP error without a cached copy, and a manifest that is not one, are clear errors", async () => {
  served.status = 500;
  await assert.rejects(fetchWeights(BASE, progress), /weights manifest: HTTP 500/);
  delete served.status;
  served["manifest.json"] = "<html>sign in</html>";
  await assert.rejects(fetchWeights(BASE, progress), /weights manifest: not JSON/);
  served["manifest.json"] = JSON.stringify({ models: [{ file: "x.loupe" }] });
  await assert.rejects(fetchWeights(BASE, progress), /no list of models/);
});
