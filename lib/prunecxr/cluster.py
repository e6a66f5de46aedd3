"""Ray: the seeds of a population, or of a sweep, as tasks on a cluster (``population="ray"``).

Notebooks 02 and 03 schedule their seeds one after another in their own process
(``population="sequential"``, the default) or as Ray tasks (``"ray"``), one task per seed. This
module is what both stages share: joining a cluster, what a task asks of it, checking that
every node sees the run's files, and bringing the tasks' progress and results back to the
driver (the process that runs the notebook). Ray is imported only here and in the stages'
``ray_tasks`` modules, and only when ``population="ray"`` is asked for.

The cluster
    ``address`` (the parameter ``ray_address``), else the environment variable
    ``RAY_ADDRESS``, names a running cluster to join (``"host:6379"``, or ``"auto"`` for one
    started with ``ray start`` on this machine). Without either, :func:`connect` starts a
    cluster on this machine and stops it when the call ends. A process that is already
    connected (``ray.init`` called by the user, or a test) keeps its connection. Ray is
    started quietly: no dashboard, the workers' output is not copied into the notebook, no
    usage statistics are sent (unless ``RAY_USAGE_STATS_ENABLED`` says otherwise), and the
    workers of a cluster started here run at this process's priority (Ray's default lowers
    it by 15; ``RAY_worker_niceness`` set by the user wins).

What a task asks for (:func:`task_options`)
    On CPUs ``num_cpus = threads`` (the intra-op threads of every model, so a node runs as many
    seeds at once as it has cores for); on GPUs ``num_gpus = gpus_per_model`` (a fraction
    lets several small models share one GPU) and one CPU. Tasks are spread over the nodes
    (Ray's ``SPREAD`` strategy) rather than packed onto the first. A task whose worker process
    or node dies is run again up to :data:`MAX_RETRIES` times; training resumes from the
    seed's last epoch checkpoint, so a retried seed ends with the weights of an uninterrupted
    one.

Where the files are (:func:`shared_paths`)
    Tasks read the image cache and write checkpoints by path, so every node must see
    ``PRUNECXR_HOME`` (the run directory) and ``PRUNECXR_CACHE`` at the same paths: a shared
    filesystem (``docs/cluster.md``). The driver writes a marker file into each folder the tasks
    need; a task on every node, and every seed's task when it starts, reads them back and stops
    with a message naming the node and the folder when it cannot.

Only the driver holds the run's lock (:mod:`prunecxr.runlock`); tasks never take it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import mmap
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import paths, runtime

__all__ = [
    "MAX_RETRIES",
    "POPULATION_MODES",
    "RelayReport",
    "SharedPaths",
    "SharedPathError",
    "capacity",
    "check_gpus_per_model",
    "check_nodes",
    "check_population",
    "completed",
    "connect",
    "node_id",
    "open_array",
    "relay",
    "share_array",
    "shared_paths",
    "task_device",
    "task_options",
    "task_paths",
]

#: how the seeds of a population or a sweep are scheduled; the results are the same either way
POPULATION_MODES = ("sequential", "ray")
#: times Ray runs a task again whose worker process or node died
MAX_RETRIES = 3
#: seconds between the driver's looks at the tasks' progress
POLL_SECONDS = 0.5

_started_here = False  # whether :func:`connect` started the cluster this process is connected to


class SharedPathError(RuntimeError):
    """A node of the cluster does not see a folder the tasks need."""


def check_population(population: Any) -> str:
    if population not in POPULATION_MODES:
        raise ValueError(
            f"unknown population mode {population!r}; choose one of {list(POPULATION_MODES)}"
        )
    return population


def check_gpus_per_model(value: Any) -> float:
    """The GPU share of one task: a fraction in (0, 1], or a whole number of GPUs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"gpus_per_model must be a number, got {value!r}")
    if value <= 0 or (value > 1 and value != int(value)):
        raise ValueError(
            f"gpus_per_model must be a fraction in (0, 1] (several models share a GPU) or a whole "
            f"number of GPUs, got {value!r}"
        )
    return float(value)


def _ray():
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a dependency of the package
        raise ImportError(
            "population='ray' needs the package ray (pip install 'ray==2.60.0', as pinned in "
            "pyproject.toml)"
        ) from err
    return ray


# -- the cluster ---------------------------------------------------------------------------
@contextlib.contextmanager
def connect(address: str = "") -> Iterator[None]:
    """Be connected to a Ray cluster for the duration of the ``with`` block.

    ``address`` names a running cluster; empty means ``RAY_ADDRESS`` if set, else a new
    cluster on this machine, stopped when the block ends. A process already connected keeps
    its connection (and the block leaves it open).
    """
    if not isinstance(address, str):
        raise ValueError(
            f"ray_address must be a string ('' for a cluster on this machine), got {address!r}"
        )
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    source = "the parameter ray_address" if address else "the environment variable RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS", "")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not address:  # the tasks do this process's work: at its priority (Ray's default is nice +15)
        os.environ.setdefault("RAY_worker_niceness", "0")
    global _started_here
    try:
        ray.init(
            address=address or "local",
            include_dashboard=False if not address else None,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    except ConnectionError as err:
        raise ConnectionError(
            f"cannot join the Ray cluster at {address!r} ({source}): {err}. Start it first "
            "(docs/cluster.md), or leave ray_address empty and RAY_ADDRESS unset for a cluster "
            "on this machine"
        ) from None
    _started_here = not address
    try:
        yield
    finally:
        _started_here = False
        ray.shutdown()


def _alive_nodes() -> list[dict]:
    return [n for n in _ray().nodes() if n.get("Alive")]


def _describe(node: Mapping) -> str:
    return (
        f"Ray node {node.get('NodeManagerHostname', '?')} ({node.get('NodeManagerAddress', '?')}, "
        f"node id {str(node.get('NodeID', '?'))[:12]})"
    )


def node_id() -> str:
    """The id of the Ray node this process runs on."""
    return _ray().get_runtime_context().get_node_id()


def task_device(device: str):
    """The device of the tasks: ``"auto"`` is CUDA when the cluster has GPUs, else the CPU.

    Ray gives each task its GPU(s), so a device index (``cuda:1``) is refused; the driver
    itself needs no GPU.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    gpus = _ray().cluster_resources().get("GPU", 0)
    if device == "auto":
        return torch.device("cuda" if gpus else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not gpus:
            raise ValueError(
                "device 'cuda' asked for, but the Ray cluster has no GPU "
                f"(resources: {dict(_ray().cluster_resources())}); use 'auto' or 'cpu'"
            )
        return torch.device("cuda")
    if isinstance(device, str) and device.startswith("cuda:"):
        raise ValueError(
            f"device {device!r}: with population='ray' Ray gives each task its GPU; use 'cuda' or 'auto'"
        )
    raise ValueError(f"device {device!r}: population='ray' runs on 'cpu' or 'cuda' (or 'auto')")


def task_options(device, *, threads: int | None, gpus_per_model: float) -> dict[str, Any]:
    """What one seed's task asks of the cluster, checked against its largest node."""
    nodes = _alive_nodes()
    if device.type == "cuda":
        share = check_gpus_per_model(gpus_per_model)
        largest = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
        if largest < share:
            raise ValueError(
                f"gpus_per_model={share:g}, but the largest node of the Ray cluster has {largest:g} GPU(s)"
            )
        return {
            "num_cpus": 1,
            "num_gpus": share,
            "max_retries": MAX_RETRIES,
            "scheduling_strategy": "SPREAD",
        }
    largest = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    if largest < threads:
        raise ValueError(
            f"threads={threads} CPUs per model, but the largest node of the Ray cluster has "
            f"{largest:g}; set threads to at most {int(largest)}"
        )
    return {
        "num_cpus": threads,
        "num_gpus": 0,
        "max_retries": MAX_RETRIES,
        "scheduling_strategy": "SPREAD",
    }


def capacity(options: Mapping[str, Any]) -> tuple[int, int]:
    """``(tasks, nodes)``: how many such tasks the cluster's alive nodes run at once, and on
    how many nodes."""
    total, used = 0, 0
    for node in _alive_nodes():
        fits = [
            math.floor(node["Resources"].get(resource, 0) / options[k] + 1e-9)
            for k, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU"))
            if options.get(k)
        ]
        n = min(fits) if fits else 0
        total += n
        used += n > 0
    return total, used


# -- arrays --------------------------------------------------------------------------------
def share_array(array: np.ndarray) -> tuple[str, Any]:
    """How a task gets ``array``: a whole memory-mapped file (the image cache) is mapped again
    from its path, on a shared filesystem; any other array goes once into Ray's object store."""
    if (
        isinstance(array, np.memmap)
        and isinstance(array.base, mmap.mmap)
        and array.filename
        and array.flags.c_contiguous
    ):
        return (
            "memmap",
            (str(array.filename), array.dtype.str, tuple(array.shape), int(array.offset)),
        )
    return ("object", _ray().put(np.ascontiguousarray(array)))


def open_array(handle: tuple[str, Any]) -> np.ndarray:
    """The array of one of :func:`share_array`'s handles (read-only)."""
    kind, value = handle
    if kind == "memmap":
        filename, dtype, shape, offset = value
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset)
    return _ray().get(value)


# -- the shared filesystem -----------------------------------------------------------------
MARKER = ".ray-shared-check"


@dataclass(frozen=True)
class SharedPaths:
    """What a task needs to find the run's files: the driver's ``PRUNECXR_HOME`` and
    ``PRUNECXR_CACHE``, and the marker files it wrote (``(what, folder, marker, token)``)."""

    home: str
    cache: str
    markers: tuple[tuple[str, str, str, str], ...]

    def missing(self) -> list[tuple[str, str]]:
        """``(what, folder)`` of every marker this process cannot read back."""
        out = []
        for what, folder, marker, token in self.markers:
            try:
                ok = Path(marker).read_text(encoding="utf-8") == token
            except OSError:
                ok = False
            if not ok:
                out.append((what, folder))
        return out


def _marker_name(folder: Path, owner: str) -> Path:
    return folder / f"{MARKER}-{hashlib.sha256(owner.encode()).hexdigest()[:16]}"


def _seen_on_node(shared: SharedPaths) -> tuple[str, list[tuple[str, str]]]:
    return node_id(), shared.missing()


def _refusal(where: str, missing: list[tuple[str, str]]) -> SharedPathError:
    what, folder = missing[0]
    return SharedPathError(
        f"{where} cannot see {folder} ({what}) as the driver on {socket.gethostname()} wrote it. "
        "Every node of the Ray cluster must see PRUNECXR_HOME and PRUNECXR_CACHE at the same "
        "paths: put them on a shared filesystem mounted alike on every node (docs/cluster.md)"
    )


@contextlib.contextmanager
def shared_paths(folders: Iterable[tuple[str, Path]], *, owner: str) -> Iterator[SharedPaths]:
    """Check that every alive node sees ``folders`` (``(what, folder)`` pairs); yield what
    tasks need.

    The driver writes a marker with a random token into each folder
    (``.ray-shared-check-<hash of owner>``; ``owner`` is the run directory, which one driver
    holds at a time), a task pinned to each node reads them back, and the markers stay until
    the block ends so that every seed's task checks them again (:func:`task_paths`).
    """
    token = secrets.token_hex(16)
    markers = []
    try:
        seen = set()
        for what, folder in folders:
            folder = Path(folder).resolve()
            if folder in seen:
                continue
            seen.add(folder)
            folder.mkdir(parents=True, exist_ok=True)
            marker = _marker_name(folder, owner)
            marker.write_text(token, encoding="utf-8")
            markers.append((what, str(folder), str(marker), token))
        shared = SharedPaths(
            home=str(paths.home()), cache=str(paths.cache_root()), markers=tuple(markers)
        )
        check_nodes(shared)
        yield shared
    finally:
        for _, _, marker, _ in markers:
            Path(marker).unlink(missing_ok=True)


def check_nodes(shared: SharedPaths) -> None:
    """Raise :class:`SharedPathError`, naming the node and the folder, unless a task pinned to
    each alive node reads back every marker of ``shared``."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = {n["NodeID"]: n for n in _alive_nodes()}
    probe = ray.remote(_seen_on_node)
    refs = [
        probe.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False),
        ).remote(shared)
        for nid in nodes
    ]
    for nid, missing in ray.get(refs):
        if missing:
            raise _refusal(_describe(nodes[nid]), missing)


@contextlib.contextmanager
def task_paths(shared: SharedPaths) -> Iterator[None]:
    """Inside a task: check the driver's markers, and resolve the run's paths as the driver
    does (its ``PRUNECXR_HOME`` and ``PRUNECXR_CACHE``) for the task's duration."""
    missing = shared.missing()
    if missing:
        raise _refusal(f"Ray node {socket.gethostname()} (node id {node_id()[:12]})", missing)
    with runtime.environment({paths.HOME_ENV: shared.home, paths.CACHE_ENV: shared.cache}):
        yield


# -- progress and results ------------------------------------------------------------------
class _Relay:
    """An actor that keeps the tasks' progress events until the driver takes them."""

    def __init__(self):
        self.events: list[tuple[str, tuple]] = []

    def put(self, name: str, args: tuple) -> None:
        self.events.append((name, args))

    def take(self) -> list[tuple[str, tuple]]:
        events, self.events = self.events, []
        return events


def relay():
    """A new progress relay (an actor needing no CPU), for :class:`RelayReport` and :func:`completed`."""
    return _ray().remote(_Relay).options(num_cpus=0).remote()


class RelayReport:
    """Inside a task: calls of any method (``report.epoch(...)``) become events for the driver.

    Sending does not wait; :meth:`flush` waits until every event sent has arrived, so that
    the driver sees them before the task's result.
    """

    def __init__(self, relay_actor):
        self.relay, self.last = relay_actor, None

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)

        def send(*args) -> None:
            self.last = self.relay.put.remote(name, args)

        return send

    def flush(self) -> None:
        if self.last is not None:
            _ray().get(self.last)


def completed(
    keys: Iterable[Any],
    submit: Callable[[Any], Any],
    relay_actor,
    on_event: Callable[[str, tuple], None],
    *,
    options: Mapping[str, Any],
) -> Iterator[tuple[Any, Any]]:
    """``(key, result)`` of the task ``submit(key)`` of each of ``keys`` as it finishes, while
    the relay's events go to ``on_event(name, args)``.

    On a cluster this process started, only as many tasks are in flight as the nodes can run
    at once with ``options`` (:func:`capacity`, read again before each submission): a queued
    task makes Ray start a spare worker process for it, and on a 2-core machine each start
    (about 1.5 CPU-seconds of imports) slowed the running seed's epoch by 1.2 s, a quarter
    of the default population's time. On a cluster it joined, every task is submitted at
    once, so that an autoscaler sees the whole demand.

    A task's error is raised here. When the caller stops early (an error, an interrupt), the
    tasks still running are cancelled: their workers are killed, and what they saved (each
    write is atomic) is where the next run resumes.
    """
    ray = _ray()
    pending = list(keys)
    running: dict[Any, Any] = {}

    def deliver():
        for name, args in ray.get(relay_actor.take.remote()):
            on_event(name, args)

    def fill():
        limit = max(capacity(options)[0], 1) if _started_here else len(pending) + len(running)
        while pending and len(running) < limit:
            key = pending.pop(0)
            running[submit(key)] = key

    try:
        fill()
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            deliver()
            for ref in done:
                key = running.pop(ref)
                result = ray.get(ref)
                fill()
                yield key, result
    except BaseException:
        for ref in running:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
