#!/usr/bin/env bash
# Builds the npm package `loupe-crop` (the widget, the worker, the wasm builds and their glue,
# TypeScript types; no weights) and packs it: prints the tarball's path on its last line.
#   ./scripts/build-npm.sh            → $CARGO_TARGET_DIR/npm/loupe-crop-<version>.tgz
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/loupe-target}"
[ -f www/pkg/loupe_bg.wasm ] && [ -z "${REBUILD_WASM:-}" ] || ./scripts/build-web.sh >&2

out="$CARGO_TARGET_DIR/npm"
stage="$out/loupe-crop"
rm -rf "$stage" && mkdir -p "$stage/widget" "$stage/pkg"
# The app's files, in the app's layout (the widget imports ../client.js).
cp www/client.js www/worker.js www/weights.js "$stage/"
cp www/widget/loupe-crop.js www/widget/crop-urls.js "$stage/widget/"
cp www/pkg/loupe.js www/pkg/loupe_bg.wasm "$stage/pkg/"
# The threaded CPU build, where it was built (its worker helper is a wasm-bindgen snippet).
if [ -f www/pkg-threads/loupe_bg.wasm ]; then cp -r www/pkg-threads "$stage/pkg-threads"; fi
cp npm/package.json npm/README.md npm/index.d.ts npm/crop-urls.d.ts "$stage/"
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
(cd "$stage" && npm pkg set version="$version")
(cd "$out" && npm pack --silent ./loupe-crop >&2)
tarball="$out/loupe-crop-$version.tgz"
echo "packed: $(du -k "$tarball" | cut -f1) KB; unpacked: $(du -sk --apparent-size "$stage" | cut -f1) KB" >&2
echo "$tarball"
