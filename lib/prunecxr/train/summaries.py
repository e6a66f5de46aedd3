"""Notebook 02's tables, sentences and figures, computed from the run's files.

The dense models' test AP goes through :func:`prunecxr.inference.load_model` and
:func:`prunecxr.inference.predict`, the way the pruning sweep evaluates them, and through
:func:`prunecxr.metrics.ranking_metrics`, the one AP of the project.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts, fmt, inference, runtime
from ..metrics import ranking_metrics
from .population import check_seeds

__all__ = [
    "class_ap_figure",
    "headline_text",
    "learning_curves_figure",
    "plan_text",
    "read_histories",
    "summarize_test_ap",
    "test_average_precision",
]


def read_histories(run: str, seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """The ``history.csv`` of every seed (default: all that have a folder), with a ``seed`` column."""
    seeds = artifacts.seed_dirs(run) if seeds is None else check_seeds(seeds)
    if not seeds:
        raise FileNotFoundError(f"run {run!r} has no trained seeds; run notebook 02_train")
    columns = ["seed", *artifacts.HISTORY_COLUMNS]
    return pd.concat(
        [artifacts.read_history(run, s).assign(seed=s)[columns] for s in seeds], ignore_index=True
    )


def test_average_precision(
    run: str,
    *,
    seeds: Iterable[int] | None = None,
    batch_size: int = 256,
    device: str = "auto",
    threads: int = 0,
) -> pd.DataFrame:
    """Per-class test AP of the dense (unpruned) models.

    Parameters
    ----------
    run : a run whose seeds notebook 02 trained.
    seeds : the seeds to evaluate (default: every trained seed).
    batch_size : test images per forward pass.
    device : ``"auto"`` or a device name.
    threads : intra-op CPU threads (0: all usable cores); the count changes the rounding of
        the probabilities, as in the sweep of notebook 03. Not used on a GPU.

    Returns
    -------
    DataFrame, one row per (seed, class): ``seed``, ``class``, ``ap`` (NaN for a class
    without a positive test image), ``n_pos`` (positive test images), ``train_count``
    (positive training images); classes in the dataset's canonical order.
    """
    from .. import data

    seeds = artifacts.trained_seeds(run) if seeds is None else check_seeds(seeds)
    if not seeds:
        raise FileNotFoundError(f"run {run!r} has no trained seeds; run notebook 02_train")
    test = data.open_split(run, "test")
    train_counts = np.asarray(data.open_split(run, "train").labels, dtype=np.int64).sum(axis=0)
    labels = np.asarray(test.labels)
    dev = runtime.resolve_device(device)
    rows = []
    with runtime.num_threads(runtime.check_threads(threads) if dev.type == "cpu" else None):
        for s in seeds:
            probs = inference.predict(
                inference.load_model(run, s, device=dev),
                test.images,
                batch_size=batch_size,
                device=dev,
            )
            ap = ranking_metrics(labels, probs)[0]
            for c, name in enumerate(test.classes):
                rows.append(
                    {
                        "seed": s,
                        "class": name,
                        "ap": ap[c],
                        "n_pos": int(labels[:, c].sum()),
                        "train_count": int(train_counts[c]),
                    }
                )
    return pd.DataFrame(rows)


def summarize_test_ap(ap: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of :func:`test_average_precision`'s table.

    ``mean_ap`` and ``sd_ap``: mean and standard deviation over seeds of each seed's mean AP
    over the classes with a test positive; ``rarest`` and ``commonest``: the classes with
    the fewest and most positive training images (among those with a test positive), each
    with its ``train_count`` and mean AP over seeds.
    """
    per_seed = ap.groupby("seed")["ap"].mean()
    per_class = (
        ap.dropna(subset=["ap"])
        .groupby("class")
        .agg(ap=("ap", "mean"), train_count=("train_count", "first"))
    )
    ordered = per_class.sort_values("train_count")

    def row(name):
        return {
            "class": name,
            "train_count": int(ordered.loc[name, "train_count"]),
            "ap": float(ordered.loc[name, "ap"]),
        }

    return {
        "n_seeds": int(per_seed.size),
        "mean_ap": float(per_seed.mean()),
        "sd_ap": float(per_seed.std(ddof=1)) if per_seed.size > 1 else math.nan,
        "rarest": row(ordered.index[0]),
        "commonest": row(ordered.index[-1]),
    }


def plan_text(run: str) -> str:
    """One sentence on how the run's population was executed, as ``models/train.json`` records it."""
    ex = artifacts.read_train_record(run).get("execution") or {}
    threads, n = ex.get("threads"), ex.get("workers")
    nodes = len(set((ex.get("nodes") or {}).values()))
    on_nodes = f" on {nodes} node{'s' if nodes != 1 else ''}" if nodes else ""
    way = {
        "sequential": "one seed after another",
        "ray": f"as Ray tasks, up to {n} at a time{on_nodes},",
    }.get(ex.get("population"), "in an unrecorded way")
    per_model = f", {threads} thread{'s' if threads != 1 else ''} per model" if threads else ""
    if ex.get("gpus_per_model"):
        per_model = f", {ex['gpus_per_model']:g} GPU per model"
    return f"Trained {way} on {ex.get('device', 'an unrecorded device')}{per_model}."


def headline_text(summary: dict[str, Any]) -> str:
    """:func:`summarize_test_ap`'s numbers as one sentence."""
    r, c = summary["rarest"], summary["commonest"]
    return (
        f"Dense models ({summary['n_seeds']} seeds): mean test AP {fmt.num(summary['mean_ap'], 3)} "
        f"(SD {fmt.num(summary['sd_ap'], 3)} across seeds); commonest class {c['class']} "
        f"({c['train_count']} training images) AP {fmt.num(c['ap'], 3)}; rarest class "
        f"{r['class']} ({r['train_count']}) AP {fmt.num(r['ap'], 3)}."
    )


# -- figures ---------------------------------------------------------------------------------


def learning_curves_figure(history: pd.DataFrame):
    """Validation loss and validation mean AP per epoch, one line per seed.

    ``history`` is :func:`read_histories`'s table; a marker shows each seed's selected
    (lowest validation loss) epoch. Returns the figure and its plotted data (``seed``,
    ``epoch``, ``val_loss``, ``val_mean_ap``: not the epochs' wall times, which differ from
    run to run).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation loss", "Validation mean AP"))
    palette = _palette(history["seed"].nunique())
    for color, (seed, df) in zip(palette, history.groupby("seed")):
        df = df.sort_values("epoch")
        best = df.loc[df["val_loss"].idxmin()]
        for col, key in ((1, "val_loss"), (2, "val_mean_ap")):
            fig.add_trace(
                go.Scatter(
                    x=df["epoch"],
                    y=df[key],
                    mode="lines",
                    name=f"seed {seed}",
                    legendgroup=str(seed),
                    showlegend=col == 1,
                    line=dict(color=color, width=1.5),
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=[best["epoch"]],
                    y=[best[key]],
                    mode="markers",
                    legendgroup=str(seed),
                    showlegend=False,
                    marker=dict(color=color, size=8, symbol="circle-open", line=dict(width=2)),
                    hovertext=f"seed {seed}: selected epoch {int(best['epoch'])}",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="BCE loss", row=1, col=1)
    fig.update_yaxes(title_text="mean AP", row=1, col=2)
    fig.update_layout(title="Learning curves of the dense population (circle: selected epoch)")
    return fig, history[["seed", "epoch", "val_loss", "val_mean_ap"]].reset_index(drop=True)


def class_ap_figure(ap: pd.DataFrame):
    """Per-class test AP across seeds (box and points), classes from most to least frequent.

    ``ap`` is :func:`test_average_precision`'s table; the axis labels give each class's
    number of positive training images.
    """
    import plotly.graph_objects as go

    order = ap.groupby("class")["train_count"].first().sort_values(ascending=False)
    labels = {c: f"{c} ({n})" for c, n in order.items()}
    fig = go.Figure()
    for c in order.index:
        df = ap[ap["class"] == c]
        fig.add_trace(
            go.Box(
                x=[labels[c]] * len(df),
                y=df["ap"],
                name=labels[c],
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker=dict(size=4, color="#1f77b4"),
                line=dict(color="#1f77b4"),
                showlegend=False,
                hovertext=[f"seed {s}" for s in df["seed"]],
            )
        )
    fig.update_layout(
        title="Test AP of the dense models per class, across seeds (classes by training frequency)",
        xaxis_title="class (positive training images)",
        yaxis_title="average precision",
        yaxis_range=[0, 1],
    )
    fig.update_xaxes(tickangle=-40)
    return fig


def _palette(n: int) -> list[str]:
    import plotly.colors

    base = plotly.colors.qualitative.Dark24
    return [base[i % len(base)] for i in range(max(n, 1))]
