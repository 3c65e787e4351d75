#!/usr/bin/env bash
# Regenerates weights/ exactly as shipped: the default models trained with `loupe train` on the
# distillation set (../shared/data/distill), frozen ImageNet VGG16 backbone, compact heads, seeded.
#   ./scripts/train-default-weights.sh            (about 40 min on 2 CPU cores; DEVICE=wgpu for a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
shared="${LOUPE_SHARED_DATA:-../shared/data}"
distill="$shared/distill"
runs="${RUNS:-$CARGO_TARGET_DIR/default-weight-runs}"
device="${DEVICE:-flex}"
cargo build --release --locked -p loupe-trainer
loupe="$CARGO_TARGET_DIR/release/loupe"
mkdir -p "$runs"

for output in regression histogram; do
  "$loupe" import-vgg16 --from "$shared/vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors" \
    --head compact --output "$output" -o "$runs/init-$output.loupe"
done

# SWR and SWH (the paper's sample weights), and NSWR (no sample weights) for comparison.
train() {
  local name=$1 output=$2; shift 2
  rm -rf "$runs/$name"
  "$loupe" train --labels "$distill/AVA_train.txt" --images "$distill/images" \
    --init "$runs/init-$output.loupe" --model "$output" --head compact --freeze-backbone \
    --feature-cache "$runs/features" --epochs "${EPOCHS:-60}" --lr "${LR:-3e-4}" --batch 32 \
    --plateau-patience 3 --seed 1 --device "$device" --out "$runs/$name" "$@"
}
train swr regression
train nswr regression --unweighted
train swh histogram

"$loupe" eval -w "$runs/swr/model.loupe" -w "$runs/nswr/model.loupe" -w "$runs/swh/model.loupe" \
  --labels "$distill/AVA_val.txt" --images "$distill/images" --variants "$distill/variants.csv" \
  --device "$device" -o "$runs/eval"
