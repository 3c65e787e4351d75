#!/usr/bin/env bash
# Builds the browser app's wasm (installing the wasm32 target and the matching wasm-bindgen-cli if
# missing), in two builds:
#   www/pkg/          WebGPU, with the CPU as fallback (single-threaded); every browser loads it
#                     unless the next one applies;
#   www/pkg-threads/  CPU only, on a rayon pool of Web Workers: loaded by cross-origin isolated
#                     pages without WebGPU. WebAssembly threads need the standard library rebuilt
#                     with atomics (nightly, `-Z build-std`); without the nightly toolchain (not
#                     downloaded here) it is skipped with a message and pages use www/pkg/.
# LOUPE_THREADS=0 skips the second build. Used by serve.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# wasm-bindgen-cli must be exactly the crate's wasm-bindgen version (from Cargo.lock).
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
tools="${LOUPE_TOOLS:-/var/tmp/loupe-tools}"
if [ "$("$tools/bin/wasm-bindgen" --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  echo "== installing wasm-bindgen-cli $version (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "$version" --root "$tools" --quiet
fi
bindgen() { # <wasm file> <out dir>
  rm -rf "$2"
  "$tools/bin/wasm-bindgen" --target web --no-typescript --remove-name-section --remove-producers-section --out-dir "$2" "$1"
  ls -l "$2/loupe_bg.wasm"
}

echo "== building the wasm (release, WebGPU + CPU)"
cargo build --release --locked --lib --target wasm32-unknown-unknown -p loupe --features webgpu
bindgen "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/loupe.wasm" www/pkg

# No stale threaded build is left behind for pages to load.
skip_threads() { echo "== threaded build skipped: $1"; rm -rf www/pkg-threads; exit 0; }
[ "${LOUPE_THREADS:-1}" != 0 ] || skip_threads "LOUPE_THREADS=0"
rustup run nightly rustc --version >/dev/null 2>&1 ||
  skip_threads "the nightly toolchain is missing (rustup toolchain install nightly, then rerun)"
rustup component list --toolchain nightly --installed | grep -q '^rust-src' || rustup component add rust-src --toolchain nightly
rustup target list --toolchain nightly --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown --toolchain nightly
echo "== building the wasm (release, CPU on threads; nightly, build-std)"
# RUSTFLAGS replaces .cargo/config.toml's flags, so SIMD is named again. Shared memory of up to
# 4 GiB (wasm32's whole range, what the single-threaded build may grow to: a crop's largest level
# pass needs over 1 GiB); the TLS exports let wasm-bindgen start each worker's thread.
# Its own target dir: other flags and another toolchain, built beside the stable one, not over it.
RUSTFLAGS="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals \
  -C link-arg=--shared-memory -C link-arg=--max-memory=4294967296 -C link-arg=--import-memory \
  -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
  -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base" \
  cargo +nightly build --release --locked --lib --target wasm32-unknown-unknown -p loupe --features threads \
  --target-dir "$CARGO_TARGET_DIR/threads" -Z build-std=panic_abort,std
bindgen "$CARGO_TARGET_DIR/threads/wasm32-unknown-unknown/release/loupe.wasm" www/pkg-threads
