"""Seeds side by side in CPU processes (``population="parallel"``).

This process and ``workers - 1`` helper processes each train one seed at a time with
``threads`` intra-op threads, exactly as :func:`prunecxr.train.loop.train_seed` trains it
in ``sequential`` mode with the same count: the weights are the same bit for bit. Whoever is
free takes the next seed, so this process trains from the start while the helpers start up
(spawn, imports), and a slow start costs nothing but their share.

Helpers are started with ``spawn``, which imports the calling script again: a script must
keep its top level under ``if __name__ == "__main__":`` (notebooks need nothing). A helper
dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and a check at every epoch boundary), so
a killed run leaves no writer behind; every write is atomic.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import artifacts, paths, runtime
from .feed import DeviceSplit
from .loop import train_seed
from .progress import Report
from .recipe import TrainConfig

__all__ = ["array_handles", "open_array", "train_parallel"]

_WORKER: dict[str, Any] = {}


class _QueueReport:
    """A helper's stand-in for :class:`Report`: the events go to the parent through a queue."""

    def __init__(self, queue, parent: int):
        self.queue, self.parent = queue, parent

    def __getattr__(self, name):
        if name not in ("start", "epoch", "final", "stop"):
            raise AttributeError(name)

        def send(*args):
            if os.getppid() != self.parent:  # the parent died: stop at this epoch boundary
                os._exit(1)
            self.queue.put((name, args))

        return send


class _LockedReport:
    """A :class:`Report` shared by this process's training and the helpers' events."""

    def __init__(self, report: Report):
        self.report, self.lock = report, threading.Lock()

    def __getattr__(self, name):
        method = getattr(self.report, name)

        def call(*args):
            with self.lock:
                return method(*args)

        return call


def _die_with_parent(parent: int) -> None:
    """Make this helper die with its parent, so a killed run leaves no writer behind."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def array_handles(arrays: Sequence[np.ndarray], folder: Path) -> list[tuple]:
    """How a helper process opens each array again, without receiving its data.

    An array that is a whole memory-mapped file (the image cache) is mapped again from that
    file; any other is saved once to ``folder`` as ``.npy``. Spawn sends a helper's arguments
    through a pipe, and a helper that dies before reading a large argument leaves the
    sending thread blocked for good; handles keep that message small.
    """
    handles = []
    for i, a in enumerate(arrays):
        if (isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.filename
                and a.flags.c_contiguous):
            handles.append(("memmap", str(a.filename), a.dtype.str, tuple(a.shape), int(a.offset)))
        else:
            path = folder / f"array-{i}.npy"
            np.save(path, np.ascontiguousarray(a), allow_pickle=False)
            handles.append(("npy", str(path)))
    return handles


def open_array(handle: tuple) -> np.ndarray:
    """The array of one of :func:`array_handles`' handles, memory-mapped."""
    if handle[0] == "memmap":
        _, filename, dtype, shape, offset = handle
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset)
    return artifacts.load_npy(handle[1], mmap=True)


def _worker_init(queue, handles, parent: int, threads: int, processes: int) -> None:
    torch.set_num_threads(threads)
    runtime.keep_freed_memory()
    _die_with_parent(parent)
    tx, ty, vx, vy = (open_array(h) for h in handles)
    cpu = torch.device("cpu")
    _WORKER.update(queue=queue, parent=parent,
                   train=DeviceSplit(tx, ty, cpu, processes=processes),
                   val=DeviceSplit(vx, vy, cpu, processes=processes))
    queue.put(("_pid", (os.getpid(),)))


def _worker_train(seed: int, config: TrainConfig, meta: dict[str, Any], rp: paths.RunPaths) -> None:
    train_seed(seed, _WORKER["train"], _WORKER["val"], config=config, meta=meta, rp=rp,
               device=torch.device("cpu"), progress=False,
               report=_QueueReport(_WORKER["queue"], _WORKER["parent"]))


def train_parallel(seeds: Sequence[int], arrays: Sequence[np.ndarray], *, config: TrainConfig,
                   meta: dict[str, Any], rp: paths.RunPaths, threads: int, workers: int,
                   report: Report) -> None:
    """Train ``seeds`` in this process and ``workers - 1`` helpers, ``threads`` threads each.

    ``arrays`` are the train images, train labels, val images and val labels.
    """
    import multiprocessing
    import queue as queue_module
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    remaining, lock = deque(seeds), threading.Lock()

    def take():
        with lock:
            return remaining.popleft() if remaining else None

    shared = _LockedReport(report)
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    pids: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    fed = threading.Event()  # the feeder has nothing more to hand out, or stopped
    # The helpers are started by the feeder thread (ProcessPoolExecutor spawns them in
    # submit), and PR_SET_PDEATHSIG kills them when the thread that started them ends, not
    # the process: so the feeder stays until the pool has shut its helpers down cleanly.
    release = threading.Event()

    def drain():
        while True:
            try:
                name, args = events.get_nowait()
            except queue_module.Empty:
                return
            if name == "_pid":
                pids.append(args[0])
            else:
                getattr(shared, name)(*args)

    pool = None
    scratch = tempfile.TemporaryDirectory(prefix="prunecxr-train-")
    if workers > 1:
        handles = array_handles(arrays, Path(scratch.name))
        pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=ctx, initializer=_worker_init,
                                   initargs=(events, handles, os.getpid(), threads, workers))

    def feed():  # keeps every helper busy, relays their progress, notes their errors
        running = set()
        try:
            while not stop.is_set():
                while len(running) < workers - 1:
                    seed = take()
                    if seed is None:
                        break
                    running.add(pool.submit(_worker_train, seed, config, meta, rp))
                if not running:
                    return
                done, running = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    future.result()
        except BrokenProcessPool as err:
            errors.append(RuntimeError(
                "a helper training process died before finishing its seed. Helpers are started "
                "with spawn, which imports the calling script again: a script that trains with "
                "population='parallel' must keep its top level under "
                "`if __name__ == '__main__':` (or train with population='sequential')."
            ).with_traceback(err.__traceback__))
        except BaseException as err:  # a helper failed: this process stops at its next seed
            errors.append(err)
        finally:
            drain()
            fed.set()
            release.wait()

    feeder = threading.Thread(target=feed, name="prunecxr-train-feeder", daemon=True)
    if pool is not None:
        feeder.start()
    try:
        cpu = torch.device("cpu")
        with runtime.num_threads(threads):
            train = DeviceSplit(arrays[0], arrays[1], cpu, processes=workers)
            val = DeviceSplit(arrays[2], arrays[3], cpu, processes=workers)
            while not errors:
                seed = take()
                if seed is None:
                    break
                train_seed(seed, train, val, config=config, meta=meta, rp=rp, device=cpu,
                           progress=False, report=shared)
        if pool is not None:
            fed.wait()
        if errors:
            raise errors[0]
        if pool is not None:
            pool.shutdown(wait=True)  # the helpers exit on their own
    except BaseException:
        # interrupted, or a helper failed: stop the helpers now (every write is atomic)
        stop.set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        release.set()
        scratch.cleanup()
    if pool is not None:
        feeder.join()
    events.close()
    events.join_thread()
