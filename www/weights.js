// Weights: listed in manifest.json with their sha256, downloaded once with progress, verified,
// and kept in the Cache API so a second visit downloads nothing and works offline.
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

/** Fetch every model in `${base}/manifest.json`: [{entry, bytes}]. */
export async function fetchWeights(base, onProgress) {
  const manifestUrl = new URL("manifest.json", base).href;
  const cache = "caches" in self ? await caches.open(CACHE) : null;
  let manifestResponse;
  try {
    manifestResponse = await fetch(manifestUrl, { cache: "no-cache" });
  } catch (offline) {
    manifestResponse = cache && (await cache.match(manifestUrl));
    if (!manifestResponse) throw offline;
  }
  if (!manifestResponse.ok) throw new Error(`weights manifest: HTTP ${manifestResponse.status}`);
  if (cache) await cache.put(manifestUrl, manifestResponse.clone());
  const manifest = await manifestResponse.json();
  const total = manifest.models.reduce((n, m) => n + m.bytes, 0);
  let loaded = 0;
  onProgress(loaded, total);
  const files = [];
  for (const entry of manifest.models) {
    const url = new URL(entry.file, base).href;
    const cached = cache && (await cache.match(url));
    let bytes = cached ? new Uint8Array(await cached.arrayBuffer()) : null;
    if (bytes && (await sha256Hex(bytes)) !== entry.sha256) bytes = null; // stale: fetch again
    if (!bytes) {
      bytes = await download(url, (n) => onProgress((loaded += n), total));
      const digest = await sha256Hex(bytes);
      if (digest !== entry.sha256) throw new Error(`${entry.file}: checksum mismatch (got ${digest.slice(0, 12)}…)`);
      if (cache) await cache.put(url, new Response(bytes, { headers: { "content-type": "application/octet-stream" } }));
    } else {
      onProgress((loaded += entry.bytes), total);
    }
    files.push({ entry, bytes });
  }
  return files;
}
