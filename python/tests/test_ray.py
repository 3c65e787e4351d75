"""The documented Ray Data pipeline gives the same rows as `loupe batch` over the same photos."""

import glob

import pyarrow.parquet as pq
import pytest

import loupe
from conftest import run_loupe, weight_args

ray = pytest.importorskip("ray")


def test_ray_pipeline_equals_loupe_batch(tmp_path, catalogue):
    from loupe.ray import LoupeScorer

    root = catalogue(4)  # 24 photos
    (root / "set0" / "notes.txt").write_text("not an image")
    cli_out = tmp_path / "cli"
    run_loupe("batch", "-q", *weight_args(), root, "-o", cli_out)
    [cli_model] = glob.glob(f"{cli_out}/model=*")
    expected = {row["key"]: row for row in pq.read_table(cli_model).to_pylist()}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.read_binary_files(str(root), include_paths=True)
        ds = ds.map_batches(LoupeScorer, batch_size=8, concurrency=1)
        ray_out = tmp_path / "ray"
        ds.write_parquet(str(ray_out))
    finally:
        ray.shutdown()
    table = pq.read_table(str(ray_out))
    assert table.schema.equals(loupe.SCHEMA, check_metadata=False)
    got = {row["key"]: row for row in table.to_pylist()}
    assert sorted(got) == sorted(expected) and len(got) == 25
    for key, row in got.items():
        want = expected[key]
        for column in ("content_sha256", "model_id", "loupe_version", "width", "height", "error", "crops"):
            assert row[column] == want[column], (key, column)
        if want["error"] is None:
            assert abs(row["score"] - want["score"]) < 1e-4, key
            assert max(abs(a - b) for a, b in zip(row["histogram"], want["histogram"])) < 1e-4, key
