#!/usr/bin/env bash
# Builds the browser app's wasm into www/pkg/ (installing the wasm32 target and the matching
# wasm-bindgen-cli if missing). Used by serve.sh and test.sh.
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

echo "== building the wasm (release)"
cargo build --release --locked --lib --target wasm32-unknown-unknown -p loupe
"$tools/bin/wasm-bindgen" --target web --no-typescript --remove-name-section --remove-producers-section --out-dir www/pkg \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/loupe.wasm"
ls -l www/pkg/loupe_bg.wasm
