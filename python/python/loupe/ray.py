"""Loupe on Ray Data: a callable class for ``Dataset.map_batches`` that loads the models once per
actor and returns rows with ``loupe batch``'s schema.

    import ray
    from loupe.ray import LoupeScorer

    ds = ray.data.read_binary_files("/data/photos", include_paths=True)
    ds = ds.map_batches(LoupeScorer, fn_constructor_kwargs={"task": "both", "aspects": ["1:1", "16:9"]},
                        batch_size=8, concurrency=4)
    ds.write_parquet("/data/loupe-scores")

The ``path`` column becomes each row's ``key``, so the rows equal those ``loupe batch`` writes
for the same files.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from . import Scorer, schema

__all__ = ["LoupeScorer"]


class LoupeScorer:
    """``map_batches`` callable: a batch with ``bytes`` (and ``path``) columns in, a pyarrow Table
    of Loupe rows out. task: "score", "crop" or "both"; aspects: crop aspects ("W:H" or "WxH")."""

    def __init__(self, weights=None, device: str = "cpu", task: str = "score", aspects: Sequence[str] = ("1:1",),
                 candidates: int = 1000, seed: int = 0):
        if task not in ("score", "crop", "both"):
            raise ValueError(f"task is score, crop or both, not {task!r}")
        self.scorer = Scorer(weights, device)
        self.score = task != "crop"
        self.aspects = list(aspects) if task != "score" else []
        self.candidates = candidates
        self.seed = seed

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        datas = [bytes(b) for b in batch["bytes"]]
        keys = [str(p) for p in batch["path"]] if "path" in batch else None
        rows = self.scorer.rows(datas, keys=keys, score=self.score, aspects=self.aspects,
                                candidates=self.candidates, seed=self.seed)
        return pa.Table.from_pylist(rows, schema=schema())
