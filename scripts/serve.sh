#!/usr/bin/env bash
# Builds and serves Loupe's browser app on http://127.0.0.1:${PORT:-8080}/ with the default weights.
#   ./scripts/serve.sh
# Needs the Rust toolchain (rustup). Until trained default weights are in weights/, it builds
# weights from the ImageNet VGG16 base in ../shared/data (LOUPE_SHARED_DATA) and says their head
# is untrained.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"

./scripts/build-web.sh
echo "== building the loupe CLI"
cargo build --release --locked -p loupe-cli
loupe="$CARGO_TARGET_DIR/release/loupe"

weights=weights
if [ ! -f weights/manifest.json ]; then
  weights="$CARGO_TARGET_DIR/untrained-weights"
  shared="${LOUPE_SHARED_DATA:-../shared/data}"
  if [ ! -f "$weights/manifest.json" ]; then
    mkdir -p "$weights"
    for output in regression histogram; do
      "$loupe" import-vgg16 --from "$shared/vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors" \
        --head compact --output "$output" -o "$weights/$output.loupe"
    done
    "$loupe" manifest "$weights"
  fi
  echo "NOTE: no trained default weights in weights/: serving ImageNet-backbone weights whose head is UNTRAINED (scores are noise)."
fi
exec "$loupe" serve --app www --weights "$weights" --port "${PORT:-8080}"
