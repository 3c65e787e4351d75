"""Catalogue throughput on this machine, three doors onto the same code, one table:

  - `loupe score`, one process per photo (what a naive shell loop does),
  - `loupe batch --batch 8` (one process, decoding beside batched forward passes),
  - the Ray Data pipeline (read_binary_files -> map_batches(LoupeScorer) -> write_parquet).

Prints images/s and the projected cost of a million photos in core-hours (wall time x the cores
the run may use). Not a test: run it by hand, e.g. after ./scripts/test-python.sh built the wheel:

    LOUPE_BIN=/var/tmp/loupe-target/debug/loupe /var/tmp/loupe-venv/bin/python python/bench/batch_throughput.py --copies 8
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
PHOTOS = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "cmyk.jpg", "exif_orientation6.jpg", "coffee_240.png"]
WEIGHTS = [str(REPO / "weights" / f"{n}.loupe") for n in ("backbone", "regression", "histogram")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="copies of the 6 fixture photos")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores the runs may use")
    args = parser.parse_args()
    loupe_bin = os.environ.get("LOUPE_BIN") or shutil.which("loupe")
    weight_args = [a for w in WEIGHTS for a in ("-w", w)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        for copy in range(args.copies):
            (root / f"set{copy}").mkdir(parents=True)
            for name in PHOTOS:
                shutil.copy(FIXTURES / name, root / f"set{copy}" / name)
        files = sorted(str(p) for p in root.rglob("*") if p.is_file())
        n = len(files)
        results = []

        started = time.perf_counter()
        for path in files:
            subprocess.run([loupe_bin, "score", "--json", *weight_args, path], check=True, capture_output=True)
        results.append(("`loupe score`, one process per photo", time.perf_counter() - started))

        started = time.perf_counter()
        subprocess.run([loupe_bin, "batch", "-q", *weight_args, str(root), "-o", f"{tmp}/cli", "--batch", "8"], check=True, capture_output=True)
        results.append(("`loupe batch --batch 8`", time.perf_counter() - started))

        import ray
        from loupe.ray import LoupeScorer

        ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        try:
            started = time.perf_counter()
            ds = ray.data.read_binary_files(str(root), include_paths=True)
            ds.map_batches(LoupeScorer, batch_size=8, concurrency=1).write_parquet(f"{tmp}/ray")
            results.append(("Ray Data pipeline (1 actor, batch 8; includes model load)", time.perf_counter() - started))
        finally:
            ray.shutdown()

    print(f"{n} photos (the test fixtures, 96x64 to 640x427), default weights (full VGG16), {args.cores} cores, {sys.platform}\n")
    print("| door | seconds | images/s | core-hours per million photos |")
    print("|---|---|---|---|")
    for name, seconds in results:
        rate = n / seconds
        print(f"| {name} | {seconds:.1f} | {rate:.2f} | {1e6 / rate / 3600 * args.cores:.0f} |")


if __name__ == "__main__":
    main()
