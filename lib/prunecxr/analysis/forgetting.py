"""Class forgettability (notebook 04): Eq. 1, Fig. 2 and Fig. 3 of Holste et al. (2023).

The forgettability curve of class ``c`` is the median over seeds of the relative change in
average precision, ``(AP_{i,k,c} - AP_{i,0,c}) / AP_{i,0,c}``, at each sparsity ``k``. From
the curves this module derives, per class, the first sparsity at which the curve falls below
``-drop_threshold`` and the change at 95% sparsity, and correlates both with the log training
frequency (Fig. 3).

Every compression method is analysed the same way along its own level axis
(:mod:`prunecxr.levels`): "sparsity" above stands for bits per weight or the fraction of
channels removed, levels run in compression order from the dense model, and on an axis other
than sparsity the change is taken at the store's most compressed level.

Inputs are the run's artifacts (``labels.parquet``, ``prune/<method>/{meta.json,metrics.parquet}``,
read by :mod:`prunecxr.artifacts`); outputs are ``analysis/<method>/forgettability.parquet`` and
``class_summary.parquet`` (columns in ``docs/artifacts.md``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import artifacts, figures, fmt, levels, published, stats

#: classes drawn in Fig. 2 when none are chosen, spread from commonest to rarest (the paper shows six)
N_FIG2_CLASSES = 6

CURVE_COLUMNS = ["class", "sparsity", "median_rel_ap_change", "n_seeds"]
SUMMARY_COLUMNS = [
    "class",
    "train_count",
    "test_count",
    "first_drop",
    "rel_change_at_095",
    "drop_threshold",
]


def curve_columns(axis: levels.Axis) -> list[str]:
    """:data:`CURVE_COLUMNS` with the level column named by ``axis``."""
    return [axis.name if c == "sparsity" else c for c in CURVE_COLUMNS]


def summary_columns(axis: levels.Axis) -> list[str]:
    """The columns of ``class_summary.parquet`` on ``axis``: :data:`SUMMARY_COLUMNS` for
    sparsity; on the other axes the change at the most compressed level,
    ``rel_change_at_extreme``, and that level, ``extreme_level``."""
    if axis.name == "sparsity":
        return list(SUMMARY_COLUMNS)
    return [
        "class",
        "train_count",
        "test_count",
        "first_drop",
        "rel_change_at_extreme",
        "extreme_level",
        "drop_threshold",
    ]


# -- which method the paper's figures show -------------------------------------------------
def figure_method(run: str, preferred: str = published.PAPER_METHOD) -> str:
    """The method the paper's figures are drawn for: ``preferred`` if present, else the first.

    The methods are those of :func:`prunecxr.artifacts.methods_present`, in figure order.
    Falling back warns, naming the methods that are present.
    """
    present = artifacts.methods_present(run)
    if preferred in present:
        return preferred
    warnings.warn(
        f"method {preferred!r} has no results in run {run!r}; paper figures show "
        f"{present[0]!r} instead (present: {present})",
        stacklevel=2,
    )
    return present[0]


def label_counts(labels: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Positive images per class and split.

    Returns one row per class (in the order of ``classes``) with ``train_count`` and
    ``test_count``: the number of images of that split whose label for the class is 1.
    """
    missing = [c for c in ["split", *classes] if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack the columns {missing}")
    y = labels[classes].astype("int64")
    out = pd.DataFrame({"class": list(classes)})
    for split in ("train", "test"):
        mask = (labels["split"] == split).to_numpy()
        out[f"{split}_count"] = y[mask].sum(axis=0).to_numpy(dtype=np.int64)
    return out


# -- Eq. 1 ---------------------------------------------------------------------------------
def _check_metrics(metrics: pd.DataFrame) -> levels.Axis:
    """The metrics' level axis, after checking the columns and that rows are unique."""
    try:
        axis = levels.axis_of(metrics.columns)
    except ValueError as err:
        raise ValueError(
            f"metrics lack a level column: {err}; see docs/artifacts.md (metrics.parquet)"
        ) from None
    missing = [c for c in ("seed", axis.name, "class", "ap") if c not in metrics.columns]
    if missing:
        raise ValueError(
            f"metrics lack the columns {missing}; see docs/artifacts.md (metrics.parquet)"
        )
    dup = metrics.duplicated(["seed", axis.name, "class"])
    if dup.any():
        row = metrics[dup].iloc[0]
        raise ValueError(
            f"metrics hold more than one row for seed={row['seed']}, {axis.name}={row[axis.name]}, "
            f"class={row['class']!r}"
        )
    return axis


def relative_ap_change(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per seed relative change in AP against the same seed's dense model (inside Eq. 1).

    Parameters
    ----------
    metrics : DataFrame
        Long format with columns ``seed``, a level column (``sparsity``, ``bits`` or
        ``channel_fraction``, :mod:`prunecxr.levels`), ``class``, ``ap`` (one row per seed,
        level and class); every seed needs a row at the dense level (sparsity 0, 32 bits, ...).

    Returns
    -------
    DataFrame
        Columns ``seed``, the level column, ``class``, ``rel_ap_change`` with
        ``rel_ap_change = (AP_{i,k,c} - AP_{i,0,c}) / AP_{i,0,c}`` (``0`` the dense level),
        sorted by class, level (compression order) and seed. NaN where ``AP_{i,0,c}`` is 0 or
        NaN (no positive test image: the change is undefined) or where ``AP_{i,k,c}`` is NaN.
        At the dense level the value is exactly 0 wherever ``AP_{i,0,c}`` is valid.
    """
    axis = _check_metrics(metrics)
    level = axis.name
    m = metrics[["seed", level, "class", "ap"]].copy()
    m[level] = m[level].astype(float)
    m["ap"] = m["ap"].astype(float)
    is_dense = axis.is_dense(m[level].to_numpy())
    dense = m[is_dense].rename(columns={"ap": "ap0"})[["seed", "class", "ap0"]]
    seeds_without = sorted(set(m["seed"]) - set(dense["seed"]))
    if seeds_without:
        raise ValueError(
            f"metrics have no {level}-{axis.dense:g} (dense) rows for seeds {seeds_without}"
        )
    m = m.merge(dense, on=["seed", "class"], how="left", validate="many_to_one")
    is_dense = axis.is_dense(m[level].to_numpy())
    ap0 = m["ap0"].to_numpy()
    valid = np.isfinite(ap0) & (ap0 > 0)
    rel = np.full(len(m), np.nan)
    rel[valid] = (m["ap"].to_numpy()[valid] - ap0[valid]) / ap0[valid]
    rel[valid & is_dense] = 0.0
    m["rel_ap_change"] = rel
    m["_rank"] = axis.compression_rank(m[level].to_numpy())
    m = m.sort_values(["class", "_rank", "seed"], kind="mergesort").reset_index(drop=True)
    return m[["seed", level, "class", "rel_ap_change"]]


def forgettability_curves(
    metrics: pd.DataFrame, *, classes: list[str] | None = None
) -> pd.DataFrame:
    """Forgettability curves: the median over seeds of the relative change in AP (Eq. 1).

    Parameters
    ----------
    metrics : DataFrame
        Long-format AP per ``seed``, level and ``class`` (``prune/<method>/metrics.parquet``;
        the level column is ``sparsity``, ``bits`` or ``channel_fraction``).
    classes : list of str, optional
        Canonical class order of the output (default: sorted names). Every class must appear
        in ``metrics``.

    Returns
    -------
    DataFrame
        Columns ``class``, the level column, ``median_rel_ap_change``, ``n_seeds``: one row per
        class and level, classes in canonical order and levels in compression order (sparsities
        ascending, bits descending).
        ``median_rel_ap_change = median_i (AP_{i,k,c} - AP_{i,0,c}) / AP_{i,0,c}`` over the
        seeds ``i`` where that change is defined (a NaN median, i.e. ``nanmedian``);
        ``n_seeds`` counts them. It is 0 at the dense level. A class whose dense AP is undefined
        for every seed (no positive test image) is left out with a warning.
    """
    rel = relative_ap_change(metrics)
    axis = levels.axis_of(rel.columns)
    level = axis.name
    present = sorted(set(rel["class"]))
    if classes is None:
        classes = present
    unknown = [c for c in classes if c not in set(present)]
    if unknown:
        raise ValueError(f"classes {unknown} have no rows in metrics")
    extra = sorted(set(present) - set(classes))
    if extra:
        raise ValueError(
            f"metrics hold classes {extra} that are not among the classes {list(classes)}"
        )
    grouped = rel.groupby(["class", level], sort=False)["rel_ap_change"]
    curves = grouped.agg(median_rel_ap_change="median", n_seeds="count").reset_index()
    dense = curves[axis.is_dense(curves[level].to_numpy())]
    undefined = set(dense.loc[dense["n_seeds"] == 0, "class"])
    excluded = [c for c in classes if c in undefined]
    if excluded:
        warnings.warn(
            f"classes {excluded} have no positive test image (dense AP undefined for every seed); "
            "excluded from the forgettability analysis",
            stacklevel=2,
        )
    keep = [c for c in classes if c not in undefined]
    curves = curves[curves["class"].isin(keep)].copy()
    curves["class"] = pd.Categorical(curves["class"], categories=keep, ordered=True)
    curves["_rank"] = axis.compression_rank(curves[level].to_numpy())
    curves = curves.sort_values(["class", "_rank"]).reset_index(drop=True)
    curves["class"] = curves["class"].astype(str)
    curves["n_seeds"] = curves["n_seeds"].astype(np.int64)
    return curves[curve_columns(axis)]


def curve_matrix(curves: pd.DataFrame, *, classes: list[str] | None = None) -> pd.DataFrame:
    """Curves as a wide table: one row per class, one column per level, in compression order
    (sparsities ascending, bits descending; the dense level first).

    Rows follow ``classes`` (canonical order; default: sorted names), never the row order of
    ``curves``. A class of ``classes`` without curve rows raises.
    """
    present = set(curves["class"])
    classes = sorted(present) if classes is None else list(classes)
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"classes {missing} have no forgettability curve")
    axis = levels.axis_of(curves.columns)
    wide = curves.pivot(index="class", columns=axis.name, values="median_rel_ap_change")
    return wide.loc[classes][axis.order(wide.columns)]


def canonical_classes(labels: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """The classes of ``curves`` in canonical order: the order of their columns in ``labels``."""
    present = set(curves["class"])
    order = [c for c in labels.columns if c in present]
    missing = sorted(present - set(order))
    if missing:
        raise ValueError(f"classes {missing} of the curves are not columns of labels.parquet")
    return order


def first_drop(
    curves: pd.DataFrame,
    *,
    threshold: float = published.DROP_THRESHOLD,
    classes: list[str] | None = None,
) -> pd.Series:
    """Per class, the first level at which the curve falls below ``-threshold``.

    Returns a Series indexed by class (``classes``, default sorted): the least compressed
    level ``k`` other than the dense one with ``curve_c(k) < -threshold`` (on the sparsity
    axis ``min {k > 0 : curve_c(k) < -threshold}``; on the bits axis the most bits), NaN when
    the curve never falls that low (or is NaN wherever it is below it). The paper's
    ``threshold`` is 0.2, "the first sparsity ratio with a 20% drop in AP" (Fig. 3, left).
    """
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"drop_threshold must be a fraction in (0, 1]; got {threshold!r}")
    wide = curve_matrix(curves, classes=classes)  # columns in compression order
    axis = levels.axis_of(curves.columns)
    values = wide.columns.to_numpy(dtype=float)
    below = (wide.to_numpy() < -threshold) & ~axis.is_dense(values)[None, :]
    first = np.where(below.any(axis=1), values[np.argmax(below, axis=1)], np.nan)
    return pd.Series(first, index=wide.index, name="first_drop")


def change_at(
    curves: pd.DataFrame,
    sparsity: float = published.EXTREME_SPARSITY,
    *,
    classes: list[str] | None = None,
) -> pd.Series:
    """Per class, the median relative change in AP at level ``sparsity`` (of the curves' axis;
    NaN, with a warning, if absent)."""
    wide = curve_matrix(curves, classes=classes)
    axis = levels.axis_of(curves.columns)
    cols = wide.columns.to_numpy(dtype=float)
    hit = np.flatnonzero(np.isclose(cols, sparsity, atol=published.SPARSITY_ATOL))
    if hit.size == 0:
        warnings.warn(
            f"{axis.name} {sparsity} is not among the run's levels {cols.tolist()}; "
            "its relative change is NaN",
            stacklevel=2,
        )
        return pd.Series(np.nan, index=wide.index, name="change")
    return pd.Series(wide.iloc[:, hit[0]].to_numpy(dtype=float), index=wide.index, name="change")


def class_summary(
    curves: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    drop_threshold: float = published.DROP_THRESHOLD,
) -> pd.DataFrame:
    """Per class: label counts, first-drop sparsity and change at 95% sparsity (Fig. 3).

    Parameters
    ----------
    curves : output of :func:`forgettability_curves`.
    labels : ``labels.parquet`` (``split`` and one 0/1 column per class).
    drop_threshold : the relative drop that defines ``first_drop`` (paper: 0.2).

    Returns
    -------
    DataFrame
        Columns ``class``, ``train_count``, ``test_count``, ``first_drop`` (see
        :func:`first_drop`; NaN if the curve never falls below ``-drop_threshold``),
        ``rel_change_at_095`` (the curve at sparsity 0.95; NaN if the run lacks it) and
        ``drop_threshold``; one row per class of ``curves``, in canonical order (the order
        of the class columns of ``labels``). On another axis than sparsity the change is
        taken at the most compressed level: ``rel_change_at_extreme`` and ``extreme_level``
        (:func:`summary_columns`).
    """
    axis = levels.axis_of(curves.columns)
    classes = canonical_classes(labels, curves)
    out = label_counts(labels, classes)
    out["first_drop"] = first_drop(curves, threshold=drop_threshold, classes=classes).to_numpy()
    extreme = axis.extreme(curves[axis.name].unique())
    out[axis.change_column] = change_at(curves, extreme, classes=classes).to_numpy()
    if axis.name != "sparsity":
        out["extreme_level"] = float(extreme)
    out["drop_threshold"] = float(drop_threshold)
    return out[summary_columns(axis)]


def _with_log_frequency(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``log_train_count = ln(train_count)``, NaN for a class without training images."""
    data = summary.copy()
    counts = data["train_count"].to_numpy(dtype=float)
    with np.errstate(divide="ignore"):
        data["log_train_count"] = np.where(
            counts > 0, np.log(np.where(counts > 0, counts, 1.0)), np.nan
        )
    return data


def change_column(summary: pd.DataFrame) -> str:
    """The relative-change column of a class summary: ``rel_change_at_095`` (sparsity) or
    ``rel_change_at_extreme`` (the other axes)."""
    return (
        "rel_change_at_095" if "rel_change_at_095" in summary.columns else "rel_change_at_extreme"
    )


def frequency_correlations(summary: pd.DataFrame) -> pd.DataFrame:
    """Correlations of log training frequency with both per-class quantities (Fig. 3).

    Returns the :func:`prunecxr.stats.correlation_table` of ``log_train_count = ln(train_count)``
    with ``first_drop`` and with ``rel_change_at_095`` (``rel_change_at_extreme`` on another
    axis than sparsity), one row each. A class with no training image (log undefined) or a
    NaN quantity (e.g. a curve that never drops as far as ``drop_threshold``) is left out of
    that correlation; ``n`` counts the classes used. On the bits axis, where fewer bits
    compress more, "rare classes drop first" shows as a *negative* correlation with
    ``first_drop``.
    """
    return stats.correlation_table(
        _with_log_frequency(summary),
        [("log_train_count", "first_drop"), ("log_train_count", change_column(summary))],
    )


# -- the stage -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Forgetting:
    """Notebook 04's results for one method."""

    method: str
    curves: pd.DataFrame
    summary: pd.DataFrame
    correlations: pd.DataFrame


def analyze(
    run: str, method: str, *, drop_threshold: float = published.DROP_THRESHOLD
) -> Forgetting:
    """Compute the forgettability curves and class summary of ``method`` from the run's artifacts."""
    classes = list(artifacts.read_meta(run, method)["classes"])
    labels = artifacts.read_labels(run, classes)
    curves = forgettability_curves(artifacts.read_metrics(run, method), classes=classes)
    summary = class_summary(curves, labels, drop_threshold=drop_threshold)
    return Forgetting(method, curves, summary, frequency_correlations(summary))


def write(run: str, result: Forgetting) -> list:
    """Write ``forgettability.parquet`` and ``class_summary.parquet`` of ``result.method``."""
    return [
        artifacts.write_analysis(run, result.method, "forgettability", result.curves),
        artifacts.write_analysis(run, result.method, "class_summary", result.summary),
    ]


def run_stage(
    run: str, *, drop_threshold: float = published.DROP_THRESHOLD, methods: list[str] | None = None
) -> dict[str, Forgetting]:
    """Analyze and write every method present in the run (or ``methods``); results by method."""
    results = {}
    for method in (
        artifacts.methods_present(run) if methods is None else artifacts.method_order(methods)
    ):
        results[method] = analyze(run, method, drop_threshold=drop_threshold)
        write(run, results[method])
    return results


def read_results(run: str, method: str) -> Forgetting:
    """Notebook 04's written tables of ``method`` (for :mod:`prunecxr.paper`)."""
    summary = artifacts.read_class_summary(run, method)
    return Forgetting(
        method, artifacts.read_forgettability(run, method), summary, frequency_correlations(summary)
    )


def overview(results: dict[str, Forgetting]) -> pd.DataFrame:
    """One row per method and Fig. 3 quantity: the correlations with log training frequency."""
    frames = []
    for method, res in results.items():
        frame = res.correlations.copy()
        frame.insert(0, "method", method)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def first_forgotten(results: dict[str, Forgetting], n: int = 5) -> pd.DataFrame:
    """Per method, the ``n`` classes it forgets first: the earliest first drop in compression
    order (a class that never drops comes last), ties broken by fewer training images.

    Returns one row per method and rank: ``method``, ``rank`` (1 = first forgotten),
    ``class``, ``train_count``, ``first_drop`` (the level, NaN if never), ``first_drop_level``
    (as text, e.g. ``4 bits``) and ``change_at_extreme`` (the relative AP change at the most
    compressed level, or at 95% sparsity).
    """
    rows = []
    for method, res in results.items():
        axis = levels.axis_of(res.curves.columns)
        summary = res.summary.copy()
        rank = axis.compression_rank(summary["first_drop"].to_numpy(dtype=float))
        summary["_never"] = np.isnan(rank)
        summary["_rank"] = np.nan_to_num(rank, nan=0.0)
        ordered = summary.sort_values(["_never", "_rank", "train_count"], kind="mergesort").head(n)
        change = change_column(summary)
        for k, row in enumerate(ordered.itertuples(index=False), start=1):
            rows.append(
                {
                    "method": method,
                    "rank": k,
                    "class": row[0],
                    "train_count": int(row.train_count),
                    "first_drop": float(row.first_drop),
                    "first_drop_level": axis.format(float(row.first_drop))
                    if np.isfinite(row.first_drop)
                    else "never",
                    "change_at_extreme": float(getattr(row, change)),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "rank",
            "class",
            "train_count",
            "first_drop",
            "first_drop_level",
            "change_at_extreme",
        ],
    )


# -- figures -------------------------------------------------------------------------------
def spread_classes(summary: pd.DataFrame, n: int = N_FIG2_CLASSES) -> list[str]:
    """``n`` classes evenly spaced in rank of training frequency, commonest to rarest.

    Ties in training count are broken by the class's canonical position.
    """
    ranked = summary.assign(_pos=np.arange(len(summary))).sort_values(
        ["train_count", "_pos"], ascending=[False, True], kind="mergesort"
    )
    names = list(ranked["class"])
    if n >= len(names):
        return names
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, n)).astype(int))
    return [names[i] for i in idx]


def figure_2(
    result: Forgetting,
    *,
    classes: list[str] | None = None,
) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 2: forgettability curves, every class as a trace; ``classes`` visible at first.

    Parameters
    ----------
    result : one method's results.
    classes : classes shown when the figure opens; the others are one legend click away.
        Empty or None: :func:`spread_classes` (commonest to rarest).

    Returns
    -------
    (figure, plotted data): the data are the curve rows with ``train_count`` and a
    ``shown`` flag.
    """
    summary = result.summary
    chosen = list(classes) if classes else spread_classes(summary)
    unknown = [c for c in chosen if c not in set(summary["class"])]
    if unknown:
        raise ValueError(
            f"fig2_classes {unknown} are not classes of this run; choose from {list(summary['class'])}"
        )
    order = list(summary.sort_values("train_count", ascending=False, kind="mergesort")["class"])
    data = result.curves.merge(summary[["class", "train_count"]], on="class", how="left")
    data["shown"] = data["class"].isin(chosen)
    axis = levels.axis_of(result.curves.columns)
    x_hover = "%{x:.0%}" if axis.tickformat == ".0%" else "%{x}"
    fig = go.Figure()
    for cls in order:
        sub = data[data["class"] == cls]
        n_train = int(summary.loc[summary["class"] == cls, "train_count"].iloc[0])
        fig.add_trace(
            go.Scatter(
                x=sub[axis.name],
                y=sub["median_rel_ap_change"],
                mode="lines+markers",
                name=f"{cls} (n={n_train})",
                visible=True if cls in chosen else "legendonly",
                hovertemplate=f"{cls}<br>{axis.name} {x_hover}<br>median relative ΔAP %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Forgettability curves (Eq. 1), {result.method}",
        xaxis=dict(
            title=axis.label,
            tickformat=axis.tickformat,
            autorange=True if axis.increasing else "reversed",
        ),
        yaxis=dict(title="Median relative change in AP"),
        legend=dict(title="Class (training images); click to show"),
    )
    return fig, data


def figure_3(result: Forgetting, *, unlearned=()) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 3: log training frequency against the first-drop sparsity and the change at 95%.

    Each panel shows one point per class, the least-squares line (:func:`prunecxr.stats.fit_line`)
    and the Pearson r and Spearman ρ with their p-values, computed by
    :func:`frequency_correlations`. Classes in ``unlearned`` (dense AUROC below
    ``unlearned_auroc``, :func:`prunecxr.analysis.uncertainty.unlearned_table`) are drawn as red
    crosses and named under the panels; the line and correlations keep them (the paper's), and
    notebook 04 gives both versions. Returns the figure and the plotted per-class data (with an
    ``unlearned`` column).
    """
    summary = result.summary
    data = _with_log_frequency(summary)
    flagged = set(unlearned)
    data["unlearned"] = data["class"].isin(flagged)
    corr = result.correlations.set_index("y")
    threshold = (
        float(summary["drop_threshold"].iloc[0]) if len(summary) else published.DROP_THRESHOLD
    )
    axis = levels.axis_of(result.curves.columns)
    change = change_column(summary)
    if axis.name == "sparsity":
        panels = [
            ("first_drop", f"First sparsity with a {fmt.pct(threshold)} drop in AP"),
            (change, f"Relative change in AP at {fmt.pct(published.EXTREME_SPARSITY)} sparsity"),
        ]
    else:
        extreme = float(summary["extreme_level"].iloc[0]) if len(summary) else np.nan
        panels = [
            (
                "first_drop",
                f"First level ({axis.label.lower()}) with a {fmt.pct(threshold)} drop in AP",
            ),
            (change, f"Relative change in AP at {axis.format(extreme)} ({axis.name})"),
        ]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    for col, (quantity, label) in enumerate(panels, start=1):
        x = data[quantity].to_numpy(dtype=float)
        y = data["log_train_count"].to_numpy(dtype=float)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                text=data["class"],
                name=label,
                showlegend=False,
                marker=dict(
                    size=10,
                    color=np.where(data["unlearned"], "#d62728", "#1f77b4").tolist(),
                    symbol=np.where(data["unlearned"], "x", "circle").tolist(),
                ),
                hovertemplate="%{text}<br>x %{x:.3f}<br>log frequency %{y:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        line = stats.fit_line(x, y)
        if line is not None:
            fig.add_trace(
                go.Scatter(
                    x=line.x,
                    y=line.y,
                    mode="lines",
                    showlegend=False,
                    line=dict(dash="dash", color="orange"),
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
        c = corr.loc[quantity]
        text = (
            f"{fmt.corr('r', c['pearson_r'], c['pearson_p'])}<br>"
            f"{fmt.corr('ρ', c['spearman_rho'], c['spearman_p'])}<br>n = {int(c['n'])} classes"
        )
        fig.add_annotation(
            text=text,
            xref=f"x{'' if col == 1 else col} domain",
            yref="y domain",
            x=0.02,
            y=0.98,
            showarrow=False,
            align="left",
            bgcolor="rgba(255,255,255,0.8)",
        )
        fig.update_xaxes(title_text=label, row=1, col=col)
    fig.update_xaxes(
        tickformat=axis.tickformat, autorange=True if axis.increasing else "reversed", row=1, col=1
    )
    fig.update_yaxes(title_text="Log training frequency (ln images)", row=1, col=1)
    title = f"Class frequency and forgettability (Fig. 3), {result.method}"
    if flagged:
        names = ", ".join(c for c in data["class"] if c in flagged)
        title += (
            f"<br><sup>× not learned (dense AUROC low): {names}; kept in the line and the "
            "correlations</sup>"
        )
    fig.update_layout(title=title, margin=dict(t=110))
    return fig, data[["class", "train_count", "log_train_count", "first_drop", change, "unlearned"]]


def save_method_figures(
    run: str,
    results: dict[str, Forgetting],
    *,
    skip: str,
    classes: list[str] | None = None,
) -> pd.DataFrame:
    """Figs. 2 and 3 for every method but ``skip``, as ``fig2_forgettability_<method>`` and
    ``fig3_frequency_<method>``; returns the files written (one row per figure)."""
    rows = []
    for method, res in results.items():
        if method == skip:
            continue
        for name, (fig, data) in (
            (f"fig2_forgettability_{method}", figure_2(res, classes=classes)),
            (f"fig3_frequency_{method}", figure_3(res)),
        ):
            saved = figures.save_figure(fig, name, run=run, data=data)
            rows.append(
                {
                    "method": method,
                    "figure": name,
                    "html": str(saved.html),
                    "png": str(saved.png) if saved.png else "",
                }
            )
    return pd.DataFrame(rows, columns=["method", "figure", "html", "png"])
