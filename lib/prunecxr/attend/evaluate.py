"""Notebook 09's tables, computed from the runs' artifacts: the HTL set, classification,
localization and forgettability of the dense population and of every attended arm.

Each is written as ``runs/<run>/attend/<name>.parquet`` (``docs/artifacts.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts, data, events, inference, paths, published
from ..analysis import forgetting
from .arms import arm_run, check_levels_swept, swept_levels
from .cam import localization_scores
from .compare import BASELINE, DIFFERENCE_COLUMNS

__all__ = [
    "ALL_CLASSES",
    "RAREST",
    "all_differences",
    "classification_table",
    "forgetting_table",
    "htl_table",
    "shown_classes",
    "forgetting_correlations",
    "localization_boxes",
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


def localization_boxes(
    run: str, *, data_root: str = "", bbox_file: str = ""
) -> pd.DataFrame | None:
    """The test boxes that ``run``'s maps are scored against, or None when it has none.

    A phantom run: where the renderer drew each finding (``locations.parquet``; ``attrs["source"]``
    ``"drawn"``). A run on real NIH images (dataset ``nih-cxr-lt``): NIH's public boxes
    (:func:`prunecxr.data.boxes.find_box_file`: ``bbox_file``, else ``BBox_List_2017.csv`` in the
    dataset folder under ``data_root``, else the copy in the installed ``torchxrayvision``
    wheel), scaled to the run's images (``attrs["source"]`` the file's name). Other datasets
    have no boxes.
    """
    from .. import config
    from ..data import boxes as nih

    rp = paths.run_paths(run)
    if rp.locations.exists():
        drawn = artifacts.read_locations(run)
        drawn = drawn[drawn["split"] == "test"].reset_index(drop=True)
        drawn.attrs["source"] = "drawn"
        return drawn
    if bbox_file and not Path(bbox_file).expanduser().is_file():
        raise FileNotFoundError(f"bbox_file {bbox_file} does not exist")
    record = config.run_data(run)
    if record.get("dataset") != "nih-cxr-lt" and not bbox_file:
        return None
    folder = None
    if record.get("dataset") == "nih-cxr-lt":
        from ..data import create_dataset

        try:
            folder = create_dataset("nih-cxr-lt", data_root=data_root).folder
        except (FileNotFoundError, ValueError):
            folder = None  # no data root set: the wheel's copy
    path = nih.find_box_file(bbox_file, folder)
    labels = artifacts.read_labels(run)
    table = nih.read_nih_boxes(path, classes=artifacts.class_names(labels))
    resolution = int(data.open_split(run, "test").images.shape[1])
    scaled = nih.boxes_at_resolution(table, labels, resolution)
    unmatched = scaled.attrs["unmatched"]
    scaled = scaled[scaled["split"] == "test"].reset_index(drop=True)
    scaled.attrs.update(source=path.name, unmatched=unmatched)
    return scaled


def localization_table(
    run: str,
    arms: Sequence[str],
    seeds: Sequence[int],
    *,
    boxes: pd.DataFrame,
    threshold: float,
    batch_size: int,
    device="cpu",
    method: str = "auto",
    layer: str = "",
) -> pd.DataFrame:
    """Pointing game and IoU of each arm's class activation maps against ``boxes``
    (:func:`localization_boxes`), per seed and class.

    Rows ``arm``, ``seed``, ``class``, ``n_boxes``, ``pointing`` (share of hits) and ``iou``
    (mean), plus per arm and seed the row ``class`` = :data:`ALL_CLASSES` over every scored
    box; ``box_share`` is the boxes' mean share of the image, which is the pointing game of a
    point drawn uniformly at random (its chance level); ``map`` says which map scored it (``cam`` or ``gradcam``, :func:`prunecxr.attend.cam.cam_method`)
    and ``boxes`` what it was scored against (``boxes.attrs["source"]``).
    """
    from .cam import cam_method

    test = data.open_split(run, "test")
    scored = boxes[boxes["pixels"] > 0] if "pixels" in boxes else boxes
    share = (scored["x1"] - scored["x0"]) * (scored["y1"] - scored["y0"]) / test.images[0].size
    chance = share.groupby(scored["class"].to_numpy()).mean()  # a uniformly random point's hit rate
    frames = []
    pairs = [(BASELINE, run)] + [(a, arm_run(run, a)) for a in arms]
    for k, (arm, source) in enumerate(pairs):
        events.emit("localization", done=k, total=len(pairs), unit="arm", detail=arm)
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
                method=method,
                layer=layer,
            )
            per = (
                scores.groupby("class", sort=False)
                .agg(n_boxes=("iou", "size"), pointing=("pointing", "mean"), iou=("iou", "mean"))
                .reset_index()
            )
            per["box_share"] = per["class"].map(chance).to_numpy()
            total = pd.DataFrame(
                [
                    {
                        "class": ALL_CLASSES,
                        "n_boxes": len(scores),
                        "pointing": scores["pointing"].mean(),
                        "iou": scores["iou"].mean(),
                        "box_share": float(share.mean()),
                    }
                ]
            )
            frames.append(
                pd.concat([per, total], ignore_index=True).assign(
                    arm=arm, seed=int(seed), map=cam_method(model, method)
                )
            )
    events.emit("localization", done=len(pairs), total=len(pairs), unit="arm")
    out = pd.concat(frames, ignore_index=True).assign(boxes=boxes.attrs.get("source", "given"))
    columns = ["arm", "seed", "class", "n_boxes", "pointing", "iou", "box_share", "map", "boxes"]
    return out[columns].astype(
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
    dense population and of every arm, over the same ``seeds`` and levels, one row per (arm,
    class).

    The dense run's own ``analysis/`` files are over all its seeds and levels; here its curves
    are recomputed over the attended seeds and the arms' levels only
    (:func:`prunecxr.analysis.forgetting.forgettability_curves`,
    :func:`~prunecxr.analysis.forgetting.class_summary`), so both sides are medians over the
    same seeds, and a first drop is found on the same grid (profile ``attend`` sweeps the arms
    at every other level of notebook 03's).
    """
    sources = [(BASELINE, run)] + [(a, arm_run(run, a)) for a in arms]
    grids = {arm: swept_levels(source, method) for arm, source in sources}
    arm_grid = grids[arms[0]] if arms else grids[BASELINE]
    for arm in arms:
        if grids[arm] != arm_grid:
            raise ValueError(
                f"the arms were swept at different levels ({arms[0]}: {arm_grid}, {arm}: "
                f"{grids[arm]}): sweep them again with one list of sparsities"
            )
    check_levels_swept(run, method, arm_grid)
    frames = []
    for arm, source in sources:
        meta = artifacts.read_meta(source, method)
        classes = list(meta["classes"])
        metrics = artifacts.read_metrics(source, method)
        metrics = metrics[
            metrics["seed"].isin(list(seeds))
            & metrics[meta.get("level_name", "sparsity")].round(9).isin(arm_grid)
        ]
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
