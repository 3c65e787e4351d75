"""Score (and crop) a catalogue on Ray Data, with the same rows as `loupe batch`.

    pip install "loupe[ray]"   # or the wheel built from python/ with maturin
    python deploy/ray_pipeline.py /data/photos /data/loupe-results --task both --aspect 1:1 --aspect 16:9

On a cluster, run it as a Ray job (`ray job submit -- python ray_pipeline.py ...`) with paths
every node can read (s3://..., gs://... work too: Ray reads them, Loupe gets the bytes).
"""

import argparse

import ray

from loupe.ray import LoupeScorer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", help="folder or bucket prefix of photos")
    parser.add_argument("out", help="where the Parquet files go")
    parser.add_argument("--task", choices=["score", "crop", "both"], default="score")
    parser.add_argument("--aspect", action="append", default=None, help="crop aspect W:H (repeatable; default 1:1)")
    parser.add_argument("--actors", type=int, default=2, help="scorer actors (each loads the model once)")
    parser.add_argument("--cpus-per-actor", type=float, default=2)
    parser.add_argument("--batch", type=int, default=8, help="photos per forward pass")
    args = parser.parse_args()

    ray.init()
    ds = ray.data.read_binary_files(args.photos, include_paths=True)
    ds = ds.map_batches(
        LoupeScorer,
        fn_constructor_kwargs={"task": args.task, "aspects": args.aspect or ["1:1"]},
        batch_size=args.batch,
        concurrency=args.actors,
        num_cpus=args.cpus_per_actor,
    )
    ds.write_parquet(args.out)


if __name__ == "__main__":
    main()
