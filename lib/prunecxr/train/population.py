"""Training the population: one model per seed, scheduled one after another or side by side.

``population="sequential"`` (the default) trains the seeds in this process, one after
another, on the chosen device. ``population="parallel"`` trains them side by side in CPU
processes (:mod:`prunecxr.train.parallel`). ``threads`` is the intra-op CPU thread count of
every model (0: :func:`prunecxr.runtime.usable_cores`) in either mode, and ``parallel`` runs
``max(1, usable_cores // threads)`` processes (at most one per pending seed). On a CPU each
seed's weights depend only on the seed, the recipe, the data and the thread count: the two
modes give the same weights bit for bit, and nothing is chosen by timing.

``models/train.json`` records how the population was executed (``execution``: the mode,
threads, processes and device of the last call that trained a seed); continuing a population
with another thread count or on another kind of device is refused, since either changes the
rounding (:func:`prunecxr.train.checkpoints.check_execution`). Killing training at any
moment and running it again loses at most the epoch in flight and ends with the weights of an
uninterrupted run (on a GPU, up to rounding: see :mod:`prunecxr.train.loop`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import artifacts, paths, runtime
from . import checkpoints
from .feed import DeviceSplit, check_split
from .loop import train_seed
from .parallel import train_parallel
from .progress import Report
from .recipe import TrainConfig, deterministic

__all__ = ["POPULATION_MODES", "check_seeds", "fit_population", "train_population"]

#: how the seeds of a population are scheduled; the weights are the same either way
POPULATION_MODES = ("sequential", "parallel")


def check_seeds(seeds: Iterable[int] | int) -> list[int]:
    """The seeds as a list of distinct non-negative ints (an int ``n`` means ``0 .. n-1``)."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = range(int(seeds))
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r}")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out}")
    if not out:
        raise ValueError("no seeds to train")
    return out


def _execution(population: str, threads: int, device: torch.device, pending: int) -> dict:
    """How this call trains: ``population``, ``threads`` (None on a GPU), ``workers``, ``device``."""
    if population not in POPULATION_MODES:
        raise ValueError(f"unknown population mode {population!r}; choose one of {list(POPULATION_MODES)}")
    threads = runtime.check_threads(threads)
    if population == "parallel" and device.type != "cpu":
        raise ValueError(f"population='parallel' trains seeds in CPU processes; the device is {device}")
    workers = 1
    if population == "parallel":
        workers = max(1, min(runtime.usable_cores() // threads, pending))
    return {"population": population, "threads": threads if device.type == "cpu" else None,
            "workers": workers, "device": str(device)}


def fit_population(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    seeds: Iterable[int] | int,
    config: TrainConfig,
    run: str,
    classes: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    population: str = "sequential",
    threads: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Train (or resume) one model per seed on in-memory or memory-mapped arrays.

    Parameters
    ----------
    train_images, val_images : uint8 arrays ``[N, H, W]`` (the image cache).
    train_labels, val_labels : 0/1 arrays ``[N, C]``.
    seeds : the seeds, or their number ``n`` for seeds ``0 .. n-1``.
    config : the training recipe.
    run : the run whose ``models/`` folder receives the checkpoints.
    classes : class names, recorded in ``models/train.json``.
    device : ``"auto"`` (CUDA, then MPS, then CPU) or a device name.
    population : ``"sequential"`` (one seed after another in this process) or
        ``"parallel"`` (CPU processes side by side); the same weights either way.
    threads : intra-op CPU threads per model; 0 means all usable cores. The count changes
        the floating-point rounding, so it is recorded and a population continues only with
        the same count. Not used on a GPU.
    progress : show tqdm bars (seeds, epochs, batches) with the losses.

    ``parallel`` starts its helper processes with ``spawn``, which imports the calling
    script again: call it from a notebook, or from a script under
    ``if __name__ == "__main__":``.

    Returns
    -------
    DataFrame, one row per seed: ``seed``, ``status`` (``trained``, ``resumed`` or
    ``already trained``), ``epochs``, ``best_epoch``, ``best_val_loss``,
    ``best_val_mean_ap``.
    """
    seeds = check_seeds(seeds)
    check_split(train_images, train_labels, "train")
    check_split(val_images, val_labels, "val")
    if train_images.shape[1:] != val_images.shape[1:] or train_labels.shape[1] != val_labels.shape[1]:
        raise ValueError(
            f"train and val differ in shape: images {train_images.shape[1:]} vs {val_images.shape[1:]}, "
            f"classes {train_labels.shape[1]} vs {val_labels.shape[1]}"
        )
    if classes is not None and len(classes) != train_labels.shape[1]:
        raise ValueError(f"{len(classes)} class names for {train_labels.shape[1]} label columns")
    rp = paths.run_paths(run)
    dev = runtime.resolve_device(device)
    meta = checkpoints.train_meta(config, int(train_labels.shape[1]),
                                  (int(train_images.shape[1]), int(train_images.shape[2])))
    final_before = {s for s in seeds if rp.checkpoint(s).exists()}
    pending = [s for s in seeds if s not in final_before]
    execution = _execution(population, threads, dev, len(pending))

    record, started = checkpoints.read_record(run), checkpoints.started_seeds(run)
    if started:  # continue the population only as it was started
        if record is None:
            raise ValueError(
                f"{rp.models} holds seeds {started} but no train.json, so how they were trained "
                "is unknown. Use another run name, or delete the run's models/ folder to start over."
            )
        checkpoints.check_meta(record, meta, rp.train_config)
        if pending:
            checkpoints.check_execution(record, execution, rp.train_config)
    for s in final_before:  # a kill between writing model.pt and removing last.pt
        rp.train_state(s).unlink(missing_ok=True)
    if pending:
        classes = list(classes) if classes is not None else (record or {}).get("classes")
        checkpoints.write_record(run, meta, classes=classes, execution=execution)

    resumed = {s for s in pending if rp.train_state(s).exists()}
    report = Report(progress, total=len(seeds), done=len(final_before), max_epochs=config.max_epochs)
    try:
        if pending and population == "parallel":
            runtime.keep_freed_memory()
            train_parallel(pending, (train_images, train_labels, val_images, val_labels), config=config,
                           meta=meta, rp=rp, threads=execution["threads"], workers=execution["workers"],
                           report=report)
        elif pending:
            if dev.type == "cpu":
                runtime.keep_freed_memory()
            train = DeviceSplit(train_images, train_labels, dev)
            val = DeviceSplit(val_images, val_labels, dev)
            with deterministic(dev), runtime.num_threads(execution["threads"]):
                for seed in pending:
                    train_seed(seed, train, val, config=config, meta=meta, rp=rp, device=dev,
                               progress=progress, report=report)
    finally:
        report.close()

    rows = []
    for s in seeds:
        hist = artifacts.read_history(run, s)
        best = hist.loc[hist["val_loss"].idxmin()]
        status = "already trained" if s in final_before else ("resumed" if s in resumed else "trained")
        rows.append({
            "seed": s, "status": status, "epochs": int(hist["epoch"].max()),
            "best_epoch": int(best["epoch"]), "best_val_loss": float(best["val_loss"]),
            "best_val_mean_ap": float(best["val_mean_ap"]),
        })
    return pd.DataFrame(rows)


def train_population(
    run: str,
    *,
    seeds: Iterable[int] | int,
    model: str,
    pretrained: bool,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    bn_eval_compat: bool = False,
    device: str = "auto",
    population: str = "sequential",
    threads: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Train (or resume) the population of run ``run`` on its train and val splits.

    Reads the image cache through :func:`prunecxr.data.open_split`; see
    :func:`fit_population` for the parameters and the returned table, and
    :class:`prunecxr.train.TrainConfig` for the recipe.
    """
    from .. import data

    config = TrainConfig(
        model=model, pretrained=pretrained, max_epochs=max_epochs, patience=patience,
        batch_size=batch_size, lr=lr, bn_eval_compat=bn_eval_compat,
    )
    tr = data.open_split(run, "train")
    va = data.open_split(run, "val")
    if list(tr.classes) != list(va.classes):
        raise ValueError(f"run {run!r}: train and val splits have different classes")
    return fit_population(
        tr.images, tr.labels, va.images, va.labels, seeds=seeds, config=config, run=run,
        classes=list(tr.classes), device=device, population=population, threads=threads,
        progress=progress,
    )
