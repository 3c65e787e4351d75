"""Shared fixtures: the `loupe` binary built beside the wheel, the repo's photos and weights."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
WEIGHTS = [REPO / "weights" / f"{name}.loupe" for name in ("backbone", "regression", "histogram")]
PHOTOS = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "cmyk.jpg", "exif_orientation6.jpg", "coffee_240.png"]


def loupe_bin() -> str:
    path = os.environ.get("LOUPE_BIN") or shutil.which("loupe")
    if not path:
        pytest.fail("set LOUPE_BIN to the loupe binary (scripts/test-python.sh does)")
    return path


def run_loupe(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([loupe_bin(), *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"loupe {args} failed: {result.stderr}")
    return result


def weight_args():
    return [arg for w in WEIGHTS for arg in ("-w", str(w))]


def cli_json(*args):
    return json.loads(run_loupe(*args).stdout.splitlines()[0])


@pytest.fixture(scope="session")
def scorer():
    import loupe

    return loupe.Scorer()


@pytest.fixture
def catalogue(tmp_path):
    """A folder of copies of the fixture photos: `copies` x 6 distinct keys."""

    def make(copies: int) -> Path:
        root = tmp_path / "catalogue"
        for copy in range(copies):
            folder = root / f"set{copy}"
            folder.mkdir(parents=True)
            for name in PHOTOS:
                shutil.copy(FIXTURES / name, folder / name)
        return root

    return make
