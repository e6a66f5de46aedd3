"""Notebook 09's displays: the HTL gallery and summary, the paired differences, localization and
forgettability figures (all through :func:`prunecxr.figures.save_figure`), from the tables of
:mod:`prunecxr.attend.evaluate`."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import artifacts, fmt
from ..analysis import forgetting, pies
from .compare import BASELINE

__all__ = [
    "correlations_display",
    "differences_display",
    "differences_figure",
    "forgetting_figure",
    "htl_gallery",
    "htl_summary",
    "localization_figure",
]

#: the quantities notebook 09 compares, with their names in figures
QUANTITIES = {
    "ap": "test AP",
    "pointing": "pointing-game accuracy",
    "iou": "IoU of the thresholded CAM",
}


def htl_summary(htl: pd.DataFrame) -> pd.DataFrame:
    """Per identification (``source``, ``seed``, ``epoch``): images scored, HTL images, and the
    Jaccard overlap of its HTL set with the post hoc one (NaN without a post hoc set)."""
    post = set(htl.loc[(htl["source"] == "posthoc") & htl["htl"], "image_id"])
    has_post = bool((htl["source"] == "posthoc").any())
    rows = []
    for (source, seed, epoch), part in htl.groupby(
        ["source", "seed", "epoch"], sort=False, dropna=False
    ):
        chosen = set(part.loc[part["htl"], "image_id"])
        union = chosen | post
        rows.append(
            {
                "source": source,
                "seed": seed,
                "epoch": epoch,
                "images": len(part),
                "htl": len(chosen),
                "jaccard_with_posthoc": (len(chosen & post) / len(union))
                if has_post and union
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


def htl_gallery(
    run: str,
    posthoc: pd.DataFrame,
    dense: np.ndarray,
    pruned: np.ndarray,
    *,
    size: int,
    embed: bool,
    sparsity: float,
):
    """The ``size`` post hoc HTL training images of lowest Spearman, as HTML cards
    (:func:`prunecxr.analysis.pies.gallery_html`); images only if ``embed`` (phantom: "auto")."""
    from IPython.display import HTML

    from .. import data

    split = data.open_split(run, "train")
    classes = list(split.classes)
    order = posthoc.index[posthoc["htl"]].to_numpy()
    order = order[
        np.lexsort((posthoc["image_id"].to_numpy()[order], posthoc["spearman"].to_numpy()[order]))
    ][:size]

    def top(p):
        k = np.lexsort((np.arange(len(classes)), -p))[:3]
        return "; ".join(f"{classes[j]} ({fmt.num(p[j])})" for j in k)

    table = pd.DataFrame(
        [
            {
                "image_id": posthoc.at[i, "image_id"],
                "spearman": posthoc.at[i, "spearman"],
                "labels": ", ".join(c for c, y in zip(classes, split.labels[i]) if y) or "(none)",
                "dense_top": top(dense[i]),
                "pruned_top": top(pruned[i]),
            }
            for i in order
        ]
    )
    images = [np.asarray(split.images[i]) for i in order] if embed else None
    return HTML(
        pies.gallery_html(table, run=run, pie_sparsity=sparsity, images=images)
        if len(table)
        else "<p>" + html.escape("No HTL images (the training split is too small).") + "</p>"
    )


def differences_display(diff: pd.DataFrame) -> pd.DataFrame:
    """:func:`prunecxr.attend.compare.paired_differences` as text: mean difference, 95% CI, P."""
    return pd.DataFrame(
        {
            "quantity": diff["quantity"].map(QUANTITIES),
            "class": diff["class"],
            "arm": diff["arm"],
            "seeds": diff["n_seeds"],
            "dense": [fmt.num(v, 3) for v in diff["baseline_mean"]],
            "attended": [fmt.num(v, 3) for v in diff["arm_mean"]],
            "difference [95% CI]": [
                f"{fmt.num(m, 3)} [{fmt.num(lo, 3)}, {fmt.num(hi, 3)}]"
                for m, lo, hi in zip(diff["mean_difference"], diff["ci_low"], diff["ci_high"])
            ],
            "Wilcoxon P": [fmt.pvalue(p) for p in diff["p_value"]],
        }
    )


def differences_figure(diff: pd.DataFrame, classes: list[str]) -> tuple[go.Figure, pd.DataFrame]:
    """Mean paired difference (arm − dense) with its 95% bootstrap CI, per class of ``classes``
    (aggregates first), one panel per quantity; the plotted rows."""
    data = diff[diff["class"].isin(classes)].copy()
    quantities = [q for q in QUANTITIES if q in set(data["quantity"])]
    fig = make_subplots(
        rows=len(quantities),
        cols=1,
        shared_xaxes=False,
        subplot_titles=[f"{QUANTITIES[q]}: attended − dense" for q in quantities],
    )
    colors = dict(zip(pd.unique(data["arm"]), ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")))
    for r, q in enumerate(quantities, start=1):
        part = data[data["quantity"] == q]
        for arm, rows in part.groupby("arm", sort=False):
            fig.add_trace(
                go.Scatter(
                    x=rows["class"],
                    y=rows["mean_difference"],
                    mode="markers",
                    name=arm,
                    legendgroup=arm,
                    showlegend=r == 1,
                    marker={"color": colors[arm], "size": 8},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": rows["ci_high"] - rows["mean_difference"],
                        "arrayminus": rows["mean_difference"] - rows["ci_low"],
                    },
                ),
                row=r,
                col=1,
            )
        fig.add_hline(y=0, line={"color": "grey", "dash": "dot"}, row=r, col=1)
    fig.update_layout(
        title="Attending the hard-to-learn images: paired differences from the dense models "
        "(mean over seeds, 95% bootstrap CI)"
    )
    return fig, data


def localization_figure(loc: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Pointing-game accuracy and IoU per class (mean over seeds), one bar per arm; the plotted means."""
    shown = [c for c in ("pointing", "iou", "n_boxes", "box_share") if c in loc]
    data = loc.groupby(["arm", "class"], sort=False)[shown].mean().reset_index()
    fig = make_subplots(rows=2, cols=1, subplot_titles=[QUANTITIES["pointing"], QUANTITIES["iou"]])
    for arm, rows in data.groupby("arm", sort=False):
        for r, q in enumerate(("pointing", "iou"), start=1):
            fig.add_trace(
                go.Bar(x=rows["class"], y=rows[q], name=arm, legendgroup=arm, showlegend=r == 1),
                row=r,
                col=1,
            )
    if "box_share" in data:  # the pointing game of a point drawn uniformly at random
        chance = data.drop_duplicates("class")
        fig.add_trace(
            go.Scatter(
                x=chance["class"],
                y=chance["box_share"],
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 24, "color": "black"},
                name="chance (a random point)",
            ),
            row=1,
            col=1,
        )
    source = loc["boxes"].iloc[0] if "boxes" in loc and len(loc) else "drawn"
    against = "the drawn findings" if source == "drawn" else f"NIH's boxes ({source})"
    maps = (
        "Grad-CAM" if "map" in loc and (loc["map"] == "gradcam").all() else "class activation maps"
    )
    fig.update_layout(
        barmode="group",
        title=f"Localization of {against} by {maps} (test split, mean over seeds)",
    )
    return fig, data


def forgetting_figure(table: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 3 (right) per arm: relative AP change at the most pruned level against training frequency."""
    change = forgetting.change_column(table)
    data = table[["arm", "class", "train_count", "first_drop", change]].copy()
    fig = go.Figure()
    for arm, rows in data.groupby("arm", sort=False):
        fig.add_trace(
            go.Scatter(
                x=rows["train_count"],
                y=rows[change],
                mode="markers",
                name=arm,
                text=rows["class"],
                marker={"size": 9 if arm == BASELINE else 7},
            )
        )
    fig.update_xaxes(type="log", title="positive training images (log)")
    fig.update_yaxes(title="relative AP change at the most pruned level")
    fig.update_layout(title="Forgetting under pruning, dense vs attended (Fig. 3, same seeds)")
    return fig, data


def read_table(run: str, name: str) -> pd.DataFrame:
    """``attend/<name>.parquet`` of ``run``."""
    from .. import paths

    return artifacts.read_parquet(
        paths.run_paths(run).attend_table(name), what="notebook 09_attend"
    )


def correlations_display(correlations: pd.DataFrame) -> pd.DataFrame:
    """:func:`prunecxr.attend.evaluate.forgetting_correlations` as text, one row per arm and quantity."""
    from .. import stats

    shown = stats.correlation_display(correlations.drop(columns="arm"))
    shown.insert(0, "arm", correlations["arm"].to_numpy())
    return shown
