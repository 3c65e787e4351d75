#!/usr/bin/env bash
# Regenerates weights/ as shipped: the default models trained with `loupe-train train` on the
# distillation set (../shared/data/distill), frozen ImageNet VGG16 backbone (regression: quadratic
# head fitted in closed form; histogram: statistics head trained by Adam), seeded;
# evaluated with `loupe-train eval` on the set's validation part; exported with their metrics and
# bundled as one shared backbone + two heads.
#   ./scripts/train-default-weights.sh     (≈60 min on 2 CPU cores, nearly all of it VGG16 features; DEVICE=wgpu for a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
shared="${LOUPE_SHARED_DATA:-../shared/data}"
distill="$shared/distill"
runs="${RUNS:-$CARGO_TARGET_DIR/default-weight-runs}"
device="${DEVICE:-flex}"
# Both binaries: `loupe` makes and bundles weight files, `loupe-train` trains and evaluates.
bin="${LOUPE_BIN_DIR:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked -p loupe-cli -p loupe-train
  bin="$CARGO_TARGET_DIR/release"
fi
loupe="$bin/loupe"
loupe_train="$bin/loupe-train"
mkdir -p "$runs"

# Both heads read block statistics with blocks 4-5 over their interior (the crop search's
# estimates follow those closely; MODEL_CARD.md).
for model in regression:quadratic histogram:statistics; do
  "$loupe" import-vgg16 --from "$shared/vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors" \
    --output "${model%%:*}" --head "${model##*:}" --statistics deep-interior -o "$runs/init-${model%%:*}.loupe"
done

# SWR and SWH (the paper's sample weights), and NSWR (no sample weights) for comparison. The
# regression models are fitted in closed form (weighted kernel ridge, the WMSE of Eq. 2 exactly
# minimised); the histogram model is trained by Adam on the weighted chi-square (Eq. 3). The ridge
# penalty, learning rate and weight decay were chosen on the validation set (see MODEL_CARD.md).
train() {
  local name=$1 output=$2 head=$3; shift 3
  rm -rf "$runs/$name"
  "$loupe_train" train --labels "$distill/AVA_train.txt" --images "$distill/images" \
    --init "$runs/init-$output.loupe" --model "$output" --head "$head" --freeze-backbone \
    --feature-cache "$runs/features" --batch 32 --seed 1 --device "$device" --out "$runs/$name" "$@"
}
train swr regression quadratic --closed-form --ridge 0.1
train nswr regression quadratic --closed-form --ridge 0.1 --unweighted
train swh histogram statistics --epochs 100 --plateau-patience 3 --lr 3e-2 --weight-decay 5e-6

"$loupe_train" eval -w "$runs/swr/model.loupe" -w "$runs/nswr/model.loupe" -w "$runs/swh/model.loupe" \
  --labels "$distill/AVA_val.txt" --images "$distill/images" --variants "$distill/variants.csv" \
  --feature-cache "$runs/features" --device "$device" -o "$runs/eval"

# Export the shipped models with their metrics and the attribution the distillation set requires.
provenance="VGG16 (ImageNet conv base, Oxford VGG, CC BY 4.0) with heads distilled from idealo's AVA-trained NIMA MobileNet (Apache-2.0) on 135 permissively licensed photos and their crops/degradations; the student never saw AVA images; NOT the paper's AVA-trained weights."
licence="Weights: CC BY 4.0. VGG16 ImageNet base: Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0. Teacher: idealo image-quality-assessment NIMA MobileNet aesthetic model, Apache-2.0, Copyright 2018 idealo internet GmbH. Training photos: see PHOTO_CREDITS.csv (from the photo manifests MANIFEST.csv and MANIFEST_more.csv)."
for name in swr swh; do
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps(r[sys.argv[2]]))' \
    "$runs/eval/report.json" "$runs/$name/model.loupe" > "$runs/$name/metrics.json"
  "$loupe_train" export --run "$runs/$name" --metrics "$runs/$name/metrics.json" \
    --provenance "$provenance" --licence "$licence" -o "$runs/$name/export.loupe"
done
rm -f weights/*.loupe weights/manifest.json
"$loupe" bundle -o weights "$runs/swr/export.loupe" "$runs/swh/export.loupe"
python3 scripts/photo-credits.py "$shared" weights/PHOTO_CREDITS.csv
cp "$runs/eval/report.md" weights/EVALUATION.md
ls -l weights/
