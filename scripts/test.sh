#!/usr/bin/env bash
# Runs every Loupe test on a fresh Debian machine: installs what the tests need, then runs
#   1. the Rust tests (unit, integration, CLI end to end, native wgpu on Mesa lavapipe);
#   2. the browser tests: the wasm app in headless Debian chromium, on WebGPU and on the CPU.
#   ./scripts/test.sh
# Needs: the Rust toolchain (rustup), apt (root), node/npm, and ../shared/data beside the
# checkout (or LOUPE_SHARED_DATA) for the real VGG16 weights.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outputs live outside the clone so a second run (and CI) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
export CARGO_TERM_COLOR=never
shared="${LOUPE_SHARED_DATA:-$PWD/../shared/data}"
export LOUPE_SHARED_DATA="$(cd "$shared" && pwd)"

need_apt=()
# Mesa's lavapipe: a Vulkan driver on the CPU, for the native wgpu test.
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers libvulkan1)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== Rust tests (workspace)"
cargo test --workspace --locked

echo "== browser tests: building the app"
./scripts/build-web.sh
# The CLI that `cargo test --workspace` built (a `-p` build would resolve burn's features anew
# and rebuild it from scratch).
loupe="$CARGO_TARGET_DIR/debug/loupe"
weights="$CARGO_TARGET_DIR/browser-test-weights"
rm -rf "$weights" && mkdir -p "$weights/full" "$weights/tiny"
for output in regression histogram; do
  "$loupe" import-vgg16 --from "$LOUPE_SHARED_DATA/vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors" \
    --output "$output" -o "$weights/full/$output.loupe" >/dev/null
  "$loupe" init --output "$output" --width-divisor 8 --seed 1 -o "$weights/tiny/$output.loupe" >/dev/null
done
"$loupe" manifest "$weights/full" >/dev/null
"$loupe" manifest "$weights/tiny" >/dev/null

(cd tests/browser && npm ci --no-audit --no-fund --silent)
LOUPE_BIN="$loupe" LOUPE_FULL="$weights/full" LOUPE_TINY="$weights/tiny" \
  node --test --test-concurrency=1 --test-reporter=spec tests/browser/app.test.mjs
