"""The same command on the same machine gives the same bits, however the seeds are scheduled.

The session's smoke run (``conftest.smoke_run``) is repeated in two more fresh homes: once
exactly for notebooks 01-03 and 08 (every prediction store: pruning, weight quantization, int8,
channel pruning), once for notebooks 01-03 with the seeds trained and swept as Ray tasks on a
cluster that each notebook starts on this machine (``population=ray``) instead of one after
another. Every prediction store must be bit-identical to the first run's. (The smoke profile
pins ``threads = 1``: the thread count per model is part of the arithmetic, and it is what makes
the two schedules comparable; on a 2-core machine Ray runs two seeds side by side.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from prunecxr import config, paths

pytestmark = pytest.mark.slow
RUN = config.load_profile("smoke")["run"]


def _rerun(home, *overrides: str, notebooks: str = "01-03") -> None:
    env = dict(os.environ, PRUNECXR_HOME=str(home), PRUNECXR_CACHE=str(home / "cache"))
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


@pytest.fixture(scope="module")
def first(smoke_run):
    return _stores(smoke_run["home"])


def test_a_second_run_in_a_fresh_home_is_bit_identical(first, tmp_path):
    _rerun(tmp_path, notebooks="01-03,08")
    assert _stores(tmp_path) == first


def test_seeds_as_ray_tasks_give_the_same_bits(first, tmp_path):
    assert config.load_profile("smoke")["population"] == "sequential"
    _rerun(tmp_path, "population=ray")
    run = tmp_path / "runs" / RUN
    assert (
        json.loads((run / "models" / "train.json").read_text())["execution"]["population"] == "ray"
    )
    assert all("node" in json.loads(p.read_text()) for p in run.glob("prune/*/work/seed-*.json"))
    pruning = config.load_profile("smoke")["methods"]
    assert _stores(tmp_path) == {m: first[m] for m in pruning}
