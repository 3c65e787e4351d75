"""The Python package against the `loupe` command line: same scores, crops and error messages,
whatever the input (path, bytes, numpy), and `loupe batch` Parquet read back with pyarrow."""

import glob
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import loupe
from conftest import FIXTURES, cli_json, run_loupe, weight_args


@pytest.mark.parametrize("name", ["chelsea.jpg", "exif_orientation6.jpg", "cmyk.jpg"])
def test_scores_equal_the_cli(scorer, name):
    path = str(FIXTURES / name)
    row = scorer.score(path)
    said = cli_json("score", "--json", *weight_args(), path)
    assert abs(row["score"] - said["regression"]["score"]) < 1e-4
    assert abs(row["percentile"] - said["regression"]["percentile"]) < 1e-3
    assert abs(row["std"] - said["histogram"]["std"]) < 1e-4
    assert np.allclose(row["histogram"], said["histogram"]["histogram"], atol=1e-4)
    assert row["error"] is None and row["model_id"] == scorer.model_id


def test_bytes_and_numpy_input_equal_file_input(scorer):
    from PIL import Image

    path = FIXTURES / "coffee_240.png"  # lossless, no EXIF: its pixels are exactly what Loupe decodes
    from_file = scorer.score(str(path))
    from_bytes = scorer.score(path.read_bytes())
    pixels = np.asarray(Image.open(path).convert("RGB"))
    from_array = scorer.score(pixels)
    for row in (from_bytes, from_array):
        assert abs(row["score"] - from_file["score"]) < 1e-4
        assert np.allclose(row["histogram"], from_file["histogram"], atol=1e-4)
    assert from_bytes["content_sha256"] == from_file["content_sha256"]
    assert (from_array["width"], from_array["height"]) == (from_file["width"], from_file["height"])


def test_crop_equals_the_cli(scorer):
    path = str(FIXTURES / "rocket.jpg")
    crop = scorer.crop(path, aspect="16:9", candidates=60)
    said = cli_json("crop", "--json", *weight_args(), path, "--aspect", "16:9", "--candidates", "60")
    best = said["topCrop"]
    # The same field names as the CLI (and the browser's loupeCrop): smartcrop.js's.
    assert [crop[f] for f in ("x", "y", "width", "height")] == [best[f] for f in ("x", "y", "width", "height")]
    assert abs(crop["score"] - best["score"]) < 1e-4 and abs(crop["percentile"] - best["percentile"]) < 1e-3
    assert crop["focal"] == pytest.approx(said["focal"])
    sized = scorer.crop(path, width=200, height=100, candidates=20)
    assert (sized["width"], sized["height"], sized["aspect"]) == (200, 100, "200x100")


def test_bad_images_raise_the_cli_message(scorer, tmp_path):
    jpeg = (FIXTURES / "chelsea.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "out"
    run_loupe("batch", "-q", *weight_args(), tmp_path, "-o", out)
    cli_errors = {row["key"]: row["error"] for row in pq.read_table(glob.glob(f"{out}/model=*")[0]).to_pylist()}
    for path in (truncated, notes):
        with pytest.raises(loupe.LoupeError) as raised:
            scorer.score(str(path))
        assert str(raised.value) == cli_errors[str(path)]
    with pytest.raises(loupe.LoupeError, match="truncated JPEG"):
        scorer.score(truncated.read_bytes())
    with pytest.raises(loupe.LoupeError, match="cannot open"):
        scorer.score(str(tmp_path / "missing.jpg"))
    with pytest.raises(loupe.LoupeError, match="HxWx3"):
        scorer.score(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(loupe.LoupeError, match="uint8"):
        scorer.score(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(TypeError):
        scorer.score(42)
    # An array is held to the decoders' size limits, as a file of the same pixels would be.
    with pytest.raises(loupe.LoupeError, match=r"image too small: 1x1 \(need at least 16x16 pixels\)"):
        scorer.score(np.zeros((1, 1, 3), dtype=np.uint8))
    # More arrays than one call takes (8): each row still in its place, the tiny one an error row.
    arrays = [np.full((20 + i, 30, 3), 10 * i, dtype=np.uint8) for i in range(11)] + [np.zeros((2, 2, 3), dtype=np.uint8)]
    rows = scorer.score_batch(arrays)
    assert [row["height"] for row in rows[:11]] == [20 + i for i in range(11)]
    assert all(row["error"] is None for row in rows[:11]) and "too small" in rows[11]["error"]
    # The batch API reports bad photos as rows and still scores the good ones.
    rows = scorer.score_batch([str(notes), str(FIXTURES / "chelsea.jpg")])
    assert rows[0]["error"] and rows[0]["score"] is None
    assert rows[1]["error"] is None and rows[1]["score"] is not None


def test_batch_parquet_read_back_equals_score_and_crop(tmp_path):
    root = tmp_path / "photos"
    (root / "set0").mkdir(parents=True)
    for name in ("chelsea.jpg", "exif_orientation6.jpg"):
        shutil.copy(FIXTURES / name, root / "set0" / name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "out"
    done = run_loupe("batch", *weight_args(), root, "-o", out, "--task", "both", "--aspect", "1:1", "--candidates", "40", "-q")
    assert "(1 failed)" in done.stderr
    [model] = glob.glob(f"{out}/model=*")
    table = pq.read_table(model)
    assert table.schema.equals(loupe.SCHEMA, check_metadata=False)
    rows = {row["key"]: row for row in table.to_pylist()}
    assert len(rows) == 3
    assert rows[str(root / "broken.jpg")]["error"] and rows[str(root / "broken.jpg")]["score"] is None
    for name in ("chelsea.jpg", "exif_orientation6.jpg"):
        key = str(root / "set0" / name)
        said = cli_json("score", "--json", *weight_args(), key)
        assert abs(rows[key]["score"] - said["regression"]["score"]) < 1e-4
        assert np.allclose(rows[key]["histogram"], said["histogram"]["histogram"], atol=1e-4)
        best = cli_json("crop", "--json", *weight_args(), key, "--aspect", "1:1", "--candidates", "40")["topCrop"]
        crop = rows[key]["crops"][0]
        assert [crop[f] for f in ("x", "y", "width", "height")] == [best[f] for f in ("x", "y", "width", "height")]
