#!/usr/bin/env bash
# Browser tests: the wasm app in headless Debian chromium (playwright-core), on WebGPU
# (SwiftShader) and on the CPU fallback. Needs `cargo test --workspace` to have built the CLI.
#   ./scripts/test-browser.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
shared="${LOUPE_SHARED_DATA:-$PWD/../shared/data}"
export LOUPE_SHARED_DATA="$(cd "$shared" && pwd)"
[ -x /usr/bin/chromium ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
[ -x "$CARGO_TARGET_DIR/debug/loupe" ] || cargo test --workspace --locked --no-run

echo "== browser tests: building the app"
./scripts/build-web.sh
# The CLI that `cargo test --workspace` built (a `-p` build would resolve burn's features anew
# and rebuild it from scratch).
loupe="$CARGO_TARGET_DIR/debug/loupe"
weights="$CARGO_TARGET_DIR/browser-test-weights"
rm -rf "$weights" && mkdir -p "$weights/full" "$weights/tiny"
for output in regression histogram; do
  "$loupe" init --output "$output" --width-divisor 8 --seed 1 -o "$weights/tiny/$output.loupe" >/dev/null
done
"$loupe" manifest "$weights/tiny" >/dev/null
# Full VGG16: the shipped default weights (shared backbone + two heads); before they existed, the
# ImageNet base with untrained heads.
if [ -f weights/manifest.json ]; then
  full="$PWD/weights"
else
  full="$weights/full"
  for output in regression histogram; do
    "$loupe" import-vgg16 --from "$LOUPE_SHARED_DATA/vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors" \
      --output "$output" -o "$full/$output.loupe" >/dev/null
  done
  "$loupe" manifest "$full" >/dev/null
fi

echo "== browser tests: packing the npm package"
tarball=$(./scripts/build-npm.sh | tail -n 1)

(cd tests/browser && npm ci --no-audit --no-fund --silent)
LOUPE_BIN="$loupe" LOUPE_FULL="$full" LOUPE_TINY="$weights/tiny" LOUPE_NPM_TARBALL="$tarball" \
  node --test --test-concurrency=1 --test-reporter=spec \
  tests/browser/crop-urls.test.mjs tests/browser/weights.test.mjs tests/browser/app.test.mjs tests/browser/npm-package.test.mjs
