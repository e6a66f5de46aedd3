"""Notebook 09's tables, computed from the runs' artifacts: the HTL set, classification,
localization and forgettability of the dense population and of every attended arm.

Each is written as ``runs/<run>/attend/<name>.parquet`` (``docs/artifacts.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import artifacts, inference, paths, published
from ..analysis import forgetting
from .arms import arm_run
from .cam import localization_scores
from .compare import BASELINE, DIFFERENCE_COLUMNS

__all__ = [
    "ALL_CLASSES",
    "RAREST",
    "all_differences",
    "classification_table",
    "forgetting_table",
    "has_locations",
    "htl_table",
    "shown_classes",
    "forgetting_correlations",
    "localization_table",
    "rarest_classes",
    "write_table",
]

#: the ``class`` of rows that aggregate every class (mean AP; every scored finding)
ALL_CLASSES = "(all classes)"
#: the ``class`` of rows that aggregate the rarest classes (their mean AP)
RAREST = f"({published.N_RAREST} rarest)"


def write_table(run: str, name: str, table: pd.DataFrame):
    """Write ``attend/<name>.parquet`` of ``run``."""
    return artifacts.write_parquet(
        paths.run_paths(run).attend_table(name), table.reset_index(drop=True)
    )


def rarest_classes(run: str, n: int = published.N_RAREST) -> list[str]:
    """The ``n`` classes with the fewest positive training images (ties by canonical order)."""
    labels = artifacts.read_labels(run)
    counts = forgetting.label_counts(labels, artifacts.class_names(labels))
    return counts.sort_values("train_count", kind="mergesort")["class"].head(n).tolist()


def htl_table(
    run: str, posthoc: pd.DataFrame | None, arms: Sequence[str], seeds: Sequence[int]
) -> pd.DataFrame:
    """Every HTL identification: the post hoc one (``source`` ``posthoc``, no seed or epoch)
    and each weighted arm's per-epoch record (``source`` = the arm), one row per training image.

    Columns ``source``, ``seed`` and ``epoch`` (nullable ints; epoch 0-based), ``image_id``,
    ``spearman`` (NaN where the arm does not score: ``random``, ``htl_posthoc``), ``htl``.
    """
    frames = []
    if posthoc is not None:
        frames.append(
            posthoc[["image_id", "spearman", "htl"]].assign(
                source="posthoc", seed=pd.NA, epoch=pd.NA
            )
        )
    for arm in arms:
        rp = paths.run_paths(arm_run(run, arm))
        for seed in seeds:
            found = rp.attend_epoch(seed, 0).parent.glob(f"seed-{int(seed)}-epoch-*.parquet")
            for epoch in sorted(int(p.stem.rsplit("-", 1)[1]) for p in found):
                frames.append(
                    artifacts.read_parquet(rp.attend_epoch(seed, epoch)).assign(
                        source=arm, seed=seed, epoch=epoch
                    )
                )
    out = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["image_id", "spearman", "htl", "source", "seed", "epoch"])
    )
    out["seed"] = out["seed"].astype("Int64")
    out["epoch"] = out["epoch"].astype("Int64")
    out["htl"] = out["htl"].astype(bool)
    return out[["source", "seed", "epoch", "image_id", "spearman", "htl"]]


def _dense_ap(run: str, method: str, seeds: Sequence[int]) -> pd.DataFrame:
    metrics = artifacts.read_metrics(run, method)
    level = metrics.columns[1]  # the level column (sparsity for the pruning methods)
    dense = metrics[np.isclose(metrics[level], 0.0) & metrics["seed"].isin(list(seeds))]
    missing = sorted(set(seeds) - set(dense["seed"]))
    if missing:
        raise ValueError(
            f"run {run!r} has no {method} sweep of seeds {missing}: run notebook 03 on them first"
        )
    return dense[["seed", "class", "ap"]]


def classification_table(
    run: str, arms: Sequence[str], seeds: Sequence[int], *, method: str
) -> pd.DataFrame:
    """Test AP of each arm's dense models (level 0 of its ``method`` sweep), per seed and class.

    Rows ``arm`` (``dense`` first: ``run``'s own population), ``seed``, ``class`` and ``ap``;
    per arm and seed also the mean over classes (``class`` = :data:`ALL_CLASSES`, NaN APs
    left out) and over the rarest five (:data:`RAREST`).
    """
    rare = rarest_classes(run)
    frames = []
    for arm, source in [(BASELINE, run)] + [(a, arm_run(run, a)) for a in arms]:
        ap = _dense_ap(source, method, seeds)
        agg = [
            ap.groupby("seed", sort=True)["ap"].mean().rename(ALL_CLASSES),
            ap[ap["class"].isin(rare)].groupby("seed", sort=True)["ap"].mean().rename(RAREST),
        ]
        extra = (
            pd.concat(agg, axis=1)
            .rename_axis("seed")
            .reset_index()
            .melt(id_vars="seed", var_name="class", value_name="ap")
        )
        frames.append(pd.concat([ap, extra], ignore_index=True).assign(arm=arm))
    out = pd.concat(frames, ignore_index=True)
    return out[["arm", "seed", "class", "ap"]].astype({"seed": "int64", "ap": "float64"})


def localization_table(
    run: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    *,
    threshold: float,
    batch_size: int,
    device="cpu",
) -> pd.DataFrame:
    """Pointing game and IoU of each arm's CAMs against the drawn test findings, per seed and class.

    Rows ``arm``, ``seed``, ``class``, ``n_boxes``, ``pointing`` (share of hits) and ``iou``
    (mean), plus per arm and seed the row ``class`` = :data:`ALL_CLASSES` over every scored
    box. Phantom runs only (``locations.parquet``).
    """
    from .. import data

    if not paths.run_paths(run).locations.exists():
        raise FileNotFoundError(
            f"run {run!r} has no locations.parquet: localization is scored against the "
            "phantom's drawn findings (notebook 01 on a phantom dataset)"
        )
    boxes = artifacts.read_locations(run)
    boxes = boxes[boxes["split"] == "test"]
    test = data.open_split(run, "test")
    frames = []
    for arm, source in [(BASELINE, run)] + [(a, arm_run(run, a)) for a in arms]:
        for seed in seeds:
            model = inference.load_model(source, int(seed), device=device)
            scores = localization_scores(
                model,
                test.images,
                test.image_ids,
                boxes,
                test.classes,
                threshold=threshold,
                batch_size=batch_size,
                device=device,
            )
            per = (
                scores.groupby("class", sort=False)
                .agg(n_boxes=("iou", "size"), pointing=("pointing", "mean"), iou=("iou", "mean"))
                .reset_index()
            )
            total = pd.DataFrame(
                [
                    {
                        "class": ALL_CLASSES,
                        "n_boxes": len(scores),
                        "pointing": scores["pointing"].mean(),
                        "iou": scores["iou"].mean(),
                    }
                ]
            )
            frames.append(
                pd.concat([per, total], ignore_index=True).assign(arm=arm, seed=int(seed))
            )
    out = pd.concat(frames, ignore_index=True)
    return out[["arm", "seed", "class", "n_boxes", "pointing", "iou"]].astype(
        {"seed": "int64", "n_boxes": "int64", "pointing": "float64", "iou": "float64"}
    )


def forgetting_table(
    run: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    *,
    method: str,
    drop_threshold: float = published.DROP_THRESHOLD,
) -> pd.DataFrame:
    """Notebook 04's class summary (Eq. 1 curves → ``first_drop``, ``rel_change_at_095``) of the
    dense population and of every arm, over the same ``seeds``, one row per (arm, class).

    The dense run's own ``analysis/`` files are over all its seeds; here its curves are
    recomputed over the attended seeds only
    (:func:`prunecxr.analysis.forgetting.forgettability_curves`,
    :func:`~prunecxr.analysis.forgetting.class_summary`), so both sides are medians over the
    same seeds.
    """
    frames = []
    for arm, source in [(BASELINE, run)] + [(a, arm_run(run, a)) for a in arms]:
        classes = list(artifacts.read_meta(source, method)["classes"])
        metrics = artifacts.read_metrics(source, method)
        metrics = metrics[metrics["seed"].isin(list(seeds))]
        curves = forgetting.forgettability_curves(metrics, classes=classes)
        summary = forgetting.class_summary(
            curves, artifacts.read_labels(source, classes), drop_threshold=drop_threshold
        )
        frames.append(summary.assign(arm=arm))
    out = pd.concat(frames, ignore_index=True)
    return out[["arm", *[c for c in out.columns if c != "arm"]]]


def forgetting_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Fig. 3's correlations with log training frequency, per arm of :func:`forgetting_table`."""
    frames = [
        forgetting.frequency_correlations(part.drop(columns="arm")).assign(arm=arm)
        for arm, part in table.groupby("arm", sort=False)
    ]
    out = pd.concat(frames, ignore_index=True)
    return out[["arm", *[c for c in out.columns if c != "arm"]]]


def has_locations(run: str) -> bool:
    """Whether ``run`` knows where its findings are drawn (``locations.parquet``: phantom runs).

    Real NIH images would be scored against NIH's public boxes (``BBox_List_2017.csv``); that
    reader is not implemented yet, so localization is scored on phantom runs only.
    """
    return paths.run_paths(run).locations.exists()


def all_differences(*parts: pd.DataFrame | None) -> pd.DataFrame:
    """The paired-difference tables of every quantity, in one (``attend/differences.parquet``)."""
    frames = [p for p in parts if p is not None and len(p)]
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    )


def shown_classes(run: str) -> list[str]:
    """The aggregates, then every class from commonest to rarest in training: the x axis of the
    differences figure."""
    labels = artifacts.read_labels(run)
    counts = forgetting.label_counts(labels, artifacts.class_names(labels))
    ordered = counts.sort_values("train_count", ascending=False, kind="mergesort")["class"].tolist()
    return [ALL_CLASSES, RAREST, *ordered]
