"""The sweep: every trained seed × every sparsity of each method → ``prune/<method>/probs.npy``.

For each seed the dense checkpoint is loaded once (:func:`prunecxr.inference.load_model`);
each method ranks its weights once (:func:`prunecxr.compress.methods.create_pruner`), and for
each sparsity the dense weights are copied back and the pruned ones set to zero, so inference
runs on plain weights (:func:`prunecxr.inference.predict`, float32, no autocast). The sweep's
sparsity-0 probabilities are therefore those of notebook 02's dense models, bit for bit, on
one machine with one thread count.

Reproducible by default. The CPU thread count changes the rounding of the forward pass, so
it is never chosen by timing: it is the ``threads`` argument (0 = all usable cores,
:func:`prunecxr.runtime.usable_cores`), and every seed's record says which count, device and
batch size its probabilities were computed with.

Resumable per seed. Each finished seed is saved atomically to ``work/seed-<s>.npy`` with a
record of what it was computed from (``work/seed-<s>.json``, ``docs/artifacts.md``); a later
sweep skips every seed whose record matches, whether its block is still a partial file or
already merged into ``probs.npy``.

Scheduled one after another here (``population="sequential"``) or as Ray tasks
(``"ray"``, :mod:`prunecxr.compress.ray_tasks`): either way each seed's share is
:func:`sweep_seed`. A task's probabilities come back through Ray's object store and this
process writes them, so tasks never write the run directory; the bits are the same.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import artifacts, cluster, data, inference, paths, runtime
from .methods import METHODS, check_method, check_sparsities, create_pruner, pruned_magnitudes


# =========================================================================================
# The run's test images and dense models
# =========================================================================================
def load_test_images(run: str, classes: Sequence[str], n_test: int) -> torch.Tensor:
    """The test images of ``run``, uint8 ``[N, H, W]`` in memory, checked against its labels."""
    split = data.open_split(run, "test")
    if list(split.classes) != list(classes):
        raise ValueError(
            f"the test split of run {run!r} has classes {list(split.classes)}, but labels.parquet "
            f"has {list(classes)}; re-run notebook 01_data"
        )
    if len(split.images) != n_test:
        raise ValueError(
            f"the test split of run {run!r} has {len(split.images)} images, but labels.parquet "
            f"has {n_test} test rows; re-run notebook 01_data"
        )
    return torch.from_numpy(np.array(split.images, dtype=np.uint8))  # read into memory once


def check_models_fit_data(run: str, classes: Sequence[str], image_shape: tuple[int, int]) -> None:
    """Refuse to evaluate models trained on other data than the run's current test split.

    Notebook 01 can be rerun (at another resolution, with other classes) after notebook 02
    trained the models; evaluating the old models on the new images would give numbers that
    mean nothing. ``models/train.json`` records what the models were trained on.
    """
    record = artifacts.read_train_record(run)
    where = paths.run_paths(run).train_config
    trained_shape = tuple(int(x) for x in record["image_shape"])
    if trained_shape != tuple(image_shape):
        raise ValueError(
            f"the models of run {run!r} were trained on {trained_shape[0]}×{trained_shape[1]} images "
            f"({where}), but the run's image cache now holds {image_shape[0]}×{image_shape[1]} test "
            "images: notebook 01_data was rerun with another resolution. Rerun notebook 01_data with "
            f"resolution={trained_shape[0]}, or retrain with notebook 02_train in a new run"
        )
    trained_classes = record.get("classes")
    if trained_classes is not None and list(trained_classes) != list(classes):
        raise ValueError(
            f"the models of run {run!r} were trained on the classes {list(trained_classes)} ({where}), "
            f"but labels.parquet now has {list(classes)}: notebook 01_data was rerun on other data. "
            "Rerun it as before, or retrain with notebook 02_train in a new run"
        )
    if int(record["num_classes"]) != len(classes):
        raise ValueError(
            f"the models of run {run!r} have {record['num_classes']} outputs ({where}), but "
            f"labels.parquet has {len(classes)} classes; rerun notebook 01_data as before"
        )


def dense_magnitudes(run: str) -> Iterator[np.ndarray]:
    """The pruned set's ``|w|`` of every trained dense model of ``run``, one seed at a time.

    One float32 vector per seed (:func:`prunecxr.compress.methods.pruned_magnitudes`), for
    :func:`prunecxr.analysis.overall.magnitude_summary` (Fig. 1, right). A run whose
    predictions were imported has no checkpoints and yields nothing.
    """
    load = inference.model_loader(run, "cpu")
    for seed in artifacts.trained_seeds(run):
        yield pruned_magnitudes(load(seed))


def store_summary(run: str, methods: Sequence[str]) -> pd.DataFrame:
    """One row per method: the axes of its ``probs.npy`` (seeds, sparsities, test images,
    classes) and what the method does."""
    rows = []
    for method in artifacts.method_order(methods):
        probs, meta = artifacts.read_store(run, method)
        rows.append({
            "method": method,
            "seeds": len(meta["seeds"]),
            "sparsities": len(meta["sparsities"]),
            "test images": probs.shape[2],
            "classes": len(meta["classes"]),
            "description": METHODS[method].description,
        })
    return pd.DataFrame(rows)


# =========================================================================================
# One method's sweep
# =========================================================================================
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _finished_block(
    run: str, method: str, seed: int, record: dict[str, Any], final: tuple[np.ndarray, dict] | None
) -> np.ndarray | None:
    """The seed's ``[K, N, C]`` probabilities if a previous sweep finished it, else None.

    A seed counts as finished when its record (written after its probabilities) matches
    ``record`` exactly — same sparsities, classes, test images, checkpoint bytes, device,
    threads and batch size — and its probabilities are still there: in its partial file, or
    in the merged ``probs.npy``.
    """
    work = paths.run_paths(run).prune_work(method)
    record_path, partial = work / f"seed-{seed}.json", work / f"seed-{seed}.npy"
    if not record_path.exists():
        return None
    try:
        found = artifacts.read_json(record_path)
    except ValueError:
        return None
    found.pop("node", None)  # where the seed ran (population="ray") does not change its bits
    if found != record:
        return None
    if partial.exists():
        return artifacts.load_npy(partial, mmap=True)
    if final is not None:
        probs, meta = final
        if (
            seed in meta["seeds"]
            and artifacts.same_sparsities(meta["sparsities"], record["sparsities"])
            and meta["classes"] == record["classes"]
        ):
            return probs[meta["seeds"].index(seed)]
    return None


def _up_to_date(final, method, seeds, sparsities, classes, n_test) -> bool:
    """Whether the merged store already holds exactly these seeds, sparsities and classes."""
    if final is None:
        return False
    probs, meta = final
    return (
        meta["method"] == method
        and meta["seeds"] == [int(s) for s in seeds]
        and artifacts.same_sparsities(meta["sparsities"], sparsities)
        and meta["classes"] == list(classes)
        and probs.shape[2] == n_test
    )


def sweep_seed(
    method: str,
    seed: int,
    *,
    load_model: Callable[[int], nn.Module],
    images: torch.Tensor,
    sparsities: Sequence[float],
    n_classes: int,
    batch_size: int,
    device: torch.device,
    step: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """One seed's share of a sweep: its probabilities ``[K, N, C]`` at each of the K sparsities.

    The dense model is loaded once and the method ranks its weights once; for each sparsity
    the dense weights are copied back and the pruned ones set to zero
    (:func:`prunecxr.compress.methods.create_pruner`), then ``images`` are predicted
    (:func:`prunecxr.inference.predict`); ``step`` is called after each sparsity. The same
    function runs in this process or in a Ray task (:mod:`prunecxr.compress.ray_tasks`), which
    gets it from :func:`sweep_method`.
    """
    model = load_model(seed)
    pruner = create_pruner(method, model, seed=seed)
    block = np.empty((len(sparsities), images.shape[0], n_classes), dtype=np.float32)
    for j, sparsity in enumerate(sparsities):
        pruner.apply(sparsity)
        probs = inference.predict(model, images, batch_size=batch_size, device=device)
        if probs.shape != block.shape[1:]:
            raise ValueError(f"seed {seed}'s model emits {probs.shape[1]} outputs for {n_classes} classes")
        block[j] = probs
        step()
    return block


def _blocks_here(method, seeds, *, load_model, images, device, threads, **unit) -> Iterator[tuple]:
    """``(seed, block, None)`` of each seed, computed in this process one after another."""
    with runtime.num_threads(threads):
        for seed in seeds:
            yield seed, sweep_seed(method, seed, load_model=load_model, images=images, device=device, **unit), None


def sweep_method(
    run: str,
    method: str,
    *,
    seeds: Sequence[int],
    sparsities: Sequence[float],
    load_model: Callable[[int], nn.Module],
    images: torch.Tensor,
    classes: Sequence[str],
    image_ids: Sequence[str],
    device: str | torch.device,
    batch_size: int,
    threads: int = 0,
    progress: bool = True,
    on_ray=None,
) -> Path:
    """One method's sweep over ``seeds × sparsities``; writes ``probs.npy`` and ``meta.json``.

    Parameters
    ----------
    load_model : callable
        ``seed → dense model of seed on device``, in eval mode (its weights those of
        ``runs/<run>/models/seed-<s>/model.pt``), e.g. :func:`prunecxr.inference.model_loader`.
    images : tensor
        The test images in the order of ``image_ids``: uint8 ``[N, H, W]``, or as
        :func:`prunecxr.inference.preprocessed` prepares them.
    device : the device of the models and images.
    batch_size : test images per forward pass.
    threads : int
        CPU intra-op threads of the forward passes, 0 for :func:`prunecxr.runtime.usable_cores`;
        recorded as null on a GPU, where it does not apply.
    on_ray : :class:`prunecxr.compress.ray_tasks.RaySweep`, optional
        Compute the seeds as Ray tasks on its cluster and device (``load_model``, ``images``
        and ``device`` are then its own); by default they are computed here, one after another.

    Returns
    -------
    Path
        ``prune/<method>/probs.npy``.

    Each finished seed is saved atomically to ``work/seed-<s>.npy`` with its record
    (``work/seed-<s>.json``). When all seeds are done the blocks are merged into
    ``probs.npy`` (:func:`prunecxr.artifacts.write_store`) and the partial files removed; the
    records stay as the store's provenance. Nothing is written when the store is already up
    to date.
    """
    from tqdm import tqdm

    check_method(method)
    sparsities = check_sparsities(sparsities)
    dev = on_ray.device if on_ray is not None else runtime.resolve_device(device)
    n_threads = runtime.check_threads(threads) if dev.type == "cpu" else None
    rp = paths.run_paths(run)
    work = rp.prune_work(method)
    work.mkdir(parents=True, exist_ok=True)
    artifacts.remove_stale_temporaries(work)
    artifacts.remove_stale_temporaries(rp.prune_dir(method))
    try:
        final = artifacts.read_store(run, method, mmap=True)
    except (FileNotFoundError, ValueError):
        final = None

    ids_digest = hashlib.sha256("\n".join(image_ids).encode()).hexdigest()
    records = {
        seed: {
            "method": method,
            "seed": int(seed),
            "sparsities": [float(s) for s in sparsities],
            "classes": list(classes),
            "test_image_ids_sha256": ids_digest,
            "checkpoint_sha256": _sha256(rp.checkpoint(seed)),
            "device": dev.type,
            "threads": n_threads,
            "batch_size": int(batch_size),
        }
        for seed in seeds
    }
    n_test, k = images.shape[0], len(sparsities)
    pending = [seed for seed in seeds if _finished_block(run, method, seed, records[seed], final) is None]
    computed = 0
    bar = tqdm(total=len(seeds) * k, initial=(len(seeds) - len(pending)) * k, desc=method, unit="model",
               disable=not progress, mininterval=5)
    unit = dict(sparsities=sparsities, n_classes=len(classes), batch_size=batch_size, step=lambda: bar.update(1))
    if on_ray is not None:
        blocks = on_ray.blocks(sweep_seed, method, pending, **unit)
    else:
        blocks = _blocks_here(method, pending, load_model=load_model, images=images, device=dev,
                              threads=n_threads, **unit)
    for seed, block, node in blocks:
        artifacts.save_npy(work / f"seed-{seed}.npy", block)
        artifacts.write_json(work / f"seed-{seed}.json",
                             records[seed] if node is None else {**records[seed], "node": node})
        computed += 1
    bar.close()

    partials = any(work.glob("seed-*.npy"))  # a partial is newer than probs.npy
    if computed or partials or not _up_to_date(final, method, seeds, sparsities, classes, n_test):
        blocks = (_finished_block(run, method, s, records[s], final) for s in seeds)
        artifacts.write_store(
            run, method, seeds=seeds, sparsities=sparsities, classes=classes, n_test=n_test, blocks=blocks,
        )
    for partial in work.glob("seed-*.npy"):
        partial.unlink()
    return rp.probs(method)


# =========================================================================================
# The stage (notebook 03)
# =========================================================================================
def run_sweep(
    run: str,
    *,
    methods: Sequence[str],
    sparsities: Sequence[float],
    device: str = "auto",
    batch_size: int = 256,
    seeds: Sequence[int] | None = None,
    threads: int = 0,
    population: str = "sequential",
    ray_address: str = "",
    gpus_per_model: float = 1.0,
    progress: bool = True,
) -> dict[str, Path]:
    """Prune every trained seed of ``run`` with each method at each sparsity; store the probs.

    Parameters
    ----------
    run : str
        A run whose models notebook 02_train has trained.
    methods : list of str
        Keys of :data:`prunecxr.compress.methods.METHODS`.
    sparsities : list of float
        Strictly increasing fractions in [0, 1], starting with 0.0 (the dense model, the
        baseline of every comparison).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (:func:`prunecxr.runtime.resolve_device`).
    batch_size : int
        Test images per forward pass.
    seeds : list of int, optional
        Defaults to every trained seed.
    threads : int
        CPU intra-op threads of the forward passes; 0 (the default) is every usable core.
        Never measured: the count changes the rounding, so it is a choice, and it is recorded
        in each seed's ``work/seed-<s>.json``. Does not apply on a GPU.
    population : str
        ``"sequential"`` (the seeds one after another in this process) or ``"ray"`` (each
        seed's sweep a Ray task, :mod:`prunecxr.compress.ray_tasks`; the probabilities come
        back to this process, which writes them); the same bits either way.
    ray_address : str
        With Ray, the cluster to join; empty means ``RAY_ADDRESS`` if set, else a cluster
        started on this machine for this call.
    gpus_per_model : float
        With Ray on GPUs, the GPU share of each seed's task.

    Returns
    -------
    dict
        ``method → prune/<method>/probs.npy``.
    """
    methods = [check_method(m) for m in methods]
    sparsities = check_sparsities(sparsities)
    if sparsities[0] != 0.0:
        raise ValueError(
            f"sparsities must start with 0.0 (the dense model, the baseline of every "
            f"comparison); got {sparsities[0]!r} first"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    runtime.check_threads(threads)
    cluster.check_population(population)
    trained = artifacts.trained_seeds(run)
    seeds = trained if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise FileNotFoundError(f"run {run!r} has no trained model: run notebook 02_train first")
    missing = sorted(set(seeds) - set(trained))
    if missing:
        raise FileNotFoundError(f"run {run!r} has no trained model for seeds {missing} (trained: {trained})")
    _, classes, image_ids = artifacts.read_test_labels(run)
    test_images = load_test_images(run, classes, len(image_ids))
    check_models_fit_data(run, classes, tuple(test_images.shape[1:]))
    with contextlib.ExitStack() as stack:
        on_ray = load = None
        if population == "ray":
            from .ray_tasks import RaySweep

            on_ray = stack.enter_context(RaySweep.start(run, test_images, device=device, threads=threads,
                                                        gpus_per_model=gpus_per_model, address=ray_address))
            dev, images = on_ray.device, test_images
        else:
            dev = runtime.resolve_device(device)
            images = inference.preprocessed(test_images.to(dev))
            load = inference.model_loader(run, dev)
        return {
            method: sweep_method(
                run, method, seeds=seeds, sparsities=sparsities, load_model=load, images=images,
                classes=classes, image_ids=image_ids, device=dev, batch_size=batch_size, threads=threads,
                progress=progress, on_ray=on_ray,
            )
            for method in methods
        }
