"""The sweep: every trained seed × every level of each method → ``prune/<method>/probs.npy``.

For each seed the dense checkpoint is loaded once (:func:`prunecxr.inference.load_model`);
each method builds its compressor once (:func:`prunecxr.compress.methods.create_compressor`:
a pruning method ranks its weights once), and each level compresses the dense model again
(for pruning: the dense weights are copied back and the pruned ones set to zero, so inference
runs on plain weights; :func:`prunecxr.inference.predict`, float32, no autocast). The sweep's
dense-level probabilities (sparsity 0, 32 bits, no channel removed) are therefore those of
notebook 02's dense models, bit for bit, on one machine with one thread count.

Reproducible by default. The CPU thread count changes the rounding of the forward pass, so
it is never chosen by timing: it is the ``threads`` argument (0 = all usable cores,
:func:`prunecxr.runtime.usable_cores`), and every seed's record says which count, device and
batch size its probabilities were computed with.

Scheduling. The seeds run one after another in this process (``population="sequential"``) or
as Ray tasks (``population="ray"``, :mod:`prunecxr.compress.ray_tasks`): both call the same
per-seed function (:func:`sweep_seed`) with the same thread count, and the probabilities come
back to this process, which writes them; the bits are the same either way.

Resumable per seed. Each finished seed is saved atomically to ``work/seed-<s>.npy`` with a
record of what it was computed from (``work/seed-<s>.json``, ``docs/artifacts.md``); a later
sweep skips every seed whose record matches, whether its block is still a partial file or
already merged into ``probs.npy``.
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

from .. import artifacts, cluster, config, data, events, inference, paths, runtime
from ..levels import axis as level_axis
from .compressor import CalibrationSet
from .importer import check_import_methods, import_predictions
from .methods import METHODS, ORIGINS, check_method, portable_name, pruned_magnitudes
from .recovery import Recovery, recovered_model


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
    """One row per method: the axes of its ``probs.npy`` (seeds, levels, test images,
    classes) and what the method does."""
    rows = []
    for method in artifacts.method_order(methods):
        probs, meta = artifacts.read_store(run, method)
        row = {"method": method, "seeds": len(meta["seeds"])}
        if all(METHODS[m].level_name == "sparsity" for m in methods if m in METHODS):
            row["sparsities"] = len(meta["levels"])  # the paper's table, unchanged
        else:
            row["levels"] = ", ".join(
                level_axis(meta["level_name"]).format(v) for v in meta["levels"]
            )
            row["recover"] = meta["recover"]
        row.update(
            {
                "test images": probs.shape[2],
                "classes": len(meta["classes"]),
                "description": METHODS[method].description
                if method in METHODS
                else meta.get("origin", ""),
            }
        )
        rows.append(row)
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
    ``record`` exactly — same levels, classes, test images, checkpoint bytes, device,
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
            and meta["level_name"] == record["level_name"]
            and artifacts.same_levels(meta["levels"], record["levels"])
            and meta["recover"] == record["recover"]["kind"]
            and meta["classes"] == record["classes"]
        ):
            return probs[meta["seeds"].index(seed)]
    return None


def _up_to_date(final, method, seeds, level_list, classes, n_test, recover="none") -> bool:
    """Whether the merged store already holds exactly these seeds, levels and classes."""
    if final is None:
        return False
    probs, meta = final
    return (
        meta["method"] == method
        and meta["seeds"] == [int(s) for s in seeds]
        and meta["level_name"] == METHODS[method].level_name
        and artifacts.same_levels(meta["levels"], level_list)
        and meta["recover"] == recover
        and meta["classes"] == list(classes)
        and probs.shape[2] == n_test
    )


def sweep_seed(
    method: str,
    seed: int,
    *,
    load_model: Callable[[int], nn.Module],
    images: torch.Tensor,
    levels: Sequence[float],
    n_classes: int,
    batch_size: int,
    device: torch.device,
    calibration: CalibrationSet | None = None,
    recovery: Recovery | None = None,
    step: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """One seed's share of a sweep: its probabilities ``[K, N, C]`` at each of the K levels.

    The dense model is loaded once and the method builds its compressor once (a pruning method
    ranks its weights once); each level compresses it (and recovers it, if asked), then
    ``images`` are predicted (:func:`prunecxr.inference.predict`); ``step`` is called after
    each level. The same function runs in this process or in a Ray task
    (:mod:`prunecxr.compress.ray_tasks`), which gets it from :func:`sweep_method`.
    """
    entry = METHODS[check_method(method)]
    recovery = recovery or Recovery()
    model = load_model(seed)
    compressor = entry.create(model, seed=seed, calibration=calibration)
    block = np.empty((len(levels), images.shape[0], n_classes), dtype=np.float32)
    for j, level in enumerate(levels):
        compressed = recovered_model(
            compressor,
            level,
            recovery,
            level_name=entry.level_name,
            calibration=calibration,
            seed=seed,
        )
        probs = inference.predict(compressed, images, batch_size=batch_size, device=device)
        if probs.shape != block.shape[1:]:
            raise ValueError(
                f"seed {seed}'s model emits {probs.shape[1]} outputs for {n_classes} classes"
            )
        block[j] = probs
        del compressed
        step()
    return block


def _blocks_here(method, seeds, *, load_model, images, device, threads, **unit) -> Iterator[tuple]:
    """``(seed, block, None)`` of each seed, computed in this process one after another."""
    with runtime.num_threads(threads):
        for seed in seeds:
            yield (
                seed,
                sweep_seed(
                    method, seed, load_model=load_model, images=images, device=device, **unit
                ),
                None,
            )


def sweep_method(
    run: str,
    method: str,
    *,
    seeds: Sequence[int],
    sparsities: Sequence[float] | None = None,
    load_model: Callable[[int], nn.Module],
    images: torch.Tensor,
    classes: Sequence[str],
    image_ids: Sequence[str],
    device: str | torch.device,
    batch_size: int,
    threads: int = 0,
    progress: bool = True,
    levels: Sequence[float] | None = None,
    calibration: CalibrationSet | None = None,
    recovery: Recovery | None = None,
    on_ray=None,
) -> Path:
    """One method's sweep over ``seeds × levels``; writes ``probs.npy`` and ``meta.json``.

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
    levels : the levels of the method's axis (:mod:`prunecxr.levels`), in compression order;
        ``sparsities`` is the same for a pruning method.
    calibration : training images, for the methods and recoveries that read them.
    recovery : how compressed models are recovered (:mod:`prunecxr.compress.recovery`);
        none by default.
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

    entry = METHODS[check_method(method)]
    if (levels is None) == (sparsities is None):
        raise ValueError(
            "sweep_method needs the levels (or, for a pruning method, the sparsities), once"
        )
    level_list = entry.axis.check_levels(levels if levels is not None else sparsities)
    recovery = recovery or Recovery()
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
            "level_name": entry.level_name,
            "levels": [float(s) for s in level_list],
            "recover": recovery.record(),
            "classes": list(classes),
            "test_image_ids_sha256": ids_digest,
            "checkpoint_sha256": _sha256(rp.checkpoint(seed)),
            "device": dev.type,
            "threads": n_threads,
            "batch_size": int(batch_size),
        }
        for seed in seeds
    }
    n_test, k = images.shape[0], len(level_list)
    pending = [
        seed for seed in seeds if _finished_block(run, method, seed, records[seed], final) is None
    ]
    computed = 0
    bar = tqdm(
        total=len(seeds) * k,
        initial=(len(seeds) - len(pending)) * k,
        desc=method,
        unit="model",
        disable=not progress,
        mininterval=5,
    )
    step = _SweepProgress(
        method,
        bar,
        seeds=seeds,
        pending=pending,
        levels=level_list,
        axis=entry.axis,
        in_order=on_ray is None,
    )
    unit = dict(
        levels=level_list,
        n_classes=len(classes),
        batch_size=batch_size,
        calibration=calibration,
        recovery=recovery,
        step=step,
    )
    if on_ray is not None:
        blocks = on_ray.blocks(sweep_seed, portable_name(method), pending, **unit)
    else:
        blocks = _blocks_here(
            method,
            pending,
            load_model=load_model,
            images=images,
            device=dev,
            threads=n_threads,
            **unit,
        )
    for seed, block, node in blocks:
        artifacts.save_npy(work / f"seed-{seed}.npy", block)
        artifacts.write_json(
            work / f"seed-{seed}.json",
            records[seed] if node is None else {**records[seed], "node": node},
        )
        computed += 1
    bar.close()

    partials = any(work.glob("seed-*.npy"))  # a partial is newer than probs.npy
    if (
        computed
        or partials
        or not _up_to_date(final, method, seeds, level_list, classes, n_test, recovery.kind)
    ):
        blocks = (_finished_block(run, method, s, records[s], final) for s in seeds)
        artifacts.write_store(
            run,
            method,
            seeds=seeds,
            levels=level_list,
            level_name=entry.level_name,
            classes=classes,
            n_test=n_test,
            blocks=blocks,
            recover=recovery.kind,
            origin=ORIGINS.get(method),
        )
    for partial in work.glob("seed-*.npy"):
        partial.unlink()
    return rp.probs(method)


class _SweepProgress:
    """The sweep's step callback: advances the bar and emits a progress event (task
    ``"sweep <method>"``, in models: one model is one seed at one level). Computed here,
    one seed after another, the detail names the seed and level; with Ray the seeds run
    side by side and only the count is given."""

    def __init__(self, method: str, bar, *, seeds, pending, levels, axis, in_order: bool):
        self.task, self.bar, self.levels, self.axis = f"sweep {method}", bar, list(levels), axis
        self.pending, self.in_order = list(pending), in_order
        self.total = len(seeds) * len(self.levels)
        self.before = (len(seeds) - len(self.pending)) * len(self.levels)
        self.count = 0
        self._emit()

    def _emit(self) -> None:
        detail = ""
        k = len(self.levels)
        if self.in_order and self.count < len(self.pending) * k:
            i, j = divmod(self.count, k)
            seed_no = self.before // k + i + 1  # the seeds already swept come first
            detail = (
                f"seed {self.pending[i]} ({seed_no}/{self.total // k}), "
                f"{self.axis.name} {self.levels[j]:g} ({j + 1}/{k})"
            )
        # a Ray task retried after its worker died steps again: the count never passes the total
        events.emit(
            self.task,
            done=min(self.before + self.count, self.total),
            total=self.total,
            unit="model",
            detail=detail,
        )

    def __call__(self) -> None:
        self.bar.update(1)
        self.count += 1
        self._emit()


# =========================================================================================
# The stage (notebook 03)
# =========================================================================================
def calibration_set(run: str, *, images: int = 256, batch_size: int = 32) -> CalibrationSet:
    """The training split of ``run`` as a :class:`~prunecxr.compress.compressor.CalibrationSet`
    (``images`` drawn per calibration, in batches of ``batch_size``)."""
    split = data.open_split(run, "train")
    return CalibrationSet(
        np.asarray(split.images), np.asarray(split.labels), batch_size=batch_size, n_images=images
    )


def method_levels(method: str, axes: dict[str, Sequence[float] | None]) -> list[float]:
    """The levels ``method`` computes from the lists of each axis (``sparsity`` → the
    ``sparsities``, ``bits``, ``channel_fraction``); a ValueError names a missing list."""
    entry = METHODS[check_method(method)]
    requested = axes.get(entry.level_name)
    if requested is None:
        raise ValueError(f"method {method!r} needs {entry.level_name} levels; none were given")
    return entry.levels(requested)


def run_sweep(
    run: str,
    *,
    methods: Sequence[str],
    sparsities: Sequence[float] | None = None,
    device: str = "auto",
    batch_size: int = 256,
    seeds: Sequence[int] | None = None,
    threads: int = 0,
    population: str = "sequential",
    ray_address: str = "",
    gpus_per_model: float = 1.0,
    progress: bool = True,
    bits: Sequence[int] | None = None,
    channel_fractions: Sequence[float] | None = None,
    calibration_images: int = 256,
    recover: str = "none",
    recover_batches: int = 8,
    finetune_epochs: int = 1,
    finetune_lr: float = 1e-4,
) -> dict[str, Path]:
    """Compress every trained seed of ``run`` with each method at each level; store the probs.

    Parameters
    ----------
    run : str
        A run whose models notebook 02_train has trained.
    methods : list of str
        Keys of :data:`prunecxr.compress.methods.METHODS`, names of installed packages'
        methods (entry point group ``prunecxr.methods``) or ``"module:function"`` of the
        user's code (:func:`prunecxr.compress.methods.check_method`); the returned dict
        names each by its registry name.
    sparsities, bits, channel_fractions : lists of levels
        The levels of each axis (:mod:`prunecxr.levels`), in compression order and starting
        with the dense model's (0.0, 32 bits, 0.0), the baseline of every comparison. Each
        method takes the list of its axis (those it supports: ``int8_ptq`` computes 32 and 8
        bits only).
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
        back to this process, which writes them); the same bits either way. A method that
        runs on the CPU only (``int8_ptq``) runs here when the Ray tasks are on GPUs.
    ray_address : str
        With Ray, the cluster to join; empty means ``RAY_ADDRESS`` if set, else a cluster
        started on this machine for this call.
    gpus_per_model : float
        With Ray on GPUs, the GPU share of each seed's task.
    calibration_images : int
        Training images a method that calibrates draws (``int8_ptq``).
    recover, recover_batches, finetune_epochs, finetune_lr
        Recovery of the compressed models (:class:`prunecxr.compress.recovery.Recovery`):
        ``"none"`` (the paper's), ``"bn"`` (BatchNorm statistics re-estimated on
        ``recover_batches`` training batches) or ``"finetune"`` (``finetune_epochs`` epochs at
        ``finetune_lr``, the compression kept). Recorded in ``meta.json``.

    Returns
    -------
    dict
        ``method → prune/<method>/probs.npy``.
    """
    methods = [check_method(m) for m in methods]
    recovery = Recovery(recover, batches=recover_batches, epochs=finetune_epochs, lr=finetune_lr)
    axes = {"sparsity": sparsities, "bits": bits, "channel_fraction": channel_fractions}
    plan = {m: method_levels(m, axes) for m in methods}
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
        raise FileNotFoundError(
            f"run {run!r} has no trained model for seeds {missing} (trained: {trained})"
        )
    _, classes, image_ids = artifacts.read_test_labels(run)
    test_images = load_test_images(run, classes, len(image_ids))
    check_models_fit_data(run, classes, tuple(test_images.shape[1:]))
    needs = recovery.kind != "none" or any(METHODS[m].needs_calibration for m in methods)
    calibration = calibration_set(run, images=calibration_images) if needs else None
    inputs: dict[torch.device, tuple[torch.Tensor, Callable[[int], nn.Module]]] = {}

    def on(device: torch.device):  # test images and models on a device, prepared once
        if device not in inputs:
            inputs[device] = (
                inference.preprocessed(test_images.to(device)),
                inference.model_loader(run, device),
            )
        return inputs[device]

    out = {}
    with contextlib.ExitStack() as stack:
        on_ray = None
        if population == "ray":
            from .ray_tasks import RaySweep

            on_ray = stack.enter_context(
                RaySweep.start(
                    run,
                    test_images,
                    device=device,
                    threads=threads,
                    gpus_per_model=gpus_per_model,
                    address=ray_address,
                )
            )
            dev = on_ray.device
        else:
            dev = runtime.resolve_device(device)
        for method in methods:
            where = (
                torch.device("cpu") if METHODS[method].cpu_only else dev
            )  # int8 kernels are the CPU's
            ray_here = on_ray if on_ray is not None and where.type == on_ray.device.type else None
            images, load = (test_images, None) if ray_here is not None else on(where)
            out[method] = sweep_method(
                run,
                method,
                seeds=seeds,
                levels=plan[method],
                load_model=load,
                images=images,
                classes=classes,
                image_ids=image_ids,
                device=where,
                batch_size=batch_size,
                threads=threads,
                progress=progress,
                calibration=calibration,
                recovery=recovery,
                on_ray=ray_here,
            )
    return out


# =========================================================================================
# The stages' entry points: each reads its notebook's recorded parameters
# =========================================================================================
def run_prune_stage(run: str, *, progress: bool = True) -> dict[str, Path]:
    """Notebook 03's step, with the parameters the stage recorded when it started
    (:func:`prunecxr.config.stage_parameters`): predictions in the interchange layout imported
    when ``predictions`` is set (:func:`prunecxr.compress.interchange.import_predictions`), the
    authors' release when ``import_dir`` is (:func:`prunecxr.compress.importer.import_predictions`),
    else the sweep (:func:`run_sweep`; ``eval_batch_size`` is its ``batch_size``).

    Returns
    -------
    dict
        ``store → prune/<store>/probs.npy``.
    """
    from . import interchange

    p = config.stage_parameters("03_prune", run=run)
    stores = check_import_methods(
        p["methods"], import_dir=p["import_dir"], predictions=p["predictions"]
    )
    if p["predictions"]:
        path = interchange.import_predictions(
            run,
            p["predictions"],
            labels=p["labels_file"] or None,
            method=stores[0],
            level_name=p["level_name"],
        )
        return {stores[0]: path}
    if p["import_dir"]:
        path = import_predictions(
            run,
            p["import_dir"],
            allow_pickle=p["allow_pickle"],
            sparsities=p["sparsities"],
            progress=progress,
        )
        return {stores[0]: path}
    return run_sweep(
        run,
        methods=p["methods"],
        sparsities=p["sparsities"],
        device=p["device"],
        batch_size=p["eval_batch_size"],
        threads=p["threads"],
        population=p["population"],
        ray_address=p["ray_address"],
        gpus_per_model=p["gpus_per_model"],
        progress=progress,
    )


def run_compression_stage(run: str, *, progress: bool = True) -> dict[str, Path]:
    """Notebook 08's sweep of the methods beyond pruning (``compression_methods``), with the
    parameters the stage recorded when it started (:func:`prunecxr.config.stage_parameters`):
    the levels of each axis (``bits``, ``channel_fractions``), the calibration and the
    recovery (:func:`run_sweep`; ``eval_batch_size`` is its ``batch_size``)."""
    p = config.stage_parameters("08_compression", run=run)
    return run_sweep(
        run,
        methods=p["compression_methods"],
        bits=p["bits"],
        channel_fractions=p["channel_fractions"],
        device=p["device"],
        batch_size=p["eval_batch_size"],
        threads=p["threads"],
        calibration_images=p["calibration_images"],
        recover=p["recover"],
        recover_batches=p["recover_batches"],
        finetune_epochs=p["finetune_epochs"],
        finetune_lr=p["finetune_lr"],
        progress=progress,
    )
