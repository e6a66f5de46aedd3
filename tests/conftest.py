"""Every test writes under a temporary PRUNECXR_HOME, never into the checkout."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def prunecxr_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("PRUNECXR_HOME", str(home))
    monkeypatch.setenv("PRUNECXR_CACHE", str(home / "cache"))
    return home


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from a second, and on a busy machine it
    mostly waits. Modules of small models use it with ``pytestmark``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run `python -m prunecxr run --profile smoke` once per session into a fresh PRUNECXR_HOME.

    Shared by test_end_to_end.py and test_artifacts_contract.py; tests only read it.
    """
    from prunecxr import paths

    home = tmp_path_factory.mktemp("e2e-home")
    env = dict(os.environ, PRUNECXR_HOME=str(home), PRUNECXR_CACHE=str(home / "cache"))
    assert any(paths.notebooks_dir().glob("[0-9][0-9]_*.ipynb")), (
        f"no notebooks in {paths.notebooks_dir()}"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "prunecxr", "run", "--profile", "smoke"],
        cwd=paths.project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, (
        f"the smoke run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-6000:]}"
    )
    return {"home": home, "elapsed": elapsed, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="module")
def arrays():
    """Tiny learnable data: class c brightens quadrant c of a 16 px image (train, then val:
    images and labels). Shared by the training and Ray tests."""
    rng = np.random.default_rng(0)
    n, c = 128, 4
    labels = (rng.random((n, c)) < 0.4).astype(np.uint8)
    images = rng.integers(0, 80, (n, 16, 16)).astype(np.uint8)
    for k in range(c):
        r, q = divmod(k, 2)
        images[labels[:, k] == 1, 8 * r : 8 * r + 8, 8 * q : 8 * q + 8] += 100
    return images[:96], labels[:96], images[96:], labels[96:]


@pytest.fixture
def started_stage():
    """Start notebook ``stage`` of ``run`` as the notebook would (``px.start_stage``), with its
    declared defaults updated by ``values``; a stage still running is finished when the test
    ends."""
    from prunecxr import config, paths, stages

    started = []

    def start(stage, run, **values):
        nb = stages.read_notebook(paths.notebooks_dir() / f"{stage}.ipynb")
        namespace = {name: p.default for name, p in nb.parameters.items()} | values | {"run": run}
        if not paths.run_paths(run).run_json.exists():
            config.init_run(run, profile=None)
        config.start_stage(stage, namespace)
        started.append((stage, run))
        return config.stage_parameters(stage, run=run)

    yield start
    for stage, run in dict.fromkeys(started):
        if stage in config.read_run(run).get("running", {}):  # a test may have finished it
            config.finish_stage(stage, run=run)
