"""Each seed's share of the sweep as a Ray task (``population="ray"``; :mod:`prunecxr.cluster`).

A task loads the seed's dense checkpoint from the run directory (on a filesystem every node
sees), runs the sweep's per-seed function (:func:`prunecxr.compress.sweep.sweep_seed`, handed
over by the sweep) with the same thread count, batch size and test images as
``population="sequential"`` would, and returns the probabilities through
Ray's object store: the driver writes them (:func:`prunecxr.compress.sweep.sweep_method`), so
a task needs no write access to the run. The test images go into the object store once per
sweep. A task whose worker or node dies is run again by Ray from the seed's start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .. import cluster, inference, paths, runtime

__all__ = ["RaySweep", "sweep_seed_task"]


def sweep_seed_task(
    unit: Callable[..., np.ndarray],
    run: str,
    method: str,
    seed: int,
    images: np.ndarray,
    *,
    levels: Sequence[float],
    n_classes: int,
    batch_size: int,
    device: str,
    threads: int | None,
    calibration,
    recovery,
    shared: cluster.SharedPaths,
    relay,
) -> tuple[np.ndarray, str]:
    """One seed's sweep inside a Ray task: ``(probabilities [K, N, C], node id)``, where
    ``unit`` is :func:`prunecxr.compress.sweep.sweep_seed`."""
    dev = torch.device(device)
    with cluster.task_paths(shared):
        if dev.type == "cpu":
            runtime.keep_freed_memory()
        report = cluster.RelayReport(relay)
        with runtime.num_threads(threads):
            x = inference.preprocessed(torch.from_numpy(np.array(images)).to(dev))
            block = unit(
                method,
                seed,
                load_model=inference.model_loader(run, dev),
                images=x,
                levels=levels,
                n_classes=n_classes,
                batch_size=batch_size,
                calibration=calibration,
                recovery=recovery,
                device=dev,
                step=report.step,
            )
        report.flush()
    return block, cluster.node_id()


class RaySweep:
    """A sweep's connection to Ray: its device, task options, test images in the object store.

    Made by :meth:`start` for one :func:`prunecxr.compress.run_sweep` call and handed to
    :func:`prunecxr.compress.sweep.sweep_method` (``on_ray``) for each method.
    """

    def __init__(
        self,
        run: str,
        images_ref,
        *,
        device: torch.device,
        threads: int | None,
        options: dict[str, Any],
        shared: cluster.SharedPaths,
        relay,
    ):
        self.run, self.images_ref, self.device = run, images_ref, device
        self.threads, self.options, self.shared, self.relay = threads, options, shared, relay

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        run: str,
        images: torch.Tensor,
        *,
        device: str,
        threads: int,
        gpus_per_model: float,
        address: str,
    ) -> Iterator[RaySweep]:
        """Join (or start) the cluster, check that its nodes see the run, share ``images``."""
        import ray

        cluster.check_gpus_per_model(gpus_per_model)
        with cluster.connect(address):
            dev = cluster.task_device(device)
            n_threads = runtime.check_threads(threads) if dev.type == "cpu" else None
            options = cluster.task_options(dev, threads=n_threads, gpus_per_model=gpus_per_model)
            rp = paths.run_paths(run)
            with cluster.shared_paths(
                [("the run directory, under PRUNECXR_HOME", rp.root)], owner=str(rp.root)
            ) as shared:
                ref = ray.put(images.cpu().numpy())
                yield cls(
                    run,
                    ref,
                    device=dev,
                    threads=n_threads,
                    options=options,
                    shared=shared,
                    relay=cluster.relay(),
                )

    def blocks(
        self,
        unit: Callable[..., np.ndarray],
        method: str,
        seeds: Sequence[int],
        *,
        levels: Sequence[float],
        n_classes: int,
        batch_size: int,
        calibration=None,
        recovery=None,
        step: Callable[[], None],
    ) -> Iterator[tuple[int, np.ndarray, str]]:
        """``(seed, probabilities, node id)`` of each seed as its task of ``unit`` (the
        sweep's per-seed function) finishes."""
        import ray

        if not seeds:
            return
        task = ray.remote(sweep_seed_task).options(**self.options)

        def submit(seed):
            return task.remote(
                unit,
                self.run,
                method,
                seed,
                self.images_ref,
                levels=list(levels),
                n_classes=n_classes,
                batch_size=batch_size,
                device=str(self.device),
                threads=self.threads,
                calibration=calibration,
                recovery=recovery,
                shared=self.shared,
                relay=self.relay,
            )

        for seed, (block, node) in cluster.completed(
            seeds, submit, self.relay, lambda name, args: step(), options=self.options
        ):
            yield seed, block, node
