"""Class co-occurrence and forgettability (notebook 05): Eq. 2 and Fig. 4 of Holste et al. (2023).

For every unordered pair of classes this module computes the forgettability curve
dissimilarity (FCD) of their two curves, the absolute difference of their log frequencies and
the intersection over union (IoU) of their positive test images, then fits the paper's Eq. 2,

    FCD = b0 + b1 |Δ log F| + b2 IoU^(1/4) + b3 |Δ log F| · IoU^(1/4),

by OLS. Output: ``analysis/<method>/pairs.parquet`` (``docs/artifacts.md``).

Definitions (both named in the columns ``fcd_definition`` and ``cooccurrence`` of every
pairs table, so a file always says what it holds):

``fcd="euclidean"`` (default)
    ``sqrt(sum_k (f_a(k) - f_b(k))^2)`` over the sparsities ``k > 0`` (on another compression
    axis, :mod:`prunecxr.levels`, over every level but the dense one): the definition behind
    the paper's published FCD values (the released code's ``scipy.spatial.distance.euclidean``).
``fcd="mse"``
    ``mean_k (f_a(k) - f_b(k))^2`` over the sparsities ``k > 0``, as the paper's text describes.
``cooccurrence="counts"`` (default)
    Frequencies are the numbers of positive test images ``n_a``; ``IoU = |A ∩ B| / |A ∪ B|``
    over the test images (:func:`prunecxr.stats.label_iou`).
``cooccurrence="released_code"``
    The released code's quantities, kept to compare with: with ``C = YᵀY`` the test
    co-occurrence matrix, "frequency" is the column sum ``s_a = sum_b C[a, b]`` (the number of
    positive labels carried by the images of class ``a``, itself counted once) and
    "IoU" is ``C[a, b] / (s_a + s_b - C[a, b])``. Neither is a class count nor an IoU.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import artifacts, figures, fmt, levels, published, stats
from . import forgetting

FCD_DEFINITIONS = ("euclidean", "mse")
COOCCURRENCE_DEFINITIONS = ("counts", "released_code")
#: Eq. 2 of the paper as a statsmodels formula
EQ2_FORMULA = "fcd ~ abs_log_freq_diff * iou_quarter"
EQ2_TERMS = {
    "Intercept": "intercept",
    "abs_log_freq_diff": "|Δ log F|",
    "iou_quarter": "IoU^¼",
    "abs_log_freq_diff:iou_quarter": "|Δ log F| × IoU^¼",
}
PAIR_COLUMNS = [
    "class_a",
    "class_b",
    "fcd",
    "abs_log_freq_diff",
    "iou",
    "iou_quarter",
    "fcd_definition",
    "cooccurrence",
]
#: how many pairs Fig. 4 labels when none are chosen and the paper's pairs are absent
N_LABELLED_PAIRS = 3


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")
    return value


def fcd(a, b, *, definition: str = "euclidean") -> float:
    """Forgettability curve dissimilarity of two curves (Eq. 2's response).

    Parameters
    ----------
    a, b : array-like, shape (n_sparsities,)
        Two forgettability curves at the same sparsities, all above 0 (the value at
        sparsity 0 is 0 for every curve and is left out).
    definition : ``"euclidean"`` (``sqrt(sum (a - b)^2)``, the published values) or
        ``"mse"`` (``mean (a - b)^2``, the paper's text).

    Returns
    -------
    float
        NaN if either curve holds a NaN. Symmetric, 0 for identical curves.
    """
    _check_choice("fcd", definition, FCD_DEFINITIONS)
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"curves must be non-empty 1-D of equal length; got {a.shape} and {b.shape}"
        )
    return _dissimilarity(a, b, definition)


def _dissimilarity(a: np.ndarray, b: np.ndarray, definition: str) -> float:
    sq = (a - b) ** 2
    return float(np.sqrt(sq.sum())) if definition == "euclidean" else float(sq.mean())


def class_frequencies(
    y: np.ndarray, *, cooccurrence: str = "counts"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class frequency and pairwise IoU from a 0/1 label matrix.

    Parameters
    ----------
    y : ndarray, shape (n_images, n_classes), 0/1
    cooccurrence : ``"counts"`` or ``"released_code"`` (see the module docstring).

    Returns
    -------
    freq : ndarray, shape (n_classes,)
        ``n_a`` (positive images) or the released code's column sums ``s_a``.
    iou : ndarray, shape (n_classes, n_classes)
        ``|A ∩ B| / |A ∪ B|`` (counts: :func:`prunecxr.stats.label_iou`) or
        ``C[a, b] / (s_a + s_b - C[a, b])`` (released code). NaN where the denominator is 0
        (neither class has a positive image).
    """
    _check_choice("cooccurrence", cooccurrence, COOCCURRENCE_DEFINITIONS)
    iou = stats.label_iou(y)  # checks that y is a 2-D 0/1 matrix
    y = np.asarray(y).astype(np.int64)
    if cooccurrence == "counts":
        return y.sum(axis=0).astype(float), iou
    # the released code: the column sums s_a of C = YᵀY in place of n_a, in the same ratio
    inter = y.T @ y
    freq = inter.sum(axis=0).astype(float)
    denominator = freq[:, None] + freq[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator > 0, inter / np.where(denominator > 0, denominator, 1), np.nan)
    return freq, ratio


def pair_table(
    curves: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    fcd: str = "euclidean",
    cooccurrence: str = "counts",
) -> pd.DataFrame:
    """One row per unordered class pair: FCD, |Δ log frequency|, IoU and IoU^¼ (Fig. 4).

    Parameters
    ----------
    curves : forgettability curves (``forgettability.parquet``: class, sparsity,
        median_rel_ap_change).
    labels : ``labels.parquet``; frequencies and IoU are taken over its ``split == "test"``
        rows, as in the paper's Fig. 4.
    fcd, cooccurrence : the definitions (module docstring); named in the output columns.

    Returns
    -------
    DataFrame
        Columns ``class_a``, ``class_b``, ``fcd``, ``abs_log_freq_diff`` (``|ln F_a - ln F_b|``),
        ``iou``, ``iou_quarter`` (``iou ** 0.25``), ``fcd_definition``, ``cooccurrence``.
        ``class_a`` precedes ``class_b`` in canonical order (the class columns of
        ``labels``); rows are in that pair order, ``n(n-1)/2`` of them. ``abs_log_freq_diff``
        is NaN if a class has frequency 0.
    """
    definition = _check_choice("fcd", fcd, FCD_DEFINITIONS)
    _check_choice("cooccurrence", cooccurrence, COOCCURRENCE_DEFINITIONS)
    classes = forgetting.canonical_classes(labels, curves)
    wide = forgetting.curve_matrix(curves, classes=classes)
    axis = levels.axis_of(curves.columns)
    above = ~axis.is_dense(wide.columns.to_numpy(dtype=float))  # every level but the dense one
    if not above.any():
        side = "above" if axis.increasing else "below"
        raise ValueError(f"the curves have no {axis.name} {side} {axis.dense:g}; FCD is undefined")
    values = wide.to_numpy(dtype=float)[:, above]
    test = labels[(labels["split"] == "test").to_numpy()]
    if test.empty:
        raise ValueError("labels have no test image (split == 'test')")
    freq, iou = class_frequencies(test[classes].to_numpy(), cooccurrence=cooccurrence)
    with np.errstate(divide="ignore"):
        log_freq = np.where(freq > 0, np.log(np.where(freq > 0, freq, 1.0)), np.nan)
    rows = []
    for i, j in itertools.combinations(range(len(classes)), 2):
        rows.append(
            (
                classes[i],
                classes[j],
                _dissimilarity(values[i], values[j], definition),
                abs(log_freq[i] - log_freq[j]),
                iou[i, j],
            )
        )
    out = pd.DataFrame(rows, columns=["class_a", "class_b", "fcd", "abs_log_freq_diff", "iou"])
    out["iou_quarter"] = out["iou"] ** 0.25
    out["fcd_definition"] = definition
    out["cooccurrence"] = cooccurrence
    return out[PAIR_COLUMNS]


def fit_eq2(pairs: pd.DataFrame) -> stats.OLSFit:
    """Eq. 2: OLS of ``fcd ~ abs_log_freq_diff * iou_quarter`` over the class pairs.

    Coefficients, classical standard errors, p-values and R² from statsmodels' formula API
    (:func:`prunecxr.stats.ols`); pairs with a NaN are left out. The paper reports, on
    NIH-CXR-LT, ``FCD = 0.27 + 0.21 |Δ log F| - 0.05 IoU^¼ - 0.31 |Δ log F| IoU^¼`` with the
    interaction's P = 0.005 (see :mod:`prunecxr.paper`).
    """
    return stats.ols(pairs, EQ2_FORMULA)


def predictor_correlations(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman correlations of FCD with each predictor of Eq. 2 (Fig. 4).

    Rows: ``abs_log_freq_diff``, ``iou`` and ``iou_quarter`` against ``fcd``
    (:func:`prunecxr.stats.correlation_table`). Spearman's ρ is the same for ``iou`` and
    ``iou_quarter`` (a monotone transform); Pearson's r is not, and Fig. 4 plots ``iou_quarter``.
    """
    return stats.correlation_table(
        pairs, [("abs_log_freq_diff", "fcd"), ("iou", "fcd"), ("iou_quarter", "fcd")]
    )


def coefficient_display(fit: stats.OLSFit | None) -> pd.DataFrame:
    """Eq. 2's coefficient table for display, with readable term names and formatted p-values.

    An unfitted model (None: too few pairs) gives an empty table with the same columns.
    """
    if fit is None:
        return pd.DataFrame(
            columns=["term", "meaning", "coef", "std_err", "t", "p_value", "ci_low", "ci_high", "P"]
        )
    out = fit.coefficients.copy()
    out.insert(1, "meaning", out["term"].map(EQ2_TERMS).fillna(out["term"]))
    out["P"] = [fmt.pvalue(p) for p in out["p_value"]]
    return out


def fit_summary(fit: stats.OLSFit | None) -> pd.DataFrame:
    """The model-level numbers of a fit: formula, n, R², adjusted R² (one row; none if unfitted)."""
    if fit is None:
        return pd.DataFrame(columns=["formula", "n_pairs", "r_squared", "adj_r_squared"])
    return pd.DataFrame(
        [
            {
                "formula": fit.formula,
                "n_pairs": fit.n,
                "r_squared": fit.r_squared,
                "adj_r_squared": fit.adj_r_squared,
            }
        ]
    )


def compare_definitions(curves: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Eq. 2 and the Fig. 4 correlations under every pair of FCD and co-occurrence definitions.

    One row per (``fcd_definition``, ``cooccurrence``) with the Spearman ρ of FCD against
    ``|Δ log F|`` and against IoU, Eq. 2's four coefficients, the interaction's p-value and
    R², so the paper's text (MSE), its published values (Euclidean) and the released code's
    co-occurrence quantities can be compared on this run.
    """
    rows = []
    for definition in FCD_DEFINITIONS:
        for cooc in COOCCURRENCE_DEFINITIONS:
            pairs = pair_table(curves, labels, fcd=definition, cooccurrence=cooc)
            corr = predictor_correlations(pairs).set_index("x")
            row = {
                "fcd_definition": definition,
                "cooccurrence": cooc,
                "rho_abs_log_freq_diff": corr.loc["abs_log_freq_diff", "spearman_rho"],
                "rho_iou": corr.loc["iou", "spearman_rho"],
            }
            try:
                fit = fit_eq2(pairs)
            except ValueError as err:
                warnings.warn(
                    f"Eq. 2 not fitted for fcd={definition!r}, cooccurrence={cooc!r}: {err}",
                    stacklevel=2,
                )
                fit = None
            for term in EQ2_TERMS:
                row[f"coef[{term}]"] = fit.coef(term) if fit else np.nan
            row["p_interaction"] = fit.p_value("abs_log_freq_diff:iou_quarter") if fit else np.nan
            row["r_squared"] = fit.r_squared if fit else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


# -- the stage -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Cooccurrence:
    """Notebook 05's results for one method."""

    method: str
    pairs: pd.DataFrame
    correlations: pd.DataFrame
    eq2: stats.OLSFit | None


def summarize(method: str, pairs: pd.DataFrame) -> Cooccurrence:
    """Correlations and Eq. 2 fit of a pairs table (Eq. 2 is None, with a warning, if it cannot be fitted)."""
    try:
        eq2 = fit_eq2(pairs)
    except ValueError as err:
        warnings.warn(f"Eq. 2 not fitted for {method!r}: {err}", stacklevel=2)
        eq2 = None
    return Cooccurrence(method, pairs, predictor_correlations(pairs), eq2)


def analyze(
    run: str, method: str, *, fcd: str = "euclidean", cooccurrence: str = "counts"
) -> Cooccurrence:
    """Pairs, correlations and Eq. 2 of ``method`` from notebook 04's curves and the labels."""
    curves = artifacts.read_forgettability(run, method)
    labels = artifacts.read_labels(run, sorted(set(curves["class"])))
    return summarize(method, pair_table(curves, labels, fcd=fcd, cooccurrence=cooccurrence))


def run_stage(
    run: str, *, fcd: str = "euclidean", cooccurrence: str = "counts"
) -> dict[str, Cooccurrence]:
    """Analyze every method present in the run and write its ``pairs.parquet``."""
    results = {}
    for method in artifacts.methods_present(run):
        results[method] = analyze(run, method, fcd=fcd, cooccurrence=cooccurrence)
        artifacts.write_analysis(run, method, "pairs", results[method].pairs)
    return results


def compare_run_definitions(run: str, method: str) -> pd.DataFrame:
    """:func:`compare_definitions` on ``method``'s curves (notebook 04) and the run's labels."""
    curves = artifacts.read_forgettability(run, method)
    labels = artifacts.read_labels(run, sorted(set(curves["class"])))
    return compare_definitions(curves, labels)


def read_results(run: str, method: str) -> Cooccurrence:
    """Notebook 05's written pairs table of ``method``, with its correlations and Eq. 2 fit."""
    return summarize(method, artifacts.read_pairs(run, method))


def overview(results: dict[str, Cooccurrence]) -> pd.DataFrame:
    """One row per method: Spearman ρ of FCD with each predictor, Eq. 2 coefficients, R²."""
    rows = []
    for method, res in results.items():
        corr = res.correlations.set_index("x")
        row = {
            "method": method,
            "n_pairs": len(res.pairs),
            "rho_abs_log_freq_diff": corr.loc["abs_log_freq_diff", "spearman_rho"],
            "rho_iou": corr.loc["iou", "spearman_rho"],
        }
        for term in EQ2_TERMS:
            row[f"coef[{term}]"] = res.eq2.coef(term) if res.eq2 else np.nan
        row["p_interaction"] = (
            res.eq2.p_value("abs_log_freq_diff:iou_quarter") if res.eq2 else np.nan
        )
        row["r_squared"] = res.eq2.r_squared if res.eq2 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# -- Fig. 4 --------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return " ".join(str(name).replace("_", " ").lower().split())


def labelled_pairs(pairs: pd.DataFrame, chosen: list | None = None) -> list[tuple[str, str]]:
    """The pairs Fig. 4 names, as ``(class_a, class_b)`` rows of ``pairs``.

    ``chosen``: a list of two-class lists (either order). Empty or None: the pairs the paper
    labels (:data:`prunecxr.published.FIG4_PAIRS`) that exist in this run, then the pairs with
    the lowest FCD, the highest FCD and the highest IoU, up to :data:`N_LABELLED_PAIRS`
    pairs (ties broken by class names).
    """
    index = {
        frozenset((_norm(a), _norm(b))): (a, b) for a, b in zip(pairs["class_a"], pairs["class_b"])
    }
    if chosen:
        out = []
        for item in chosen:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"fig4_pairs entries must be two class names; got {item!r}")
            key = frozenset((_norm(item[0]), _norm(item[1])))
            if key not in index:
                raise ValueError(
                    f"fig4_pairs entry {list(item)} is not a pair of classes of this run"
                )
            out.append(index[key])
        return out
    out = [
        index[k]
        for k in (frozenset((_norm(a), _norm(b))) for a, b in published.FIG4_PAIRS)
        if k in index
    ]
    extremes = []
    for column, ascending in (("fcd", True), ("fcd", False), ("iou", False)):
        ranked = pairs[np.isfinite(pairs[column].to_numpy(dtype=float))].sort_values(
            [column, "class_a", "class_b"], ascending=[ascending, True, True], kind="mergesort"
        )
        if len(ranked):
            extremes.append((ranked["class_a"].iloc[0], ranked["class_b"].iloc[0]))
    for pair in extremes:
        if len(out) >= N_LABELLED_PAIRS:
            break
        if pair not in out:
            out.append(pair)
    return out


def figure_4(
    result: Cooccurrence,
    *,
    label_pairs: list | None = None,
    unlearned=(),
) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 4: FCD against |Δ log frequency| and against IoU^¼, one point per class pair.

    Each panel carries its least-squares line and the Pearson r and Spearman ρ of
    :func:`predictor_correlations`; the pairs of :func:`labelled_pairs` are highlighted
    and named in the legend. A pair with a class of ``unlearned`` (dense AUROC low) is drawn
    as an open grey circle (kept in the line and correlations, the paper's). Returns the figure
    and the plotted data (with ``involves_unlearned``).
    """
    pairs = result.pairs.copy()
    flagged = set(unlearned)
    pairs["involves_unlearned"] = pairs["class_a"].isin(flagged) | pairs["class_b"].isin(flagged)
    named = labelled_pairs(pairs, label_pairs)
    pairs["pair"] = pairs["class_a"] + " – " + pairs["class_b"]
    pairs["labelled"] = [(a, b) in set(named) for a, b in zip(pairs["class_a"], pairs["class_b"])]
    corr = result.correlations.set_index("x")
    definition = pairs["fcd_definition"].iloc[0] if len(pairs) else "euclidean"
    cooc = pairs["cooccurrence"].iloc[0] if len(pairs) else "counts"
    panels = [
        ("abs_log_freq_diff", "|Difference in log class frequency|"),
        ("iou_quarter", "(IoU between classes)<sup>1/4</sup>"),
    ]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    palette = ["#d62728", "#000000", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    for col, (x, label) in enumerate(panels, start=1):
        fig.add_trace(
            go.Scatter(
                x=pairs[x],
                y=pairs["fcd"],
                mode="markers",
                text=pairs["pair"],
                showlegend=False,
                marker=dict(
                    size=7,
                    color=np.where(pairs["involves_unlearned"], "#888888", "#1f77b4").tolist(),
                    symbol=np.where(pairs["involves_unlearned"], "circle-open", "circle").tolist(),
                    opacity=0.6,
                ),
                hovertemplate="%{text}<br>x %{x:.3f}<br>FCD %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        line = stats.fit_line(pairs[x].to_numpy(dtype=float), pairs["fcd"].to_numpy(dtype=float))
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
        for k, (a, b) in enumerate(named):
            row = pairs[(pairs["class_a"] == a) & (pairs["class_b"] == b)]
            fig.add_trace(
                go.Scatter(
                    x=row[x],
                    y=row["fcd"],
                    mode="markers",
                    name=f"({a}, {b})",
                    legendgroup=f"{a}|{b}",
                    showlegend=col == 1,
                    marker=dict(
                        size=12, color=palette[k % len(palette)], line=dict(width=1, color="white")
                    ),
                    hovertemplate=f"({a}, {b})<br>x %{{x:.3f}}<br>FCD %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        c = corr.loc[x]
        fig.add_annotation(
            text=f"{fmt.corr('r', c['pearson_r'], c['pearson_p'])}<br>"
            f"{fmt.corr('ρ', c['spearman_rho'], c['spearman_p'])}<br>n = {int(c['n'])} pairs",
            xref=f"x{'' if col == 1 else col} domain",
            yref="y domain",
            x=0.02 if col == 1 else 0.98,
            xanchor="left" if col == 1 else "right",
            y=0.98,
            showarrow=False,
            align="left",
            bgcolor="rgba(255,255,255,0.8)",
        )
        fig.update_xaxes(title_text=label, row=1, col=col)
    fig.update_yaxes(title_text=f"FCD ({definition})", row=1, col=1)
    note = (
        (
            f"<br><sup>open grey: a pair with a class not learned ({', '.join(sorted(flagged))}); kept in the "
            "lines and the correlations</sup>"
        )
        if flagged
        else ""
    )
    fig.update_layout(
        title=f"Forgettability curve dissimilarity and co-occurrence (Fig. 4), {result.method}; "
        f"co-occurrence: {cooc}{note}",
        legend=dict(orientation="h", y=-0.2),
    )
    return fig, pairs


def save_method_figures(
    run: str, results: dict[str, Cooccurrence], *, skip: str, label_pairs: list | None = None
) -> pd.DataFrame:
    """Fig. 4 for every method but ``skip`` as ``fig4_cooccurrence_<method>``; the files written."""
    rows = []
    for method, res in results.items():
        if method == skip:
            continue
        fig, data = figure_4(res, label_pairs=label_pairs)
        saved = figures.save_figure(fig, f"fig4_cooccurrence_{method}", run=run, data=data)
        rows.append(
            {
                "method": method,
                "figure": saved.html.stem,
                "html": str(saved.html),
                "png": str(saved.png) if saved.png else "",
            }
        )
    return pd.DataFrame(rows, columns=["method", "figure", "html", "png"])
