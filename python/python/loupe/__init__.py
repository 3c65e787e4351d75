"""Loupe: image-aesthetics scores (1..10, with the predicted rating distribution) and best crops,
computed locally by the same Rust code as the ``loupe`` command line.

    >>> import loupe
    >>> scorer = loupe.Scorer()                   # the default weights, on the CPU
    >>> scorer.score("photo.jpg")["score"]        # also bytes, or a numpy HxWx3 uint8 array
    >>> scorer.crop("photo.jpg", aspect="16:9")   # {"x": ..., "width": ..., "score": ..., "focal": {"x": ..., "y": ...}}

Results are plain dicts with the columns of ``loupe batch`` (see ``loupe.SCHEMA``). A photo Loupe
cannot use raises ``loupe.LoupeError`` with the message the command line gives; the ``*_batch``
methods return such photos as rows whose ``error`` says why instead of raising.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence, Union

import numpy as np

from ._loupe import Engine, LoupeError, __version__

__all__ = ["Scorer", "LoupeError", "SCHEMA", "schema", "__version__"]

Image = Union[str, "os.PathLike[str]", bytes, np.ndarray]


def _weight_files(weights) -> list[bytes]:
    """Weight files' bytes from None (the defaults), a folder, or one or more paths."""
    if weights is None:
        return []
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(".loupe"))
            if not names:
                raise LoupeError(f"{path}: no .loupe weight files in this folder")
            weights = [os.path.join(path, n) for n in names]
        else:
            weights = [path]
    files = []
    for path in weights:
        try:
            with open(path, "rb") as f:
                files.append(f.read())
        except OSError as e:
            raise LoupeError(f"cannot read {path}: {e.strerror}") from None
    return files


class Scorer:
    """Loupe's models on one device.

    weights: None for the default weights (compiled into the package), a folder of ``.loupe``
    files, or a list of files (a backbone and its heads, or whole models).
    device: "cpu", or "wgpu" / "vulkan" / "cuda" (``kind:N`` for the N-th GPU) where the package
    was built with them.
    """

    def __init__(self, weights=None, device: str = "cpu"):
        self._engine = Engine(_weight_files(weights), device)

    @property
    def model_id(self) -> str:
        """The weights' id, as in ``loupe batch`` output folders and rows."""
        return self._engine.model_id

    def score(self, image: Image, key: str | None = None) -> dict[str, Any]:
        """Score, percentile among AVA photos, rating histogram and its std for one photo."""
        return _one(self.score_batch([image], keys=None if key is None else [key]))

    def crop(self, image: Image, aspect: str | None = None, width: int | None = None, height: int | None = None,
             candidates: int = 1000, seed: int = 0) -> dict[str, Any]:
        """The best crop of one photo: ``aspect`` "W:H" or an exact ``width`` x ``height``."""
        row = _one(self.crop_batch([image], aspect=aspect, width=width, height=height, candidates=candidates, seed=seed))
        return row["crops"][0]

    def score_batch(self, images: Sequence[Image], keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per photo (scored in batches); unusable photos are rows with an ``error``."""
        return self.rows(images, keys=keys, score=True, aspects=())

    def crop_batch(self, images: Sequence[Image], aspect: str | None = None, width: int | None = None,
                   height: int | None = None, candidates: int = 1000, seed: int = 0,
                   keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per photo with its best crop in ``crops``; unusable photos are error rows."""
        return self.rows(images, keys=keys, score=False, aspects=[_shape(aspect, width, height)],
                         candidates=candidates, seed=seed)

    def rows(self, images: Sequence[Image], keys: Sequence[str] | None = None, score: bool = True,
             aspects: Iterable[str] = (), candidates: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
        """Rows exactly as ``loupe batch`` writes them, in the order given. ``images`` may mix
        paths, encoded bytes and numpy arrays; ``keys`` name the rows (default: the path, or
        the position for bytes and arrays)."""
        images = list(images)
        keys = [_default_key(image, i) for i, image in enumerate(images)] if keys is None else [str(k) for k in keys]
        if len(keys) != len(images):
            raise ValueError(f"{len(keys)} keys for {len(images)} images")
        tasks = {"score": bool(score), "aspects": [str(a) for a in aspects], "candidates": int(candidates), "seed": int(seed)}
        rows: list[dict[str, Any] | None] = [None] * len(images)
        # Group by kind of input, one call (and one set of batched forward passes) per kind.
        groups: dict[str, list[int]] = {"path": [], "bytes": [], "pixels": []}
        for i, image in enumerate(images):
            groups[_kind(image)].append(i)
        engine = self._engine
        if groups["path"]:
            at = groups["path"]
            out = engine.rows_from_paths([keys[i] for i in at], tasks)
            _place(rows, at, out)
        if groups["bytes"]:
            at = groups["bytes"]
            out = engine.rows_from_bytes([keys[i] for i in at], [bytes(images[i]) for i in at], tasks)
            _place(rows, at, out)
        # Arrays are copied on their way in: a batch of them at a time, not all at once.
        for start in range(0, len(groups["pixels"]), _ARRAYS_PER_CALL):
            at = groups["pixels"][start:start + _ARRAYS_PER_CALL]
            arrays = [_rgb_array(images[i]) for i in at]
            out = engine.rows_from_pixels([keys[i] for i in at], [a.tobytes() for a in arrays],
                                          [a.shape[1] for a in arrays], [a.shape[0] for a in arrays], tasks)
            _place(rows, at, out)
        return rows  # type: ignore[return-value]


# Loupe's batch size (loupe.scorer.DEFAULT_BATCH): one forward pass per call.
_ARRAYS_PER_CALL = 8


def _kind(image) -> str:
    if isinstance(image, np.ndarray):
        return "pixels"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(image, (str, os.PathLike)):
        return "path"
    raise TypeError(f"an image is a path, bytes or a numpy HxWx3 uint8 array, not {type(image).__name__}")


def _default_key(image, index: int) -> str:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else str(index)


def _rgb_array(array: np.ndarray) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3:
        raise LoupeError(f"a numpy image must be HxWx3 (RGB), not {array.shape}")
    if array.dtype != np.uint8:
        raise LoupeError(f"a numpy image must be uint8 (0..255), not {array.dtype}")
    return np.ascontiguousarray(array)


def _place(rows: list, at: list[int], out: list[str]) -> None:
    for i, text in zip(at, out):
        rows[i] = json.loads(text)


def _one(rows: list[dict[str, Any]]) -> dict[str, Any]:
    row = rows[0]
    if row["error"] is not None:
        raise LoupeError(row["error"])
    return row


def _shape(aspect: str | None, width: int | None, height: int | None) -> str:
    if width is not None or height is not None:
        if aspect is not None or width is None or height is None:
            raise ValueError("give either aspect='W:H' or both width= and height=")
        return f"{int(width)}x{int(height)}"
    return aspect or "1:1"


def schema():
    """The Arrow schema of ``loupe batch`` rows (needs pyarrow)."""
    import pyarrow as pa

    focal = pa.struct([pa.field(n, pa.float32(), nullable=False) for n in ("x", "y")])
    crop = pa.struct([
        pa.field("aspect", pa.string(), nullable=False),
        *[pa.field(n, pa.uint32(), nullable=False) for n in ("x", "y", "width", "height")],
        *[pa.field(n, pa.float32(), nullable=False) for n in ("score", "percentile")],
        pa.field("focal", focal, nullable=False),
    ])
    return pa.schema([
        pa.field("key", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("loupe_version", pa.string(), nullable=False),
        pa.field("width", pa.uint32()),
        pa.field("height", pa.uint32()),
        pa.field("score", pa.float32()),
        pa.field("percentile", pa.float32()),
        pa.field("histogram", pa.list_(pa.field("item", pa.float32()))),
        pa.field("std", pa.float32()),
        pa.field("crops", pa.list_(pa.field("item", crop)), nullable=False),
        pa.field("error", pa.string()),
        pa.field("ms", pa.float32(), nullable=False),
    ])


def __getattr__(name: str):
    # loupe.SCHEMA without importing pyarrow for users who never ask for it.
    if name == "SCHEMA":
        return schema()
    raise AttributeError(name)
