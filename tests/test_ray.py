"""population="ray": the seeds of training and of the sweep as Ray tasks (prunecxr.cluster).

One Ray cluster serves the whole module (starting one costs 10-20 s here): two nodes of one
CPU each, simulated on this machine with ``ray.cluster_utils.Cluster``, so that tasks of one
thread run side by side, one per node. The notebooks' own path (``ray.init()`` starting a
cluster on this machine from the kernel) is run by ``tests/test_reproducible.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import tiny_weigher
from prunecxr import artifacts, cluster, compress, data, paths
from prunecxr import train as T
from prunecxr.train import progress

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def two_nodes():
    """A Ray cluster of two one-CPU nodes on this machine; this process is its driver."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address, log_to_driver=False, logging_level="ERROR")
    nodes.wait_for_nodes()
    yield {"address": nodes.address, "ids": {n["NodeID"] for n in ray.nodes() if n["Alive"]}}
    ray.shutdown()
    nodes.shutdown()


def _fit(arrays, run, *, seeds=2, population="ray", epochs=3, **kw):
    cfg = T.TrainConfig(
        model="small_resnet",
        pretrained=False,
        max_epochs=epochs,
        patience=epochs,
        batch_size=32,
        lr=1e-3,
    )
    return T.fit_population(
        *arrays,
        seeds=seeds,
        config=cfg,
        run=run,
        device="cpu",
        population=population,
        threads=1,
        progress=False,
        **kw,
    )


def _same_weights(run_a, run_b, seeds) -> bool:
    for s in seeds:
        a, b = (
            torch.load(paths.run_paths(r).checkpoint(s), weights_only=True) for r in (run_a, run_b)
        )
        if list(a) != list(b) or not all(torch.equal(a[k], b[k]) for k in a):
            return False
        ha, hb = (artifacts.read_history(r, s).drop(columns="seconds") for r in (run_a, run_b))
        if not ha.equals(hb):
            return False
    return True


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:  # "pid (comm) state ppid ...", comm may hold spaces
        return int(fh.read().rsplit(b")", 1)[1].split()[1])


def _descends_from_here(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        if pid == me:
            return True
    return False


def _task_pids(name: str) -> list[int]:
    """Processes of this test's clusters running a Ray task of function ``name`` (Ray titles
    them ``ray::<name>``). Only this process's descendants: another test process (``make test
    TEST_JOBS=auto``) may be running Ray tasks of the same function at the same time."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().startswith(f"ray::{name}".encode()) and _descends_from_here(
                        int(entry)
                    ):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _snapshot(folder):
    return {f: f.stat().st_mtime_ns for f in folder.rglob("*") if f.is_file()}


# -- training and the sweep on two nodes, bit for bit ------------------------------------
def test_ray_trains_and_sweeps_on_both_nodes_with_the_sequential_bits(two_nodes):
    """Seeds as tasks on two nodes: the weights, the histories and the sweep's probabilities
    equal those of one seed after another with the same thread count, bit for bit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes without positives in so few patients
        data.prepare_run("seq", dataset="nih-phantom", resolution=16, max_patients=60)
        data.prepare_run("ray", dataset="nih-phantom", resolution=16, max_patients=60)
    recipe = dict(
        seeds=4,
        model="small_resnet",
        pretrained=False,
        max_epochs=2,
        patience=2,
        batch_size=64,
        lr=1e-3,
        device="cpu",
        threads=1,
        progress=False,
    )
    T.train_population("seq", population="sequential", **recipe)
    summary = T.train_population("ray", population="ray", **recipe)
    assert list(summary["status"]) == ["trained"] * 4
    assert _same_weights("seq", "ray", range(4))

    execution = artifacts.read_train_record("ray")["execution"]
    assert {
        k: execution[k] for k in ("population", "threads", "workers", "device", "gpus_per_model")
    } == {"population": "ray", "threads": 1, "workers": 2, "device": "cpu", "gpus_per_model": None}
    assert sorted(execution["nodes"], key=int) == ["0", "1", "2", "3"]
    assert set(execution["nodes"].values()) == two_nodes["ids"]  # both nodes trained seeds
    assert (
        T.plan_text("ray")
        == "Trained as Ray tasks, up to 2 at a time on 2 nodes, on cpu, 1 thread per model."
    )

    # tasks long enough (10 sparsities, batches of 8) that the second node starts one before
    # the first has done them all
    sweep = dict(
        methods=["global_l1", "random"],
        sparsities=[i / 10 for i in range(10)],
        device="cpu",
        batch_size=8,
        threads=1,
        progress=False,
    )
    compress.run_sweep("seq", population="sequential", **sweep)
    compress.run_sweep("ray", population="ray", **sweep)
    for method in sweep["methods"]:
        assert (
            paths.run_paths("seq").probs(method).read_bytes()
            == paths.run_paths("ray").probs(method).read_bytes()
        )
        records = [
            artifacts.read_json(paths.run_paths("ray").prune_work(method) / f"seed-{s}.json")
            for s in range(4)
        ]
        assert {r["node"] for r in records} == two_nodes["ids"]  # both nodes swept seeds
        assert all(r["threads"] == 1 and r["device"] == "cpu" for r in records)
    # tasks leave no marker behind, and a finished sweep is not recomputed, whichever mode asks
    assert not list(paths.home().rglob(f"{cluster.MARKER}*"))
    before = _snapshot(paths.run_paths("ray").root / "prune")
    compress.run_sweep("ray", population="sequential", **sweep)
    assert _snapshot(paths.run_paths("ray").root / "prune") == before


def test_an_attended_population_trains_on_ray_with_the_sequential_bits(two_nodes, arrays):
    """Notebook 09's arms as Ray tasks: the adaptive HTL weigher travels without its images,
    scores the ones its task opened, and gives the weights and HTL sets of the sequential run;
    the tasks start from the branch points the sequential run wrote."""
    branch = T.checkpoints.Branch(paths.home() / "att-branch")
    status = {}
    for run, population in (("att-seq", "sequential"), ("att-ray", "ray")):
        w, attention = tiny_weigher("htl", run, arrays)
        status[run] = _fit(
            arrays,
            run,
            seeds=2,
            population=population,
            epochs=2,
            weigher=w,
            attention=attention,
            branch=branch,
        )["status"].tolist()
    assert status == {"att-seq": ["trained"] * 2, "att-ray": ["branched"] * 2}
    assert _same_weights("att-seq", "att-ray", range(2))
    for s in range(2):
        seq, on_ray = (
            artifacts.read_parquet(paths.run_paths(r).attend_epoch(s, 1))
            for r in ("att-seq", "att-ray")
        )
        assert seq.equals(on_ray) and seq["htl"].any()
    assert artifacts.read_train_record("att-ray")["attention"]["arm"] == "htl"


# -- faults --------------------------------------------------------------------------------
def test_a_killed_worker_is_retried_and_resumes_to_the_same_weights(two_nodes, arrays, monkeypatch):
    starts = []
    start = progress.Report.start

    def recorded(self, label, epoch):
        starts.append((label, epoch))
        return start(self, label, epoch)

    monkeypatch.setattr(progress.Report, "start", recorded)
    rp, epochs, errors = paths.run_paths("killed"), 8, []

    def fit():
        try:
            _fit(arrays, "killed", epochs=epochs)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    runner = threading.Thread(target=fit)
    runner.start()
    deadline = time.monotonic() + 120
    while not all(rp.train_state(s).exists() for s in (0, 1)):  # both seeds past epoch 1
        assert time.monotonic() < deadline and runner.is_alive(), errors
        time.sleep(0.05)
    victims = _task_pids("train_seed_task")
    assert victims, "no Ray worker is training"
    for pid in victims:  # every training worker: one of them may be in its last epoch already
        os.kill(pid, signal.SIGKILL)
    runner.join(timeout=300)
    assert not runner.is_alive() and not errors, errors

    assert any(epoch > 0 for _, epoch in starts), f"no seed restarted from a checkpoint: {starts}"
    _fit(arrays, "whole", population="sequential", epochs=epochs)
    assert _same_weights("killed", "whole", (0, 1))
    assert not any(rp.train_state(s).exists() for s in (0, 1))


_DRIVER = textwrap.dedent("""
    # no `if __name__ == "__main__":` guard: Ray workers never import this script
    import numpy as np
    from prunecxr import train as T

    data = np.load({data!r})
    T.fit_population(data["tx"], data["ty"], data["vx"], data["vy"], seeds=2,
                     config=T.TrainConfig(**{config!r}), run="driver", device="cpu", population="ray",
                     threads=1, progress=False)
""")


def test_killing_the_driver_stops_its_tasks_and_a_rerun_continues(two_nodes, arrays, tmp_path):
    epochs = 8
    config = dict(
        model="small_resnet",
        pretrained=False,
        max_epochs=epochs,
        patience=epochs,
        batch_size=32,
        lr=1e-3,
    )
    np.savez(tmp_path / "data.npz", tx=arrays[0], ty=arrays[1], vx=arrays[2], vy=arrays[3])
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(data=str(tmp_path / "data.npz"), config=config))
    env = dict(os.environ, RAY_ADDRESS=two_nodes["address"])  # joins the module's cluster
    driver = subprocess.Popen(
        [sys.executable, str(script)], env=env, stderr=subprocess.PIPE, text=True
    )
    rp = paths.run_paths("driver")
    deadline = time.monotonic() + 120
    while not rp.train_state(0).exists():
        assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read()
        time.sleep(0.05)
    driver.kill()
    driver.communicate()

    deadline = time.monotonic() + 30  # the cluster ends the dead driver's tasks
    while _task_pids("train_seed_task"):
        assert time.monotonic() < deadline, "the dead driver's tasks go on training"
        time.sleep(0.1)
    before = _snapshot(rp.models)  # nothing writes the run any more
    time.sleep(1.5)
    assert _snapshot(rp.models) == before
    assert not all(rp.checkpoint(s).exists() for s in (0, 1))

    again = _fit(arrays, "driver", epochs=epochs)
    assert "resumed" in set(again["status"])
    _fit(arrays, "whole", population="sequential", epochs=epochs)
    assert _same_weights("driver", "whole", (0, 1))


# -- the cluster's checks ------------------------------------------------------------------
def test_a_node_that_does_not_see_the_run_is_named(two_nodes, tmp_path):
    folder = tmp_path / "runs" / "x"
    folder.mkdir(parents=True)
    with cluster.shared_paths([("the run directory", folder)], owner="x") as shared:
        assert len(list(folder.glob(f"{cluster.MARKER}-*"))) == 1  # read back by both nodes
    assert not list(folder.glob(f"{cluster.MARKER}-*"))
    unseen = cluster.SharedPaths(
        home=shared.home,
        cache=shared.cache,
        markers=(("the run directory", str(folder), str(folder / ".gone"), "token"),),
    )
    with pytest.raises(cluster.SharedPathError) as err:
        cluster.check_nodes(unseen)
    message = str(err.value)
    assert f"cannot see {folder} (the run directory)" in message and "shared filesystem" in message
    assert any(f"node id {nid[:12]}" in message for nid in two_nodes["ids"])


def test_what_a_task_asks_of_the_cluster(two_nodes):
    cpu = torch.device("cpu")
    assert cluster.task_device("auto") == cpu  # no GPU in this cluster
    assert cluster.task_options(cpu, threads=1, gpus_per_model=1.0) == {
        "num_cpus": 1,
        "num_gpus": 0,
        "max_retries": cluster.MAX_RETRIES,
        "scheduling_strategy": "SPREAD",
    }
    assert cluster.capacity({"num_cpus": 1, "num_gpus": 0}) == (2, 2)
    with pytest.raises(
        ValueError,
        match=r"threads=2 CPUs per model, but the largest node .* has 1; set threads to at most 1",
    ):
        cluster.task_options(cpu, threads=2, gpus_per_model=1.0)
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        cluster.task_device("cuda")
    with pytest.raises(ValueError, match="Ray gives each task its GPU; use 'cuda' or 'auto'"):
        cluster.task_device("cuda:1")


def test_arrays_reach_tasks_by_path_or_through_the_object_store(two_nodes, tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    whole = np.load(path, mmap_mode="r")
    labels = np.eye(2, dtype=np.uint8)
    handles = [cluster.share_array(a) for a in (whole, whole[1:], labels)]
    assert [h[0] for h in handles] == [
        "memmap",
        "object",
        "object",
    ]  # the cache file is mapped again
    for handle, array in zip(handles, (whole, whole[1:], labels)):
        np.testing.assert_array_equal(cluster.open_array(handle), array)


def test_a_started_cluster_gets_only_the_tasks_it_can_run(two_nodes, monkeypatch):
    """On a cluster the driver started, queued tasks made Ray start spare workers: at most
    ``capacity`` tasks are in flight. On a joined cluster, all at once (an autoscaler's demand)."""

    def _nap(key):  # nested: Ray ships it by value (workers cannot import the test module)
        import time

        time.sleep(0.2)
        return key * 10

    options = {"num_cpus": 1, "num_gpus": 0}
    task = ray.remote(_nap).options(**options)
    relay = cluster.relay()
    for started_here, most in ((True, 2), (False, 5)):
        monkeypatch.setattr(cluster, "_started_here", started_here)
        submitted, finished, refs, peak = [], [], [], [0]

        # submit runs only inside this iteration, so its loop variables are this iteration's
        def submit(key):  # tasks in flight: the unfinished ones and this one
            unfinished = ray.wait(refs, num_returns=len(refs), timeout=0)[1] if refs else []
            peak[0] = max(peak[0], len(unfinished) + 1)
            submitted.append(key)
            refs.append(task.remote(key))
            return refs[-1]

        for key, result in cluster.completed(
            range(5), submit, relay, lambda *_: None, options=options
        ):
            finished.append(key)
            assert result == key * 10
        assert sorted(finished) == list(range(5)) and submitted == list(range(5))
        assert peak[0] == most, started_here
