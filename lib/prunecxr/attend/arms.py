"""The attended populations: one run per arm beside the dense one, trained and swept like it.

Arm ``a`` of run ``r`` lives in its own run, ``r.attend-a`` (:func:`arm_run`), which shares
``r``'s labels, locations and image cache (:func:`prepare_arm`: ``labels.parquet`` and
``locations.parquet`` copied, ``run.json`` holding ``r``'s data record and ``attend``, which
names the parent and the arm). Being a run, it goes through the very functions of notebooks
02-04: :func:`prunecxr.train.fit_population` (with the arm's weigher), the pruning sweep
(:func:`prunecxr.compress.run_sweep`) and the forgettability analysis
(:func:`prunecxr.analysis.forgetting.run_stage`), and it resumes like them, seed by seed and
epoch by epoch. It belongs to its parent: notebook 09 of ``r`` writes it under ``r``'s lock.

The recipe is the parent's own (``models/train.json``), the seeds a subset of its seeds.
Every arm's first epoch is the same plain epoch (:data:`prunecxr.attend.weights.FIRST_ATTENDED_EPOCH`),
so it is trained once per seed: the first arm to reach it writes the seed's state after it to
``r``'s ``attend/branch/`` and the other arms start from there
(:class:`prunecxr.train.checkpoints.Branch`), to the bit as if each had trained it itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .. import artifacts, config, paths
from ..train import TrainConfig, fit_population
from ..train.checkpoints import Branch
from .weights import ARMS, FIRST_ATTENDED_EPOCH, create_weigher

__all__ = [
    "arm_run",
    "check_arms",
    "check_levels_swept",
    "check_options",
    "check_seeds_of",
    "parent_config",
    "prepare_arm",
    "swept_levels",
    "sweep_arms",
    "train_arm",
    "train_arms",
]


def check_arms(arms: Sequence[str]) -> list[str]:
    """``arms`` as a list of distinct keys of :data:`prunecxr.attend.weights.ARMS`."""
    if isinstance(arms, str) or not arms:
        raise ValueError(
            f"attend_arms must be a non-empty list of arms from {list(ARMS)}; got {arms!r}"
        )
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown attend arm {bad[0]!r}; choose from {list(ARMS)}")
    if len(set(arms)) != len(arms):
        raise ValueError(f"attend_arms repeats an arm: {list(arms)}")
    return list(arms)


def check_options(
    *,
    cam_method: str,
    cam_threshold: float,
    population: str,
    bbox_file: str = "",
    run: str | None = None,
    method: str = "global_l1",
    sparsities: Sequence[float] | None = None,
) -> None:
    """Notebook 09's options that are used late (after the arms have trained), checked at its
    start: a typo fails in seconds, not after the training. With ``run`` and ``sparsities``,
    also that ``run``'s sweep of ``method`` has every level the arms will be swept at."""
    from pathlib import Path

    from .. import cluster
    from .cam import CAM_METHODS

    if run is not None and sparsities is not None:
        check_levels_swept(run, method, sparsities)

    if cam_method not in CAM_METHODS:
        raise ValueError(f"cam_method must be one of {list(CAM_METHODS)}; got {cam_method!r}")
    if (
        isinstance(cam_threshold, bool)
        or not isinstance(cam_threshold, (int, float))
        or not 0 < cam_threshold < 1
    ):
        raise ValueError(f"cam_threshold must be in (0, 1); got {cam_threshold!r}")
    cluster.check_population(population)
    if bbox_file and not Path(bbox_file).expanduser().is_file():
        raise FileNotFoundError(f"bbox_file {bbox_file} does not exist")


def swept_levels(run: str, method: str) -> list[float]:
    """The levels ``run``'s sweep of ``method`` holds (rounded to 9 decimals, for comparing)."""
    return [round(float(v), 9) for v in artifacts.read_meta(run, method)["levels"]]


def check_levels_swept(run: str, method: str, sparsities: Sequence[float]) -> None:
    """Refuse ``sparsities`` for the arms' sweep unless ``run``'s own sweep of ``method``
    (notebook 03) has every one of them: the dense side of each comparison is read from it."""
    from ..compress.methods import check_sparsities

    wanted = [round(v, 9) for v in check_sparsities(sparsities)]
    if not paths.run_paths(run).prune_meta(method).exists():
        raise ValueError(
            f"run {run!r} has no sweep of {method!r} to compare the arms with: run notebook 03 "
            f"with {method!r} among its methods first"
        )
    have = set(swept_levels(run, method))
    missing = [v for v in wanted if v not in have]
    if missing:
        raise ValueError(
            f"sparsities {missing} are not among the levels run {run!r} was swept at "
            f"({sorted(have)}): the arms are compared with the dense models at the same levels, "
            "so choose sparsities from those"
        )


def arm_run(run: str, arm: str) -> str:
    """The run name of ``run``'s arm ``arm``: ``<run>.attend-<arm>``."""
    if arm not in ARMS:
        raise ValueError(f"unknown attend arm {arm!r}; choose from {list(ARMS)}")
    return paths.check_run_name(f"{run}.attend-{arm}")


def prepare_arm(run: str, arm: str) -> str:
    """Create (or refresh) the run of ``run``'s arm ``arm`` from ``run``'s data; its name.

    Refuses an arm run made from other labels (notebook 01 rerun since): its models would
    not fit the data.
    """
    name = arm_run(run, arm)
    rp = paths.run_paths(name)
    labels = artifacts.read_labels(run)
    if rp.labels.exists() and not artifacts.read_labels(name).equals(labels):
        raise ValueError(
            f"run {name!r} was made from other labels than run {run!r} now has (notebook 01 "
            f"was rerun): delete {rp.root} to attend again"
        )
    if not rp.labels.exists():
        artifacts.write_labels(name, labels)
    parent = paths.run_paths(run)
    if parent.locations.exists() and not rp.locations.exists():
        artifacts.write_locations(name, artifacts.read_locations(run))
    artifacts.write_json(
        rp.run_json, {"data": config.run_data(run), "attend": {"parent": run, "arm": arm}}
    )
    return name


def parent_config(run: str) -> TrainConfig:
    """The dense population's recipe (``models/train.json``), which every arm trains with."""
    return TrainConfig(**artifacts.read_train_record(run)["config"])


def check_seeds_of(run: str, n_seeds: int) -> list[int]:
    """Seeds ``0 .. n_seeds-1``, all of them trained in ``run`` (the pairs of every comparison)."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"attend_seeds must be a positive int; got {n_seeds!r}")
    trained = artifacts.trained_seeds(run)
    seeds = list(range(n_seeds))
    missing = sorted(set(seeds) - set(trained))
    if missing:
        raise ValueError(
            f"attend_seeds={n_seeds} needs seeds {missing} of run {run!r}, which are not trained "
            f"(trained: {trained}); lower attend_seeds or train more seeds (n_seeds)"
        )
    return seeds


def train_arm(
    run: str,
    arm: str,
    *,
    seeds: Sequence[int],
    weight: float,
    sparsity: float,
    fraction: float,
    beta: float,
    threads: int,
    device: str = "cpu",
    batch_size: int = 256,
    posthoc_flags=None,
    progress: bool = False,
    population: str = "sequential",
    ray_address: str = "",
) -> pd.DataFrame:
    """Train (or resume) arm ``arm`` of ``run`` for ``seeds``; :func:`prunecxr.train.fit_population`'s table.

    ``population="ray"`` trains the seeds as Ray tasks (the bits of one seed after another).
    """
    from .. import data

    name = prepare_arm(run, arm)
    tr, va = data.open_split(name, "train"), data.open_split(name, "val")
    weigher, attention = create_weigher(
        arm,
        run=name,
        images=tr.images,
        labels=tr.labels,
        image_ids=tr.image_ids,
        weight=weight,
        sparsity=sparsity,
        fraction=fraction,
        beta=beta,
        batch_size=batch_size,
        posthoc_flags=posthoc_flags,
        device=device,
    )
    return fit_population(
        tr.images,
        tr.labels,
        va.images,
        va.labels,
        seeds=seeds,
        config=parent_config(run),
        run=name,
        classes=list(tr.classes),
        device=device,
        threads=threads,
        progress=progress,
        weigher=weigher,
        attention=attention,
        population=population,
        ray_address=ray_address,
        branch=Branch(paths.run_paths(run).attend_branch, epoch=FIRST_ATTENDED_EPOCH),
    )


def train_arms(
    run: str,
    arms: Sequence[str],
    *,
    seeds: Sequence[int],
    posthoc: pd.DataFrame | None = None,
    **options,
) -> pd.DataFrame:
    """:func:`train_arm` for every arm; one row per (arm, seed). ``posthoc`` (the post hoc HTL
    table, :func:`prunecxr.attend.htl.posthoc_scores`) gives arm ``htl_posthoc`` its images."""
    frames = []
    for arm in check_arms(arms):
        flags = None
        if arm == "htl_posthoc":
            if posthoc is None:
                raise ValueError("arm 'htl_posthoc' needs the post hoc HTL table (posthoc=...)")
            flags = posthoc["htl"].to_numpy()
        frames.append(
            train_arm(run, arm, seeds=seeds, posthoc_flags=flags, **options).assign(arm=arm)
        )
    out = pd.concat(frames, ignore_index=True)
    return out[["arm", *[c for c in out.columns if c != "arm"]]]


def sweep_arms(
    run: str,
    arms: Sequence[str],
    *,
    seeds: Sequence[int],
    method: str,
    sparsities: Sequence[float],
    drop_threshold: float,
    device: str = "auto",
    batch_size: int = 128,
    threads: int = 0,
    population: str = "sequential",
    ray_address: str = "",
) -> list[str]:
    """Notebook 03's sweep and notebook 04's analysis of ``method`` on every arm's run (resumable
    like them; ``population="ray"``: the seeds as Ray tasks, as in notebook 03); the arms' run
    names."""
    from ..analysis import forgetting
    from ..compress import run_sweep, write_all_metrics

    names = []
    for arm in check_arms(arms):
        name = arm_run(run, arm)
        run_sweep(
            name,
            methods=[method],
            sparsities=sparsities,
            device=device,
            batch_size=batch_size,
            seeds=list(seeds),
            threads=threads,
            population=population,
            ray_address=ray_address,
            progress=False,
        )
        write_all_metrics(name, [method])
        forgetting.run_stage(name, drop_threshold=drop_threshold, methods=[method])
        names.append(name)
    return names
