"""Fig. 1: overall performance against sparsity, from ``metrics.parquet`` (notebook 03).

Holste et al. (2023), Results, "overall effect of pruning" and Fig. 1: for each seed ``i``
and sparsity ``k`` the class-mean AP ``mAP_{i,k}``; at each sparsity the seeds' values are
compared with the dense models' (``k = 0``) by Welch's two-sided t-test, and the paper reports
the first sparsity with a significant drop at α = 0.001 (:data:`prunecxr.published.PAPER_ALPHA`).
Beside it, the distribution of the dense weights' magnitudes: "over half" below 0.01
(:data:`prunecxr.published.SMALL_WEIGHT`).

* :func:`overall_table` — median and interquartile range over seeds of ``mAP_{i,k}``,
  Welch's t-test against the dense models, Holm's correction (:func:`holm`);
  :func:`first_significant_drop`;
* :func:`magnitude_summary` — histogram and share below 0.01 of the pruned-set magnitudes
  (:func:`prunecxr.compress.dense_magnitudes` supplies them);
* :func:`figure_1` and the notebook's tables (:func:`overall_tables`, :func:`summary_display`,
  :func:`overall_long`, :func:`magnitude_sentence`).

Torch-free: it reads the run's files through :mod:`prunecxr.artifacts`, so the analysis
notebooks and :mod:`prunecxr.paper` use it without loading a deep-learning stack.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.stats

from .. import artifacts, fmt, levels
from ..metrics import MissingPositivesWarning, each_warning_once
from ..published import PAPER_ALPHA, SMALL_WEIGHT

if TYPE_CHECKING:  # plotly is imported where a figure is drawn
    import plotly.graph_objects as go


# =========================================================================================
# Statistics of the seeds' class-mean AP
# =========================================================================================
OVERALL_COLUMNS = [
    "sparsity",
    "n_seeds",
    "mean_ap_median",
    "mean_ap_q25",
    "mean_ap_q75",
    "mean_ap_mean",
    "welch_t",
    "p_value",
    "p_holm",
    "significant_drop",
    "significant_drop_holm",
]


def seed_mean_ap(metrics: pd.DataFrame) -> pd.DataFrame:
    """Class-mean AP per (seed, level): ``mAP_{i,k} = mean_c AP_{i,k,c}`` over defined APs.

    The level column is the metrics' (``sparsity``, ``bits`` or ``channel_fraction``,
    :func:`prunecxr.levels.axis_of`). Classes whose AP is NaN (no positive test image) are
    left out, with a :class:`MissingPositivesWarning`. Returns columns ``seed``, the level
    column, ``mean_ap``.
    """
    level = levels.axis_of(metrics.columns).name
    missing = [c for c in ("seed", level, "class", "ap") if c not in metrics.columns]
    if missing:
        raise ValueError(
            f"metrics lack the columns {missing}; see docs/artifacts.md (metrics.parquet)"
        )
    if "method" in metrics.columns and metrics["method"].nunique() > 1:
        raise ValueError(
            f"metrics hold several methods {sorted(metrics['method'].unique())}; pass one at a time"
        )
    undefined = sorted(metrics.loc[metrics["ap"].isna(), "class"].unique())
    if undefined:
        warnings.warn(
            f"AP is NaN for classes {undefined} (no positive test image); they are left out "
            "of the class-mean AP",
            MissingPositivesWarning,
            stacklevel=2,
        )
    out = metrics.groupby(["seed", level], as_index=False)["ap"].mean()  # skips NaN
    return out.rename(columns={"ap": "mean_ap"})


def holm(p: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaN entries stay NaN and do not count as tests.

    :func:`statsmodels.stats.multitest.multipletests` (``method="holm"``) over the finite
    entries: with the ``m`` finite p-values sorted ascending,
    ``p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) p_(j))``.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def overall_table(metrics: pd.DataFrame, *, alpha: float = PAPER_ALPHA) -> pd.DataFrame:
    """Fig. 1's statistics: one row per level of the seeds' class-mean AP.

    Parameters
    ----------
    metrics : DataFrame
        ``metrics.parquet`` of one method (columns ``seed``, the level column, ``class``,
        ``ap``); must hold the dense level (sparsity 0, 32 bits, channel fraction 0). The
        table's first column is that level column (its name); rows in compression order.
    alpha : float
        Significance level (the paper's: 0.001).

    Returns
    -------
    DataFrame, columns :data:`OVERALL_COLUMNS`
        ``mean_ap_median``, ``mean_ap_q25``, ``mean_ap_q75``, ``mean_ap_mean``: median,
        quartiles (linear interpolation) and mean over seeds of ``mAP_{i,k}``
        (:func:`seed_mean_ap`). ``welch_t``, ``p_value``: Welch's two-sided t-test
        (``scipy.stats.ttest_ind(equal_var=False)``) of ``{mAP_{i,k}}_i`` against
        ``{mAP_{i,0}}_i`` — NaN at sparsity 0, and when a group has fewer than two seeds or
        both have no variance. ``p_holm``: :func:`holm` over the non-zero sparsities.
        ``significant_drop`` = ``p_value < alpha`` and ``welch_t < 0`` (lower than dense);
        ``significant_drop_holm`` likewise with ``p_holm``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    per_seed = seed_mean_ap(metrics)
    axis = levels.axis_of(per_seed.columns)
    present = np.array(axis.order(per_seed[axis.name].unique()))
    if not np.any(axis.is_dense(present)):
        raise ValueError(
            f"metrics have no {axis.name} {axis.format(axis.dense)} (the dense models); "
            f"{axis.name} levels present: {list(present)}"
        )
    values = {s: g["mean_ap"].to_numpy(dtype=float) for s, g in per_seed.groupby(axis.name)}
    dense = values[present[axis.is_dense(present)][0]]
    rows = []
    for s in present:
        v = values[s]
        v = v[np.isfinite(v)]
        t = p = math.nan
        if not axis.is_dense(s) and v.size >= 2 and np.isfinite(dense).sum() >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # zero variance → NaN, documented
                res = scipy.stats.ttest_ind(v, dense[np.isfinite(dense)], equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append(
            {
                axis.name: float(s),
                "n_seeds": int(v.size),
                "mean_ap_median": float(np.median(v)) if v.size else math.nan,
                "mean_ap_q25": float(np.quantile(v, 0.25)) if v.size else math.nan,
                "mean_ap_q75": float(np.quantile(v, 0.75)) if v.size else math.nan,
                "mean_ap_mean": float(v.mean()) if v.size else math.nan,
                "welch_t": t,
                "p_value": p,
            }
        )
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    lower = table["welch_t"] < 0
    table["significant_drop"] = lower & (table["p_value"] < alpha)
    table["significant_drop_holm"] = lower & (table["p_holm"] < alpha)
    return table[table_columns(axis.name)]


def table_columns(level_name: str = "sparsity") -> list[str]:
    """:data:`OVERALL_COLUMNS` with the level column named by its axis."""
    return [level_name if c == "sparsity" else c for c in OVERALL_COLUMNS]


def first_significant_drop(table: pd.DataFrame, *, holm: bool = False) -> float:
    """The least compressed level whose mean AP is significantly below the dense models'
    (the smallest sparsity, the most bits, ...); NaN if none.

    ``table`` is :func:`overall_table`'s; ``holm`` selects the Holm-corrected flag.
    """
    column = "significant_drop_holm" if holm else "significant_drop"
    if column not in table.columns:
        raise ValueError(f"table lacks the column {column!r}; pass overall_table's result")
    axis = levels.axis_of(table.columns)
    hits = table.loc[table[column].astype(bool), axis.name]
    return float(axis.order(hits)[0]) if len(hits) else math.nan


# =========================================================================================
# Fig. 1, right: the dense weights' magnitudes
# =========================================================================================
@dataclass(frozen=True)
class MagnitudeSummary:
    """Distribution of ``|w|`` over the pruned set of the dense models (Fig. 1, right).

    ``histogram`` has columns ``left``, ``right``, ``count``, ``fraction`` over log-spaced
    bins (summed over models; magnitudes beyond the outer edges are counted in the outer
    bins, exact zeros only in ``n_zero``). ``fraction_below`` is the exact share of weights
    with ``|w| < below`` (zeros included).
    """

    histogram: pd.DataFrame
    n_models: int
    n_weights: int
    n_zero: int
    below: float
    fraction_below: float


#: log-spaced bin edges of the magnitude histogram: 10 per decade from 1e-8 to 10
MAGNITUDE_EDGES = np.logspace(-8, 1, 91)


def magnitude_summary(
    magnitudes: Iterable[np.ndarray],
    *,
    below: float = SMALL_WEIGHT,
    edges: np.ndarray = MAGNITUDE_EDGES,
) -> MagnitudeSummary | None:
    """Histogram and share below ``below`` of the dense models' pruned-set magnitudes.

    Parameters
    ----------
    magnitudes : iterable of 1-D arrays
        ``|w|`` of each model's pruned set (:func:`prunecxr.compress.dense_magnitudes`); read
        one at a time, so a generator keeps one model's weights in memory.
    below : float
        The paper's mark (0.01): ``fraction_below`` is the exact share of ``|w| < below``.
    edges : array
        Bin edges of the histogram (log-spaced by default).

    Returns
    -------
    MagnitudeSummary or None
        None when there is no model (a run whose predictions were imported has no weights).
    """
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    n_models = n_weights = n_zero = n_below = 0
    for mags in magnitudes:
        mags = np.abs(np.asarray(mags, dtype=np.float32).reshape(-1))
        n_models += 1
        n_weights += mags.size
        n_below += int((mags < below).sum())
        nonzero = mags[mags > 0]
        n_zero += mags.size - nonzero.size
        clipped = np.clip(nonzero, edges[0], np.nextafter(edges[-1], 0))
        counts += np.histogram(clipped, bins=edges)[0]
    if n_models == 0:
        return None
    if n_weights == 0:
        raise ValueError("magnitude_summary got models without weights")
    hist = pd.DataFrame(
        {
            "left": edges[:-1],
            "right": edges[1:],
            "count": counts,
            "fraction": counts / n_weights,
        }
    )
    return MagnitudeSummary(hist, n_models, n_weights, n_zero, float(below), n_below / n_weights)


# =========================================================================================
# The figure
# =========================================================================================
_METHOD_COLORS = {"global_l1": "#1f77b4", "layerwise_l1": "#2ca02c", "random": "#d62728"}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


#: height of one method's row of Fig. 1, in pixels
FIG1_ROW_HEIGHT = 260


def figure_1(
    tables: dict[str, pd.DataFrame],
    magnitudes: MagnitudeSummary | None,
    *,
    alpha: float = PAPER_ALPHA,
) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 1: mean AP against sparsity per method, beside the dense weights' magnitudes.

    Parameters
    ----------
    tables : dict
        ``method → overall_table(metrics)``; drawn one row per method, ``global_l1`` first.
    magnitudes : MagnitudeSummary or None
        The right panel (log-scale histogram of ``|w|``); omitted when None (imported runs).
    alpha : float
        The level the tables were computed at (named in the annotations).

    Returns
    -------
    (figure, data)
        ``data`` is the plotted values in long format: rows with ``panel == "mean_ap"``
        (``method`` and the table's columns) and ``panel == "weight_magnitude"`` (the
        histogram's columns).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = artifacts.method_order(tables)
    if not methods:
        raise ValueError("figure_1 needs at least one method's table")
    m = len(methods)
    shared = len({levels.axis_of(tables[method].columns).name for method in methods}) == 1
    titles = [f"{name}: class-mean AP, median and IQR over seeds" for name in methods]
    if magnitudes is not None:
        specs = [[{}, {"rowspan": m}]] + [[{}, None] for _ in range(m - 1)]
        titles = [titles[0], "dense weights |w| (pruned set)"] + titles[1:]
        fig = make_subplots(
            rows=m,
            cols=2,
            specs=specs,
            column_widths=[0.6, 0.4],
            subplot_titles=titles,
            shared_xaxes=shared,
            horizontal_spacing=0.1,
            vertical_spacing=0.12 / max(m - 1, 1),
        )
    else:
        fig = make_subplots(rows=m, cols=1, subplot_titles=titles, shared_xaxes=shared)
    level = fmt.num(alpha, 3)
    axes = {method: levels.axis_of(tables[method].columns) for method in methods}
    frames = []
    for row, method in enumerate(methods, start=1):
        table = tables[method]
        axis = axes[method]
        color = _METHOD_COLORS.get(method, "#555555")
        x = table[axis.name].to_numpy()
        fig.add_trace(
            go.Scatter(
                x=x,
                y=table["mean_ap_q75"],
                mode="lines",
                line=dict(width=0),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=table["mean_ap_q25"],
                mode="lines",
                line=dict(width=0),
                fill="tonexty",
                fillcolor=_rgba(color, 0.2),
                name=f"{method}: IQR over seeds",
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        x_hover = "%{x:.0%}" if axis.tickformat == ".0%" else "%{x}"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=table["mean_ap_median"],
                mode="lines+markers",
                line=dict(color=color),
                name=f"{method}: median over seeds",
                customdata=np.stack([table["n_seeds"], table["p_value"], table["p_holm"]], axis=-1),
                hovertemplate=f"{axis.name} {x_hover}<br>median mAP %{{y:.3f}}<br>n = %{{customdata[0]}}"
                "<br>P = %{customdata[1]:.2g}<br>P (Holm) = %{customdata[2]:.2g}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        first = first_significant_drop(table)
        first_holm = first_significant_drop(table, holm=True)
        last = f"none up to {axis.format(axis.order(table[axis.name])[-1])}"
        lines = [
            f"first significant drop (Welch, P < {level}): {last if math.isnan(first) else axis.format(first)}",
            f"with Holm correction: {last if math.isnan(first_holm) else axis.format(first_holm)}",
        ]
        for value, dash in ((first, "dash"), (first_holm, "dot")):
            if not math.isnan(value):
                fig.add_vline(
                    x=value, line=dict(color="#444444", dash=dash, width=1), row=row, col=1
                )
        fig.add_annotation(
            text="<br>".join(lines),
            xref="x domain",
            yref="y domain",
            row=row,
            col=1,
            x=0.99,
            y=0.97,
            xanchor="right",
            yanchor="top",
            showarrow=False,
            align="right",
            font=dict(size=11),
            bgcolor="rgba(255,255,255,0.7)",
        )
        fig.update_yaxes(title_text="mean AP", row=row, col=1)
        fig.update_xaxes(
            tickformat=axis.tickformat,
            autorange=True if axis.increasing else "reversed",
            row=row,
            col=1,
        )
        frames.append(table.assign(panel="mean_ap", method=method))
    for row, method in enumerate(methods, start=1):  # the axis title under each group of one axis
        if row == m or axes[methods[row]] != axes[method]:
            fig.update_xaxes(
                title_text=axes[method].label.lower(), showticklabels=True, row=row, col=1
            )
    if magnitudes is not None:
        h = magnitudes.histogram
        x = np.append(h["left"].to_numpy(), h["right"].iloc[-1])
        y = np.append(h["fraction"].to_numpy(), h["fraction"].iloc[-1])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                line=dict(shape="hv", color="#555555"),
                fill="tozeroy",
                name="share of weights per bin",
                showlegend=False,
            ),
            row=1,
            col=2,
        )
        fig.add_vline(x=magnitudes.below, line=dict(color="#b00020", dash="dash"), row=1, col=2)
        fig.add_annotation(
            text=(
                f"{fmt.pct(magnitudes.fraction_below, 1)} of |w| &lt; {fmt.num(magnitudes.below, 2)}"
                f"<br>({magnitudes.n_models} models)"
            ),
            xref="x domain",
            yref="y domain",
            row=1,
            col=2,
            x=0.02,
            y=0.98,
            xanchor="left",
            yanchor="top",
            showarrow=False,
            align="left",
            font=dict(size=11, color="#b00020"),
        )
        fig.update_xaxes(
            type="log", title_text="|w| (log scale)", exponentformat="power", row=1, col=2
        )
        fig.update_yaxes(title_text="share of weights", tickformat=".0%", row=1, col=2)
        frames.append(h.assign(panel="weight_magnitude"))
    fig.update_layout(
        title=dict(text="Fig. 1 — overall performance against sparsity"),
        height=FIG1_ROW_HEIGHT * m + 200,
        showlegend=False,
        margin=dict(t=130),
    )
    data = pd.concat(frames, ignore_index=True)
    front = ["panel", "method"]
    data = data[front + [c for c in data.columns if c not in front]]
    return fig, data


# =========================================================================================
# The notebook's tables
# =========================================================================================
def overall_tables(
    run: str, methods: Sequence[str], *, alpha: float = PAPER_ALPHA
) -> dict[str, pd.DataFrame]:
    """``method → overall_table`` from each method's ``metrics.parquet``, in figure order."""
    with each_warning_once():
        return {
            m: overall_table(artifacts.read_metrics(run, m), alpha=alpha)
            for m in artifacts.method_order(methods)
        }


def summary_display(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The first significant drops of every method as text (via :meth:`prunecxr.levels.Axis.format`)."""
    axes = [levels.axis_of(t.columns) for t in tables.values()]
    return pd.DataFrame(
        {
            "method": list(tables),
            "dense mean AP (median)": [
                fmt.num(t["mean_ap_median"].iloc[0], 3) for t in tables.values()
            ],
            "first significant drop": [
                a.format(first_significant_drop(t)) for a, t in zip(axes, tables.values())
            ],
            "… with Holm correction": [
                a.format(first_significant_drop(t, holm=True))
                for a, t in zip(axes, tables.values())
            ],
        }
    )


def overall_long(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The :func:`overall_table` of every method stacked, with a ``method`` column first.

    Tables of one axis keep its level column; tables of several axes are stacked with the
    columns ``level_name`` and ``level`` in its place.
    """
    axes = {m: levels.axis_of(t.columns).name for m, t in tables.items()}
    if len(set(axes.values())) <= 1:
        name = next(iter(axes.values()), "sparsity")
        return pd.concat([t.assign(method=m) for m, t in tables.items()], ignore_index=True)[
            ["method", *table_columns(name)]
        ]
    frames = [
        t.rename(columns={axes[m]: "level"}).assign(method=m, level_name=axes[m])
        for m, t in tables.items()
    ]
    return pd.concat(frames, ignore_index=True)[["method", "level_name", *table_columns("level")]]


def magnitude_sentence(summary: MagnitudeSummary | None) -> str:
    """The paper's observation, recomputed: the share of dense weights below 0.01."""
    if summary is None:
        return (
            "No dense checkpoints in this run (imported predictions): the weight-magnitude "
            "panel of Fig. 1 is left out."
        )
    return (
        f"Over the {summary.n_models} dense models, {fmt.pct(summary.fraction_below, 1)} of the "
        f"{summary.n_weights // summary.n_models:,} pruned-set weights per model have "
        f"|w| < {fmt.num(summary.below, 2)} ({fmt.pct(summary.n_zero / summary.n_weights, 2)} are exactly 0)."
    )
