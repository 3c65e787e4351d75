#!/usr/bin/env bash
# Runs every Loupe test on a fresh Debian machine: installs what they need, then runs the Rust
# tests (unit, integration, CLI end to end, `loupe batch`, native wgpu on Mesa lavapipe), the
# Python package's (wheel built with maturin, pytest, a local Ray Data pipeline) and the browser
# tests (the wasm app in headless Debian chromium, on WebGPU/SwiftShader and on the CPU fallback),
# then a short fuzzing run of every fuzz target (scripts/fuzz.sh).
#   ./scripts/test.sh
# Needs: the Rust toolchain (rustup), apt (root), node/npm, python3 with venv and pip, and ../shared/data beside the
# checkout (or LOUPE_SHARED_DATA) for the real VGG16 weights.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outputs live outside the clone so a second run (and CI) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
export CARGO_TERM_COLOR=never
# A cold build and test run leave about 4 GB there (native and wasm); warn up front instead of
# letting the linker die with a bus error on a full disk.
mkdir -p "$CARGO_TARGET_DIR"
free_gb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 { print int($4 / 1048576) }')
[ "$free_gb" -ge 6 ] || echo "warning: only ${free_gb} GB free under $CARGO_TARGET_DIR; a cold build needs about 6 GB" >&2
shared="${LOUPE_SHARED_DATA:-$PWD/../shared/data}"
export LOUPE_SHARED_DATA="$(cd "$shared" && pwd)"

need_apt=()
# Mesa's lavapipe: a Vulkan driver on the CPU, for the native wgpu test.
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers libvulkan1)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== formatting and lints"
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
cargo fmt --all --check
# Every target the tests build, with the features they use (not `cuda`: it cannot build offline).
cargo clippy --workspace --locked --all-targets --features loupe/import,loupe/wgpu -- -D warnings

echo "== Rust tests (workspace)"
cargo test --workspace --locked

echo "== Python package (wheel, pytest, Ray)"
./scripts/test-python.sh

echo "== browser tests"
./scripts/test-browser.sh

echo "== fuzzing (smoke run: 60 s per target; skipped without the nightly toolchain)"
SECONDS_EACH=60 ./scripts/fuzz.sh
