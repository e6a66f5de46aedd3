"""The seeds of a population as Ray tasks (``population="ray"``; :mod:`prunecxr.cluster`).

Each pending seed is one task running :func:`prunecxr.train.loop.train_seed`, exactly as
``population="sequential"`` runs it in the driver: with ``threads`` intra-op threads on a
CPU, so the weights are the same bit for bit. A task reads the images from the run's image
cache by path (or, for arrays that are not a memory-mapped file, from Ray's object store)
and writes the seed's checkpoints into the run directory, both on a filesystem every node
sees. A task whose worker or node dies is run again by Ray and resumes from the seed's last
epoch checkpoint. Its progress goes to the driver's bars through a relay actor.

An attended population's weigher (:mod:`prunecxr.attend.weights`) travels with each task. One
that scores the training images (``AdaptiveHTL``) is sent without them (``for_task()``) and
bound in the task to the images the task opened (``bind(images)``), so the image cache is
read by path there too rather than copied through the object store with every task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import cluster, paths, runtime
from .feed import DeviceSplit
from .loop import train_seed
from .progress import Report
from .recipe import TrainConfig, deterministic

__all__ = ["train_on_ray", "train_seed_task"]


def train_seed_task(
    seed: int,
    arrays: Sequence[tuple],
    *,
    config: TrainConfig,
    meta: dict[str, Any],
    rp: paths.RunPaths,
    device: str,
    threads: int | None,
    processes: int,
    shared: cluster.SharedPaths,
    relay,
    weigher=None,
    branch=None,
) -> dict[str, Any]:
    """One seed's training inside a Ray task; returns the seed and the node that trained it."""
    dev = torch.device(device)
    with cluster.task_paths(shared):
        if dev.type == "cpu":
            runtime.keep_freed_memory()
        tx, ty, vx, vy = (cluster.open_array(h) for h in arrays)
        if hasattr(weigher, "bind"):
            weigher = weigher.bind(tx)
        report = cluster.RelayReport(relay)
        with deterministic(dev), runtime.num_threads(threads):
            train = DeviceSplit(tx, ty, dev, processes=processes)
            val = DeviceSplit(vx, vy, dev, processes=processes)
            train_seed(
                seed,
                train,
                val,
                config=config,
                meta=meta,
                rp=rp,
                device=dev,
                progress=False,
                report=report,
                weigher=weigher,
                branch=branch,
            )
        report.flush()
    return {"seed": seed, "node": cluster.node_id()}


def train_on_ray(
    seeds: Sequence[int],
    arrays: Sequence[np.ndarray],
    *,
    config: TrainConfig,
    meta: dict[str, Any],
    rp: paths.RunPaths,
    device: torch.device,
    options: dict[str, Any],
    threads: int | None,
    processes: int,
    report: Report,
    on_final: Callable[[int, str], None],
    weigher=None,
    branch=None,
) -> None:
    """Train ``seeds`` as Ray tasks of ``options`` (:func:`prunecxr.cluster.task_options`).

    ``arrays`` are the train images, train labels, val images and val labels; ``on_final``
    is called with each seed and its node as its task finishes; ``weigher`` is an attended
    population's (see the module's docstring). Needs a Ray connection
    (:func:`prunecxr.cluster.connect`).
    """
    import ray

    if hasattr(weigher, "for_task"):
        weigher = weigher.for_task()

    handles = [cluster.share_array(a) for a in arrays]
    folders = [("the run directory, under PRUNECXR_HOME", rp.root)]
    folders += [
        ("the image cache, PRUNECXR_CACHE", Path(value[0]).parent)
        for kind, value in handles
        if kind == "memmap"
    ]
    if branch is not None:
        folders.append(("the branch points, under PRUNECXR_HOME", Path(branch.folder)))
    with cluster.shared_paths(folders, owner=str(rp.root)) as shared:
        relay = cluster.relay()
        task = ray.remote(train_seed_task).options(**options)

        def submit(seed):
            return task.remote(
                seed,
                handles,
                config=config,
                meta=meta,
                rp=rp,
                device=str(device),
                threads=threads,
                processes=processes,
                shared=shared,
                relay=relay,
                weigher=weigher,
                branch=branch,
            )

        for seed, result in cluster.completed(
            seeds, submit, relay, lambda name, args: getattr(report, name)(*args), options=options
        ):
            on_final(seed, result["node"])
