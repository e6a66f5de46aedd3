"""Notebook 01's tables and figures: what the label table of a run looks like.

Every function reads a labels table (``labels.parquet``, :func:`prunecxr.artifacts.read_labels`)
or the run's data record, and each figure returns ``(figure, the plotted data)`` for
:func:`prunecxr.figures.save_figure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import artifacts, config, stats
from ..artifacts import SPLITS, class_names
from . import reference
from .datasets import open_split
from .keys import hash_rank


def cache_report(run: str) -> str:
    """A few lines on the run's data and image cache (reused or built, where, how long)."""
    info = config.run_data(run)
    res = info["resolution"]
    lines = [
        f"Dataset {info['dataset']!r}: {sum(info['n_images'].values()):,} images of "
        f"{sum(info['n_patients'].values()):,} patients "
        f"({info['n_images_available']:,} images available), {len(info['classes'])} classes.",
        f"Image cache ({res}×{res} uint8) under {info['cache_root']}:",
    ]
    for split in SPLITS:
        entry = info["cache"][split]
        how = "reused" if info["cache_reused"][split] else "built"
        lines.append(f"  {split:5s} {entry['n']:>8,} images  {how}  {entry['path']}")
    if not all(info["cache_reused"].values()):
        lines.append(f"Built in {info['cache_seconds']:.1f} s.")
    return "\n".join(lines)


def split_summary(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per split (and ``all``): images, patients, images per patient, labels per image."""
    classes = class_names(labels)
    rows = []
    for name in SPLITS + ("all",):
        part = labels if name == "all" else labels[labels["split"] == name]
        n = len(part)
        rows.append(
            {
                "split": name,
                "images": n,
                "patients": int(part["patient_id"].nunique()),
                "images_per_patient": n / max(part["patient_id"].nunique(), 1),
                "labels_per_image": float(part[classes].sum(axis=1).mean()) if n else float("nan"),
                "classes_without_positive": int((part[classes].sum(axis=0) == 0).sum()),
            }
        )
    return pd.DataFrame(rows)


def class_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Long table ``class``, ``split``, ``count``, ``prevalence``, classes in canonical order."""
    classes = class_names(labels)
    rows = []
    for split in SPLITS:
        part = labels[labels["split"] == split]
        for c in classes:
            count = int(part[c].sum())
            rows.append(
                {
                    "class": c,
                    "split": split,
                    "count": count,
                    "prevalence": count / len(part) if len(part) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def class_iou_table(labels: pd.DataFrame, *, split: str | None = None) -> pd.DataFrame:
    """Co-occurrence of classes as intersection over union of their positive images
    (:func:`prunecxr.stats.label_iou`, over the images of ``split``, or all): a square
    DataFrame indexed and columned by class, NaN where neither class has a positive."""
    classes = class_names(labels)
    part = labels if split is None else labels[labels["split"] == split]
    return pd.DataFrame(stats.label_iou(part[classes].to_numpy()), index=classes, columns=classes)


def labels_per_image(labels: pd.DataFrame) -> pd.DataFrame:
    """``split``, ``n_labels`` (positive classes of an image, No Finding included),
    ``images``, ``fraction`` of the split."""
    classes = class_names(labels)
    n = labels[classes].sum(axis=1).rename("n_labels")
    out = (
        pd.concat([labels["split"], n], axis=1)
        .groupby(["split", "n_labels"])
        .size()
        .rename("images")
        .reset_index()
    )
    out["fraction"] = out["images"] / out.groupby("split")["images"].transform("sum")
    order = {s: k for k, s in enumerate(SPLITS)}
    return out.sort_values(
        ["split", "n_labels"],
        key=lambda s: s.map(order) if s.name == "split" else s,
        ignore_index=True,
    )


def example_images(
    run: str, *, split: str = "train", seed: int = 0
) -> tuple[np.ndarray, pd.DataFrame]:
    """One image per class: of its positive images, one with the fewest other labels
    (ties broken by a hash of the id keyed with ``seed``).

    Returns (uint8 ``[K, H, W]``, DataFrame ``class``, ``image_id``, ``labels``) for the
    ``K`` classes that have a positive in ``split``.
    """
    s = open_split(run, split)
    rows, picks = [], []
    for k, c in enumerate(s.classes):
        pos = np.flatnonzero(s.labels[:, k] == 1)
        if not len(pos):
            continue
        # the fewest co-occurring labels first, then a keyed hash of the id
        rank = np.empty(len(pos), np.int64)
        rank[hash_rank([s.image_ids[p] for p in pos], f"prunecxr-example-{seed}")] = np.arange(
            len(pos)
        )
        n_labels = s.labels[pos].sum(axis=1)
        pick = int(pos[np.lexsort((rank, n_labels))[0]])
        picks.append(pick)
        names = [s.classes[j] for j in np.flatnonzero(s.labels[pick])]
        rows.append({"class": c, "image_id": s.image_ids[pick], "labels": ", ".join(names)})
    return np.asarray(s.images[picks]), pd.DataFrame(rows)


# -- figures: each returns (figure, the plotted data) -----------------------------------------

_SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def class_counts_figure(labels: pd.DataFrame):
    """Positive images per class and split on a log axis: the long tail."""
    import plotly.graph_objects as go

    counts = class_counts(labels)
    fig = go.Figure()
    for split in SPLITS:
        part = counts[counts["split"] == split]
        fig.add_bar(
            x=part["class"],
            y=part["count"].where(part["count"] > 0),
            name=split,
            marker_color=_SPLIT_COLORS[split],
            customdata=part["prevalence"],
            hovertemplate="%{x}<br>%{y} images (%{customdata:.2%})<extra>" + split + "</extra>",
        )
    fig.update_layout(
        title="Positive images per class (log scale): the long tail",
        barmode="group",
        xaxis_title="class (canonical order)",
        yaxis_title="images",
        yaxis_type="log",
        legend_title="split",
    )
    return fig, counts


def iou_figure(labels: pd.DataFrame, *, split: str | None = None):
    """Heatmap of class co-occurrence, IoU of positive image sets (diagonal blank)."""
    import plotly.graph_objects as go

    iou = class_iou_table(labels, split=split)
    shown = iou.to_numpy(copy=True)
    np.fill_diagonal(shown, np.nan)
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            x=list(iou.columns),
            y=list(iou.index),
            colorscale="Viridis",
            zmin=0,
            colorbar_title="IoU",
            hovertemplate="%{y} & %{x}<br>IoU %{z:.3f}<extra></extra>",
        )
    )
    where = f"{split} split" if split else "all images"
    fig.update_layout(
        title=f"Class co-occurrence: IoU of positive images ({where})", yaxis_autorange="reversed"
    )
    data = (
        iou.rename_axis("class_a")
        .reset_index()
        .melt(id_vars="class_a", var_name="class_b", value_name="iou")
    )
    return fig, data


def labels_per_image_figure(labels: pd.DataFrame):
    """Share of images with 1, 2, ... positive labels, per split."""
    import plotly.graph_objects as go

    table = labels_per_image(labels)
    fig = go.Figure()
    for split in SPLITS:
        part = table[table["split"] == split]
        fig.add_bar(
            x=part["n_labels"],
            y=part["fraction"],
            name=split,
            marker_color=_SPLIT_COLORS[split],
            customdata=part["images"],
            hovertemplate="%{x} labels: %{customdata} images (%{y:.1%})<extra>"
            + split
            + "</extra>",
        )
    fig.update_layout(
        title="Positive labels per image (No Finding counts as one)",
        barmode="group",
        xaxis_title="positive labels",
        yaxis_title="fraction of the split's images",
        yaxis_tickformat=".0%",
        xaxis_dtick=1,
        legend_title="split",
    )
    return fig, table


def patients_figure(labels: pd.DataFrame):
    """Patients and images per split."""
    import plotly.graph_objects as go

    summary = split_summary(labels)
    summary = summary[summary["split"].isin(SPLITS)]
    fig = go.Figure()
    fig.add_bar(x=summary["split"], y=summary["patients"], name="patients", marker_color="#6a3d9a")
    fig.add_bar(x=summary["split"], y=summary["images"], name="images", marker_color="#b2df8a")
    fig.update_layout(
        title="Patients and images per split (patient-disjoint)",
        barmode="group",
        xaxis_title="split",
        yaxis_title="count",
    )
    return fig, summary[["split", "patients", "images", "images_per_patient"]]


def examples_figure(run: str, *, split: str = "train", seed: int = 0):
    """One image per class from the run's image cache, titled with its labels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    imgs, table = example_images(run, split=split, seed=seed)
    n = len(imgs)
    cols = min(5, max(n, 1))
    rows = max(1, -(-n // cols))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(table["class"]) if n else None,
        horizontal_spacing=0.01,
        vertical_spacing=0.06,
    )
    for k in range(n):
        fig.add_trace(
            go.Heatmap(
                z=imgs[k],
                colorscale="gray",
                zmin=0,
                zmax=255,
                showscale=False,
                hovertemplate=f"{table['image_id'].iat[k]}<br>{table['labels'].iat[k]}"
                "<extra></extra>",
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(title=f"One {split} image per class, as the models see them")
    return fig, table


def difficulty_table(run: str) -> pd.DataFrame:
    """The phantom run's per-finding strengths beside the calibration's target and reached AUROC.

    One row per finding: ``finding``, ``strength`` (the run's), ``target_auroc`` and
    ``calibration_auroc`` (what the calibration's own seeds reached with the shipped table;
    blank when the run used a table of its own).
    """
    record = config.run_data(run).get("phantom_difficulty")
    if record is None:
        raise ValueError(f"run {run!r} is not a phantom run: it has no phantom difficulty")
    shipped = (
        reference.phantom_difficulty(record["condition"])
        if record["condition"] in reference.CONDITIONS
        else None
    )
    rows = []
    for finding, strength in record["strength"].items():
        row = {
            "finding": finding,
            "strength": strength,
            "target_auroc": np.nan,
            "calibration_auroc": np.nan,
        }
        if shipped is not None and shipped["strength"].get(finding) == strength:
            row["target_auroc"] = shipped.get("target_auroc", {}).get(finding, np.nan)
            row["calibration_auroc"] = shipped.get("reached_auroc", {}).get(finding, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def difficulty_caption(run: str) -> str:
    """One line naming the run's difficulty condition and where its table comes from."""
    record = config.run_data(run)["phantom_difficulty"]
    condition = record["condition"]
    if condition not in reference.CONDITIONS:
        return "a strength table of the run's own (not a shipped condition)"
    prov = reference.phantom_difficulty(condition).get("provenance", {})
    what = {
        "calibrated": "every finding at CheXNet's published AUROC",
        "equal": "every finding at one AUROC, the median of CheXNet's",
    }[condition]
    when = f", calibrated {prov['date']} with seeds {prov.get('seeds')}" if "date" in prov else ""
    return f"condition {condition!r} ({what}{when})"


def locations_figure(run: str):
    """How large each finding's drawn location is: the box's share of the image, per finding."""
    import plotly.graph_objects as go

    loc = artifacts.read_locations(run)
    res = config.run_data(run)["resolution"]
    drawn = loc[loc["pixels"] > 0]
    area = (drawn["x1"] - drawn["x0"]).astype(float) * (drawn["y1"] - drawn["y0"]) / res**2
    table = (
        pd.DataFrame({"class": drawn["class"], "area": area, "pixels": drawn["pixels"] / res**2})
        .groupby("class", sort=False)
        .agg(
            positives=("area", "size"),
            box_median=("area", "median"),
            box_q1=("area", lambda a: a.quantile(0.25)),
            box_q3=("area", lambda a: a.quantile(0.75)),
            signature_median=("pixels", "median"),
        )
        .reset_index()
    )
    faint = loc.groupby("class", sort=False)["pixels"].apply(lambda p: int((p == 0).sum()))
    table["not_visible"] = table["class"].map(faint).fillna(0).astype(int)
    order = {c: k for k, c in enumerate(config.run_data(run)["classes"])}  # canonical order
    table = table.sort_values("class", key=lambda c: c.map(order)).reset_index(drop=True)
    fig = go.Figure()
    fig.add_bar(
        x=table["class"],
        y=table["box_median"],
        name="box (median)",
        error_y={
            "type": "data",
            "symmetric": False,
            "array": table["box_q3"] - table["box_median"],
            "arrayminus": table["box_median"] - table["box_q1"],
        },
        customdata=table[["positives", "not_visible"]],
        hovertemplate="%{x}<br>median box %{y:.1%} of the image<br>%{customdata[0]} positives, "
        "%{customdata[1]} too faint to locate<extra></extra>",
    )
    fig.add_bar(x=table["class"], y=table["signature_median"], name="drawn pixels (median)")
    fig.update_layout(
        title="Where findings were drawn: share of the image in the box (median, IQR)",
        barmode="group",
        xaxis_title="finding",
        yaxis_title="share of the image",
        yaxis_tickformat=".0%",
    )
    return fig, table
