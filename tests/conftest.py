"""Every test writes under a temporary PRUNECXR_HOME, never into the checkout."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

#: test processes running side by side (pytest-xdist sets this in its workers; ``make test``)
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
# Two intra-op threads for a serial run; one per worker when the workers fill the cores, since
# OpenMP's threads spin at their barriers and a second thread then stalls on a busy core. For
# the same reason the processes the tests start (notebook kernels, scripts) let idle OpenMP
# threads sleep rather than spin.
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))
if WORKERS > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


#: the modules run first, longest first (minutes each, measured). ``make test`` (``pytest -n
#: auto --dist loadfile --no-loadscope-reorder``) gives each module whole to one worker in this
#: order: test_end_to_end makes the smoke run while test_reproducible, on another worker, makes
#: its own and then reads the smoke run (a file lock shares it, see ``smoke_run``). Grouping with
#: ``xdist_group`` marks (``--dist loadgroup``) does nothing with pytest 9.2: pytest-xdist 3.8.0
#: sets a node id attribute pytest no longer reads. Two things once made two processes unsafe,
#: and no longer do: notebook kernels started at the same instant took the same socket files
#: (each execution now has a folder of its own, ``prunecxr.runner.kernel_config``), and
#: test_ray killed every Ray task process of a name, test_reproducible's too (now only its own).
FIRST = ["test_end_to_end", "test_reproducible", "test_extending", "test_ray", "test_failures"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The order in which xdist hands out the modules (see :data:`FIRST`)."""

    def rank(item):
        module = item.module.__name__
        return FIRST.index(module) if module in FIRST else len(FIRST)

    items.sort(key=rank)


def without_png(env: dict) -> dict:
    """``env`` for a notebook run whose figures' PNGs no test reads: no Chrome is found
    (``prunecxr.figures.chrome_path`` honours ``BROWSER_PATH``), so no kernel starts one, which
    took 3 to 4 s per notebook here. The smoke run keeps its PNGs; test_end_to_end checks them."""
    return {**env, "BROWSER_PATH": "/nonexistent/no-chrome-for-this-run"}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run `python -m prunecxr run --profile smoke` once per test session into a fresh
    PRUNECXR_HOME; tests only read it.

    Once per session, not per process: under pytest-xdist the workers share a temporary root,
    and the first worker to ask makes the run there under a file lock while any other waits
    for it (only test_reproducible, which asks after its own run: see :data:`FIRST`).
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if WORKERS > 1:
        root = root.parent  # shared by the workers of this session
    record = root / "smoke-run.json"
    with FileLock(str(root / "smoke-run.lock")):
        if record.exists():
            made = json.loads(record.read_text())
            return {**made, "home": Path(made["home"])}
        made = _make_smoke_run(root / "e2e-home")
        record.write_text(json.dumps({**made, "home": str(made["home"])}))
        return made


def _make_smoke_run(home: Path) -> dict:
    from prunecxr import paths

    home.mkdir(parents=True)
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


def tiny_weigher(arm: str, run: str, arrays):
    """Notebook 09's weigher of ``arm`` on the training half of :func:`arrays` (attention of
    weight 3 on 10% of the images; HTL by pruning to 50%), and its ``attention`` record."""
    from prunecxr.attend import weights

    images, labels = arrays[0], arrays[1]
    return weights.create_weigher(
        arm,
        run=run,
        images=images,
        labels=labels,
        image_ids=[str(k) for k in range(len(images))],
        weight=3.0,
        sparsity=0.5,
        fraction=0.1,
        beta=0.99,
        batch_size=32,
    )


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
