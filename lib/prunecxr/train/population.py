"""Training the population: one model per seed, scheduled one after another or as Ray tasks.

``population="sequential"`` (the default) trains the seeds in this process, one after
another, on the chosen device. ``population="ray"`` trains each seed as a Ray task
(:mod:`prunecxr.train.ray_tasks`), side by side on this machine or across a cluster
(:mod:`prunecxr.cluster`). ``threads`` is the intra-op CPU thread count of every model (0:
:func:`prunecxr.runtime.usable_cores`) in either mode; on a CPU each seed's weights depend only
on the seed, the recipe, the data and the thread count, so the two modes give the same weights
bit for bit, and nothing is chosen by timing.

``models/train.json`` records how the population was executed (``execution``: the mode,
threads, tasks at once and device of the last call that trained a seed; with Ray also the
node of each seed); continuing a population with another thread count or on another kind of
device is refused, since either changes the rounding
(:func:`prunecxr.train.checkpoints.check_execution`). Killing training at any moment and
running it again loses at most the epoch in flight and ends with the weights of an
uninterrupted run (on a GPU, up to rounding: see :mod:`prunecxr.train.loop`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import artifacts, cluster, config, paths, runtime
from . import checkpoints
from .feed import DeviceSplit, check_split
from .loop import train_seed
from .progress import Report
from .recipe import TrainConfig, deterministic, resolve_precision

__all__ = [
    "POPULATION_MODES",
    "STAGE",
    "check_seeds",
    "fit_population",
    "run_stage",
    "train_population",
]

#: the notebook whose step :func:`run_stage` is
STAGE = "02_train"

#: how the seeds of a population are scheduled; the weights are the same either way
POPULATION_MODES = cluster.POPULATION_MODES


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
    ray_address: str = "",
    gpus_per_model: float = 1.0,
    progress: bool = True,
    weigher=None,
    attention: dict | None = None,
    branch: checkpoints.Branch | None = None,
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
    device : ``"auto"`` (CUDA, then MPS, then CPU) or a device name. With Ray, the device of
        the tasks: ``"auto"`` is CUDA when the cluster has GPUs, else the CPU.
    population : ``"sequential"`` (one seed after another in this process) or ``"ray"`` (one
        Ray task per seed, :mod:`prunecxr.cluster`); the same weights either way.
    threads : intra-op CPU threads per model; 0 means all usable cores (of this machine). The
        count changes the floating-point rounding, so it is recorded and a population
        continues only with the same count. Not used on a GPU. With Ray on CPUs, each task
        asks for as many CPUs.
    ray_address : with Ray, the cluster to join; empty means ``RAY_ADDRESS`` if set, else a
        cluster started on this machine for this call.
    gpus_per_model : with Ray on GPUs, the GPU share of each task (0.25: four models per GPU).
    progress : show tqdm bars (seeds, epochs, batches) with the losses.
    weigher : optional per-epoch loss weights of the training images
        (:func:`prunecxr.train.loop.train_seed`); with Ray it travels to every task
        (:mod:`prunecxr.train.ray_tasks`).
    attention : what ``weigher`` does, as a JSON-able dict; recorded in ``train.json``
        (``attention``), and a population continues only with the same one.
    branch : a folder of branch points shared with populations of the same seeds and recipe
        (:class:`prunecxr.train.checkpoints.Branch`): a seed not yet started begins from its
        branch point when one was made with the same execution, and otherwise writes it.

    Returns
    -------
    DataFrame, one row per seed: ``seed``, ``status`` (``trained``, ``resumed``, ``branched``
    (started from its branch point) or ``already trained``), ``epochs``, ``best_epoch``,
    ``best_val_loss``, ``best_val_mean_ap``.
    """
    seeds = check_seeds(seeds)
    cluster.check_population(population)
    runtime.check_threads(threads)
    if population == "ray":
        cluster.check_gpus_per_model(gpus_per_model)
    check_split(train_images, train_labels, "train")
    check_split(val_images, val_labels, "val")
    if (
        train_images.shape[1:] != val_images.shape[1:]
        or train_labels.shape[1] != val_labels.shape[1]
    ):
        raise ValueError(
            f"train and val differ in shape: images {train_images.shape[1:]} vs {val_images.shape[1:]}, "
            f"classes {train_labels.shape[1]} vs {val_labels.shape[1]}"
        )
    if classes is not None and len(classes) != train_labels.shape[1]:
        raise ValueError(f"{len(classes)} class names for {train_labels.shape[1]} label columns")
    rp = paths.run_paths(run)
    meta = checkpoints.train_meta(
        config, int(train_labels.shape[1]), (int(train_images.shape[1]), int(train_images.shape[2]))
    )
    if attention is not None:
        meta["attention"] = attention
    final_before = {s for s in seeds if rp.checkpoint(s).exists()}
    pending = [s for s in seeds if s not in final_before]
    record, started = checkpoints.read_record(run), checkpoints.started_seeds(run)
    if started:  # continue the population only as it was started
        if record is None:
            raise ValueError(
                f"{rp.models} holds seeds {started} but no train.json, so how they were trained "
                "is unknown. Use another run name, or delete the run's models/ folder to start over."
            )
        checkpoints.check_meta(record, meta, rp.train_config)
    for s in final_before:  # a kill between writing model.pt and removing last.pt
        rp.train_state(s).unlink(missing_ok=True)
    resumed = {s for s in pending if rp.train_state(s).exists()}
    branched: set[int] = set()

    with contextlib.ExitStack() as stack:
        if pending:
            if population == "ray":
                stack.enter_context(cluster.connect(ray_address))
                dev = cluster.task_device(device)
            else:
                dev = runtime.resolve_device(device)
            n_threads = runtime.check_threads(threads) if dev.type == "cpu" else None
            precision = resolve_precision(config.precision, dev)
            execution = {
                "population": population,
                "threads": n_threads,
                "workers": 1,
                "device": str(dev),
                "precision": precision,
            }
            config = dataclasses.replace(
                config, precision=precision
            )  # "auto" as resolved here, on every node
            if population == "ray":
                options = cluster.task_options(
                    dev, threads=n_threads, gpus_per_model=gpus_per_model
                )
                workers, _ = cluster.capacity(options)
                execution.update(
                    workers=max(1, min(workers, len(pending))),
                    gpus_per_model=options["num_gpus"] or None,
                    nodes={},
                )
            if started:
                checkpoints.check_execution(record, execution, rp.train_config)
            if branch is not None:
                branch = branch.made_by(execution)
                branched = {
                    s
                    for s in pending
                    if s not in resumed and checkpoints.read_branch(branch, s, meta) is not None
                }
            classes = list(classes) if classes is not None else (record or {}).get("classes")
            checkpoints.write_record(run, meta, classes=classes, execution=execution)
            if dev.type == "cpu":
                runtime.keep_freed_memory()
        report = stack.enter_context(
            contextlib.closing(
                Report(
                    progress, total=len(seeds), done=len(final_before), max_epochs=config.max_epochs
                )
            )
        )
        if pending and population == "ray":
            from . import ray_tasks

            def on_final(seed: int, node: str) -> None:
                nodes = {**execution["nodes"], str(seed): node}
                execution["nodes"] = {k: nodes[k] for k in sorted(nodes, key=int)}
                checkpoints.write_record(run, meta, classes=classes, execution=execution)

            ray_tasks.train_on_ray(
                pending,
                (train_images, train_labels, val_images, val_labels),
                config=config,
                meta=meta,
                rp=rp,
                device=dev,
                options=options,
                threads=n_threads,
                processes=execution["workers"],
                report=report,
                on_final=on_final,
                weigher=weigher,
                branch=branch,
            )
        elif pending:
            train = DeviceSplit(train_images, train_labels, dev)
            val = DeviceSplit(val_images, val_labels, dev)
            with deterministic(dev), runtime.num_threads(n_threads):
                for seed in pending:
                    train_seed(
                        seed,
                        train,
                        val,
                        config=config,
                        meta=meta,
                        rp=rp,
                        device=dev,
                        progress=progress,
                        report=report,
                        weigher=weigher,
                        branch=branch,
                    )

    rows = []
    for s in seeds:
        hist = artifacts.read_history(run, s)
        best = hist.loc[hist["val_loss"].idxmin()]
        status = (
            "already trained"
            if s in final_before
            else "resumed"
            if s in resumed
            else "branched"
            if s in branched
            else "trained"
        )
        rows.append(
            {
                "seed": s,
                "status": status,
                "epochs": int(hist["epoch"].max()),
                "best_epoch": int(best["epoch"]),
                "best_val_loss": float(best["val_loss"]),
                "best_val_mean_ap": float(best["val_mean_ap"]),
            }
        )
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
    schedule: str = "constant",
    precision: str = "auto",
    device: str = "auto",
    population: str = "sequential",
    threads: int = 0,
    ray_address: str = "",
    gpus_per_model: float = 1.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Train (or resume) the population of run ``run`` on its train and val splits.

    Reads the image cache through :func:`prunecxr.data.open_split`; see
    :func:`fit_population` for the parameters and the returned table, and
    :class:`prunecxr.train.TrainConfig` for the recipe.
    """
    from .. import data

    config = TrainConfig(
        model=model,
        pretrained=pretrained,
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        bn_eval_compat=bn_eval_compat,
        schedule=schedule,
        precision=precision,
    )
    tr = data.open_split(run, "train")
    va = data.open_split(run, "val")
    if list(tr.classes) != list(va.classes):
        raise ValueError(f"run {run!r}: train and val splits have different classes")
    return fit_population(
        tr.images,
        tr.labels,
        va.images,
        va.labels,
        seeds=seeds,
        config=config,
        run=run,
        classes=list(tr.classes),
        device=device,
        population=population,
        threads=threads,
        ray_address=ray_address,
        gpus_per_model=gpus_per_model,
        progress=progress,
    )


def run_stage(run: str, *, progress: bool = True) -> pd.DataFrame:
    """Notebook 02's training step: :func:`train_population` with the parameters the stage
    recorded when it started (:func:`prunecxr.config.stage_parameters`); ``n_seeds`` gives
    the seeds ``0 .. n_seeds-1``, every other parameter its namesake."""
    p = config.stage_parameters(STAGE, run=run)
    return train_population(
        run,
        seeds=p["n_seeds"],
        model=p["model"],
        pretrained=p["pretrained"],
        max_epochs=p["max_epochs"],
        patience=p["patience"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        bn_eval_compat=p["bn_eval_compat"],
        schedule=p["schedule"],
        precision=p["precision"],
        device=p["device"],
        population=p["population"],
        threads=p["threads"],
        ray_address=p["ray_address"],
        gpus_per_model=p["gpus_per_model"],
        progress=progress,
    )
