"""Notebook 10: the controlled experiment, two difficulty conditions of the phantom side by side.

On real chest X-rays a finding's frequency and its difficulty are confounded (rare findings
are often subtle too), so the paper cannot say which of the two drives forgetting. The
phantom can: profile ``controlled`` draws every finding at one common dense AUROC
(condition ``equal``, :mod:`prunecxr.calibrate`) on the same labels, split and recipe as the
default run (condition ``calibrated``, every finding at CheXNet's published AUROC). Then
frequency is the only property in which the ``equal`` run's findings differ.

Everything here is read from the two runs' artifacts with the functions the other notebooks
use (:func:`prunecxr.paper.comparison_values`, :func:`prunecxr.analysis.forgetting.read_results`,
``metrics.parquet``); nothing is recomputed from scratch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import artifacts, config, fmt, paper, paths
from .analysis import forgetting

#: the paper's class-level findings the two conditions are compared on (keys of
#: :data:`prunecxr.published.PUBLISHED`)
FINDING_KEYS = (
    "share_weights_below_001",
    "first_significant_drop",
    "rho_freq_first_drop",
    "rho_freq_change_095",
    "pie_rarest_ratio_min",
    "pie_rarest_ratio_max",
    "eq2_abs_log_freq_diff",
    "eq2_iou_quarter",
    "eq2_interaction",
    "eq2_interaction_p",
)
#: the significance level of the answer's correlation tests
ALPHA = 0.05


def condition(run: str) -> str:
    """The phantom difficulty condition of ``run`` (``calibrated``, ``equal`` or ``table``)."""
    record = config.run_data(run).get("phantom_difficulty")
    if record is None:
        raise ValueError(
            f"run {run!r} is not a phantom run: the controlled experiment needs two phantom runs"
        )
    return record["condition"]


def check_runs(run: str, baseline: str) -> None:
    """Both runs exist, are phantom runs, and have the same labels and split."""
    for r in (run, baseline):
        if not paths.run_paths(r).run_json.exists():
            raise FileNotFoundError(
                f"run {r!r} does not exist under {paths.home()}: make reproduce "
                f"{'' if r == 'default' else 'RUN=' + r} first (profile controlled compares with the default run)"
            )
        condition(r)
    a = artifacts.read_labels(run)
    b = artifacts.read_labels(baseline)
    if not a.equals(b):
        raise ValueError(
            f"runs {run!r} and {baseline!r} have different labels or splits: "
            "the conditions must share them (same dataset, max_patients, split_seed)"
        )


def _label(run: str) -> str:
    return f"{condition(run)} ({run})"


def findings_table(run: str, baseline: str, *, method: str | None = None) -> pd.DataFrame:
    """The paper's class-level findings in both conditions (numbers).

    One row per key of :data:`FINDING_KEYS`: ``key``, ``quantity``, ``kind``,
    ``published`` (NIH-CXR-LT), then the baseline's and this run's values, columns named by
    :func:`_label`.
    """
    check_runs(run, baseline)
    values = {
        r: paper.comparison_values(r, method=method).set_index("key") for r in (baseline, run)
    }
    first = values[run]
    rows = []
    for key in FINDING_KEYS:
        rows.append(
            {
                "key": key,
                "quantity": first.at[key, "quantity"],
                "kind": first.at[key, "kind"],
                "published": first.at[key, "published_value"],
                **{_label(r): values[r].at[key, "this_run_value"] for r in (baseline, run)},
            }
        )
    return pd.DataFrame(rows)


def findings_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`findings_table` as text (each value in its kind's format)."""
    out = table[["quantity"]].copy()
    for col in table.columns[3:]:
        out[col] = [paper.format_value(v, k) for v, k in zip(table[col], table["kind"])]
    return out


def dense_auroc(run: str, baseline: str, *, method: str | None = None) -> pd.DataFrame:
    """Per class, the dense models' test AUROC (seed mean) in both conditions."""
    check_runs(run, baseline)
    cols = {}
    for r in (baseline, run):
        m = method or forgetting.figure_method(r)
        metrics = artifacts.read_metrics(r, m)
        dense = metrics[np.isclose(metrics["sparsity"], 0.0)]
        cols[_label(r)] = dense.groupby("class", sort=False)["auroc"].mean()
    return pd.DataFrame(cols).rename_axis("class").reset_index()


def _correlation(run: str, y: str, method: str | None) -> pd.Series:
    res = forgetting.read_results(run, method or forgetting.figure_method(run))
    corr = res.correlations.set_index("y")
    row = corr.loc[forgetting.change_column(res.summary) if y == "change" else y].copy()
    row["drop_threshold"] = (
        float(res.summary["drop_threshold"].iloc[0]) if len(res.summary) else np.nan
    )
    return row


def answer(run: str, baseline: str, *, method: str | None = None, alpha: float = ALPHA) -> str:
    """One paragraph: does frequency alone predict forgetting? Computed from both runs.

    The rule: in the ``equal`` condition, where findings differ only in frequency, frequency
    *predicts forgetting* when the Spearman correlation of log training frequency with the
    relative AP change at the most pruned level is positive (rarer findings lose more) with
    P < ``alpha``; the first-drop correlation is reported beside it. The calibrated
    condition's correlations are quoted for comparison.
    """
    check_runs(run, baseline)
    runs = {condition(r): r for r in (run, baseline)}
    if "equal" not in runs:
        return (
            f"Neither run is of condition 'equal' (runs {run!r}: {condition(run)}, {baseline!r}: "
            f"{condition(baseline)}): the controlled question needs one (profile controlled)."
        )
    eq = runs["equal"]
    parts = []
    change, drop = _correlation(eq, "change", method), _correlation(eq, "first_drop", method)
    predicts = bool(change["spearman_rho"] > 0 and change["spearman_p"] < alpha)
    parts.append(
        f"With every finding drawn at one dense AUROC (run {eq!r}), the correlation of log training "
        f"frequency with the relative AP change at the most pruned level is "
        f"{fmt.corr('ρ', change['spearman_rho'], change['spearman_p'])} over {int(change['n'])} classes, "
        f"and with the first sparsity of a {fmt.pct(drop['drop_threshold'])} drop "
        f"{fmt.corr('ρ', drop['spearman_rho'], drop['spearman_p'])} ({int(drop['n'])} classes drop)."
    )
    other = [r for c, r in runs.items() if c != "equal"]
    if other:
        oc, od = (
            _correlation(other[0], "change", method),
            _correlation(other[0], "first_drop", method),
        )
        parts.append(
            f"With CheXNet's per-class difficulty (run {other[0]!r}) the same correlations are "
            f"{fmt.corr('ρ', oc['spearman_rho'], oc['spearman_p'])} and "
            f"{fmt.corr('ρ', od['spearman_rho'], od['spearman_p'])}."
        )
    if predicts:
        parts.append(
            f"So in this run frequency alone predicts forgetting: with difficulty held equal, "
            f"rarer findings still lose more of their AP (P < {alpha})."
        )
    else:
        parts.append(
            f"So in this run frequency alone does not detectably predict forgetting at the "
            f"most pruned level (no positive correlation with P < {alpha}); with "
            f"{int(change['n'])} classes, a modest effect can go undetected."
        )
    return " ".join(parts)
