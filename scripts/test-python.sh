#!/usr/bin/env bash
# The Python package's tests: builds the abi3 wheel from the workspace (maturin, the test build's
# profile, so it reuses the compiled burn), installs it with its test dependencies from PyPI into
# a virtualenv outside the clone, and runs pytest against the `loupe` binary of the same build:
# scores/crops/errors equal to the CLI's, `loupe batch` Parquet read back with pyarrow, and the
# Ray Data pipeline on a local 2-CPU cluster.
#   ./scripts/test-python.sh      (after `cargo test --workspace`, which builds target/debug/loupe)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
venv="${LOUPE_VENV:-/var/tmp/loupe-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  "$python" -m venv "$venv"
fi
echo "== Python test dependencies (PyPI)"
"$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.5,<2" numpy pyarrow pytest pillow "ray[data]"

echo "== building the wheel"
rm -rf "$CARGO_TARGET_DIR/wheels"
"$venv/bin/maturin" build --profile dev --locked -m python/Cargo.toml --out "$CARGO_TARGET_DIR/wheels"
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$CARGO_TARGET_DIR"/wheels/loupe-*.whl

echo "== pytest"
export LOUPE_BIN="$CARGO_TARGET_DIR/debug/loupe"
[ -x "$LOUPE_BIN" ] || { echo "no $LOUPE_BIN: run cargo test --workspace first" >&2; exit 1; }
# Run from the tests folder, not the source tree: `import loupe` must find the installed wheel.
cd python/tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider .
