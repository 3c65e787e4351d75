// Weights: listed in manifest.json with their sha256, downloaded once with progress, verified,
// and kept in the Cache API so a second visit downloads nothing and works offline. The cache only
// saves downloads: when it is missing, full or broken, Loupe still works (it downloads again).
const CACHE = "loupe-weights-v1";

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function download(url, onChunk) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const reader = response.body.getReader();
  const chunks = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    onChunk(value.length);
  }
  const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

// The Cache API, where the page may use it (not in opaque origins or with storage blocked).
async function openCache() {
  try {
    return "caches" in self ? await caches.open(CACHE) : null;
  } catch {
    return null;
  }
}

async function cachedResponse(cache, url) {
  try {
    return (await cache?.match(url)) ?? null;
  } catch {
    return null;
  }
}

// A failed write (quota exceeded, storage cleared meanwhile) costs the next visit a download.
async function remember(cache, url, response) {
  try {
    await cache?.put(url, response);
  } catch (error) {
    console.warn(`Loupe: could not cache ${url} (${error?.name || error}); it will be downloaded again next time`);
  }
}

function parseManifest(text) {
  let manifest;
  try {
    manifest = JSON.parse(text);
  } catch {
    throw new Error("weights manifest: not JSON");
  }
  const valid = (m) => typeof m?.file === "string" && /^[0-9a-f]{64}$/.test(m.sha256) && Number.isSafeInteger(m.bytes) && m.bytes >= 0;
  if (!Array.isArray(manifest?.models) || !manifest.models.every(valid)) throw new Error("weights manifest: no list of models with file, bytes and sha256");
  return manifest;
}

/** Fetch every model in `${base}/manifest.json`: [{entry, bytes}], each checked against its sha256. */
export async function fetchWeights(base, onProgress) {
  const manifestUrl = new URL("manifest.json", base).href;
  const cache = await openCache();
  let manifestText;
  try {
    const response = await fetch(manifestUrl, { cache: "no-cache" });
    if (!response.ok) throw new Error(`weights manifest: HTTP ${response.status}`);
    manifestText = await response.text();
  } catch (error) {
    // Offline or the server failing: the manifest of the last complete, verified download.
    const cached = await cachedResponse(cache, manifestUrl);
    if (!cached) throw error;
    manifestText = await cached.text();
  }
  const manifest = parseManifest(manifestText);
  const total = manifest.models.reduce((n, m) => n + m.bytes, 0);
  let loaded = 0;
  onProgress(loaded, total);
  const files = [];
  for (const entry of manifest.models) {
    const url = new URL(entry.file, base).href;
    const cached = await cachedResponse(cache, url);
    let bytes = cached ? new Uint8Array(await cached.arrayBuffer()) : null;
    if (bytes && (await sha256Hex(bytes)) !== entry.sha256) bytes = null; // stale or damaged: fetch again
    if (!bytes) {
      bytes = await download(url, (n) => onProgress((loaded += n), total));
      const digest = await sha256Hex(bytes);
      if (digest !== entry.sha256) throw new Error(`${entry.file}: checksum mismatch (got ${digest.slice(0, 12)}…, the manifest says ${entry.sha256.slice(0, 12)}…)`);
      await remember(cache, url, new Response(bytes, { headers: { "content-type": "application/octet-stream" } }));
    } else {
      onProgress((loaded += entry.bytes), total);
    }
    files.push({ entry, bytes });
  }
  // Only now, with every file it lists verified, is the manifest kept for offline visits.
  await remember(cache, manifestUrl, new Response(manifestText, { headers: { "content-type": "application/json" } }));
  return files;
}
