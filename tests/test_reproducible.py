"""The same command on the same machine gives the same bits, however the seeds are scheduled.

The session's smoke run (``conftest.smoke_run``) is repeated in a fresh home for notebooks
01-03 and 08 (every prediction store: pruning, weight quantization, int8, channel pruning), with
the seeds trained and swept as Ray tasks on a cluster that each notebook starts on this machine
(``population=ray``) instead of one after another. Every prediction store must be bit-identical
to the first run's: the same bits from a second run, in another home, and whichever way the
seeds are scheduled. (The smoke profile pins ``threads = 1``: the thread count per model is
part of the arithmetic, and it is what makes the two schedules comparable; on a 2-core machine
Ray runs two seeds side by side.) One rerun checks both: each was a run of its own before, and
the two took a fifth of the suite's time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import without_png
from prunecxr import config, paths

pytestmark = pytest.mark.slow
RUN = config.load_profile("smoke")["run"]


def _rerun(home, *overrides: str, notebooks: str = "01-03") -> None:
    env = without_png(dict(os.environ, PRUNECXR_HOME=str(home), PRUNECXR_CACHE=str(home / "cache")))
    args = [
        sys.executable,
        "-m",
        "prunecxr",
        "run",
        "--profile",
        "smoke",
        "--notebooks",
        notebooks,
        "--no-report",
    ]
    for item in overrides:
        args += ["-p", item]
    proc = subprocess.run(
        args, cwd=paths.project_root(), env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _stores(home) -> dict[str, str]:
    """sha256 of every ``probs.npy`` under ``runs/<run>/prune/``, by method."""
    root = home / "runs" / RUN / "prune"
    out = {
        p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*/probs.npy")
    }
    assert out, f"no probs.npy under {root}"
    return out


def _first(request) -> dict[str, str]:
    """The stores of the session's smoke run, asked for only after a test's own run, so that
    under pytest-xdist another worker makes the smoke run meanwhile (conftest.py)."""
    return _stores(request.getfixturevalue("smoke_run")["home"])


def test_a_second_run_with_seeds_as_ray_tasks_gives_the_same_bits(request, tmp_path):
    assert config.load_profile("smoke")["population"] == "sequential"
    _rerun(tmp_path, "population=ray", notebooks="01-03,08")
    first = _first(request)
    run = tmp_path / "runs" / RUN
    assert (
        json.loads((run / "models" / "train.json").read_text())["execution"]["population"] == "ray"
    )
    pruning = config.load_profile("smoke")["methods"]
    records = [p for m in pruning for p in run.glob(f"prune/{m}/work/seed-*.json")]
    assert records and all("node" in json.loads(p.read_text()) for p in records)  # Ray's sweep
    assert _stores(tmp_path) == first
    assert set(first) > set(pruning)  # 08's stores too
