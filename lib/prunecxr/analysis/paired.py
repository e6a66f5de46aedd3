"""Fig. 1 with the pairing kept: each pruned model against its own dense model (notebook 03).

The dense and the pruned model of one seed are a pair: they share every weight that pruning
keeps, the training run and its luck. The paper compares the two groups of seeds with
Welch's unpaired t-test (:mod:`prunecxr.analysis.overall`); here, beside it, per level:

* the paired t-test of ``d_i = mAP_{i,k} - mAP_{i,0}`` (:func:`scipy.stats.ttest_rel`), the
  confidence interval of the mean paired difference and the effect size ``d_z = mean(d) / sd(d)``;
* the exact sign-flip permutation test of the mean difference
  (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``: all ``2^n`` sign
  patterns when ``2^n <= n_permutations``) with the smallest P it can reach: with 10 seeds
  ``2 / 2^10 = 0.00195``, so it can never pass the paper's α = 0.001;
* Holm and Benjamini–Hochberg adjusted P values of each test over the levels
  (:func:`statsmodels.stats.multitest.multipletests`);

and, by drawing the seeds again with replacement, the distribution of "the first sparsity with
a significant drop" under each test (:func:`first_drop_stability`): a statement about one
population of seeds, not a constant.

Output: ``analysis/<method>/paired_tests.parquet`` and ``first_drop_stability.parquet``
(``docs/artifacts.md``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import scipy.stats

from .. import levels
from ..published import PAPER_ALPHA
from . import overall

PAIRED_COLUMNS = [
    "sparsity",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "confidence",
    "effect_dz",
    "paired_t",
    "paired_p",
    "paired_p_holm",
    "paired_p_bh",
    "signflip_p",
    "signflip_p_holm",
    "signflip_p_bh",
    "signflip_exact",
    "signflip_min_p",
    "welch_p",
    "welch_p_holm",
    "welch_p_bh",
]
#: the tests whose first significant level :func:`first_drop_stability` follows
TESTS = ("welch", "paired")
CORRECTIONS = ("none", "holm")


def paired_columns(level_name: str = "sparsity") -> list[str]:
    """:data:`PAIRED_COLUMNS` with the level column named by its axis."""
    return [level_name if c == "sparsity" else c for c in PAIRED_COLUMNS]


def seed_matrix(metrics: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, levels.Axis]:
    """Class-mean AP per seed and level: ``(matrix [seeds, levels], levels, axis)``.

    Levels in compression order, the dense one first; only seeds with a value at every level
    are kept (a pair needs both members).
    """
    per_seed = overall.seed_mean_ap(metrics)
    axis = levels.axis_of(per_seed.columns)
    wide = per_seed.pivot(index="seed", columns=axis.name, values="mean_ap")
    wide = wide[axis.order(wide.columns)].dropna(axis=0, how="any")
    lv = wide.columns.to_numpy(dtype=float)
    if not axis.is_dense(lv[0]):
        raise ValueError(
            f"metrics have no {axis.name} {axis.format(axis.dense)} (the dense models)"
        )
    return wide.to_numpy(dtype=float), lv, axis


def min_signflip_p(n: int, n_permutations: int) -> float:
    """The smallest two-sided P the sign-flip test can give with ``n`` nonzero pairs.

    Exact test (``2^n <= n_permutations``): ``2 / 2^n`` (all signs the same, either way);
    Monte Carlo: ``1 / (n_permutations + 1)`` (scipy counts the observed statistic).
    """
    if n < 1:
        return math.nan
    return 2.0 / 2**n if 2**n <= n_permutations else 1.0 / (n_permutations + 1)


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Holm or Benjamini–Hochberg adjusted P values over the finite entries; NaN stays NaN.

    ``method``: ``"fdr_bh"`` calls :func:`statsmodels.stats.multitest.multipletests`;
    ``"holm"`` gives the same numbers (tested) through :func:`holm_rows`, because statsmodels'
    Holm runs Python's garbage collector on every call (0.2–0.5 s in a notebook here).
    """
    from statsmodels.stats.multitest import multipletests

    if method not in ("holm", "fdr_bh"):
        raise ValueError(f"unknown correction {method!r}; choose holm or fdr_bh")
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = holm_rows(p[ok]) if method == "holm" else multipletests(p[ok], method=method)[1]
    return out


def paired_table(
    metrics: pd.DataFrame,
    *,
    confidence: float = 0.95,
    n_permutations: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """Fig. 1's paired statistics: one row per level (:func:`paired_columns`).

    Parameters
    ----------
    metrics : ``metrics.parquet`` of one method.
    confidence : level of the interval of the mean paired difference.
    n_permutations : the sign-flip test is exact when ``2^n_seeds`` is at most this, else a
        seeded Monte Carlo test with this many sign patterns.
    seed : seeds the Monte Carlo sign patterns (unused when exact).

    Returns
    -------
    DataFrame
        ``mean_diff`` = mean over seeds of ``mAP_{i,k} - mAP_{i,0}`` (negative: a drop), its
        ``ci_low``/``ci_high`` (t interval, ``TtestResult.confidence_interval``),
        ``effect_dz`` = ``mean_diff / sd(d)`` (Cohen's d_z), ``paired_t``/``paired_p``
        (:func:`scipy.stats.ttest_rel`, two-sided), ``signflip_p`` (two-sided, mean of d),
        ``signflip_exact`` and ``signflip_min_p`` (:func:`min_signflip_p`), ``welch_p``
        (the paper's test, :func:`prunecxr.analysis.overall.overall_table`), and each test's
        Holm (``_holm``) and Benjamini–Hochberg (``_bh``) adjusted P over the non-dense
        levels. The dense row holds NaN.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1; got {n_permutations!r}")
    mat, lv, axis = seed_matrix(metrics)
    welch = overall.overall_table(metrics).set_index(axis.name)["p_value"]
    n = mat.shape[0]
    rows = []
    for k, level in enumerate(lv):
        row = {axis.name: float(level), "n_pairs": n}
        d = mat[:, k] - mat[:, 0]
        nan = dict(
            mean_diff=math.nan,
            ci_low=math.nan,
            ci_high=math.nan,
            effect_dz=math.nan,
            paired_t=math.nan,
            paired_p=math.nan,
            signflip_p=math.nan,
            signflip_exact=2**n <= n_permutations,
            signflip_min_p=min_signflip_p(n, n_permutations),
        )
        row.update(nan)
        if k > 0 and n >= 2:
            row["mean_diff"] = float(d.mean())
            sd = float(d.std(ddof=1))
            if sd > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    res = scipy.stats.ttest_rel(mat[:, k], mat[:, 0])
                ci = res.confidence_interval(confidence_level=confidence)
                perm = scipy.stats.permutation_test(
                    (d,),
                    lambda x, axis=-1: np.mean(x, axis=axis),
                    permutation_type="samples",
                    vectorized=True,
                    n_resamples=n_permutations,
                    alternative="two-sided",
                    rng=np.random.default_rng(seed + k),
                )
                row.update(
                    ci_low=float(ci.low),
                    ci_high=float(ci.high),
                    effect_dz=row["mean_diff"] / sd,
                    paired_t=float(res.statistic),
                    paired_p=float(res.pvalue),
                    signflip_p=float(perm.pvalue),
                )
        row["welch_p"] = float(welch.get(float(level), math.nan))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["confidence"] = float(confidence)
    for test in ("paired", "signflip", "welch"):
        table[f"{test}_p_holm"] = adjust(table[f"{test}_p"].to_numpy(), "holm")
        table[f"{test}_p_bh"] = adjust(table[f"{test}_p"].to_numpy(), "fdr_bh")
    return table[paired_columns(axis.name)]


def first_significant(
    table: pd.DataFrame, test: str, *, correction: str = "none", alpha: float = PAPER_ALPHA
) -> float:
    """The least compressed level where ``test`` (``paired``, ``signflip`` or ``welch``) finds a
    significant *drop* in :func:`paired_table`; NaN if none. ``correction``: none, holm, bh."""
    if test not in ("paired", "signflip", "welch"):
        raise ValueError(f"unknown test {test!r}; choose paired, signflip or welch")
    suffix = {"none": "", "holm": "_holm", "bh": "_bh"}.get(correction)
    if suffix is None:
        raise ValueError(f"unknown correction {correction!r}; choose none, holm or bh")
    axis = levels.axis_of(table.columns)
    hit = (table[f"{test}_p{suffix}"] < alpha) & (table["mean_diff"] < 0)
    found = table.loc[hit, axis.name]
    return float(axis.order(found)[0]) if len(found) else math.nan


def holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted P values of every row of ``p`` (shape ``(B, m)``, all finite) at once.

    The same numbers as :func:`adjust` (``multipletests(method="holm")``, tested), for
    thousands of rows: statsmodels' Holm calls ``gc.collect()`` on every call (0.2 s each on
    the 2-core machine), which a bootstrap of 1,000 draws cannot afford.
    ``p̃_(j) = min(1, max_{i <= j} (m - i + 1) p_(i))`` over each row sorted ascending.
    """
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * np.arange(m, 0, -1)
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def _t_p(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return 2 * scipy.stats.t.sf(np.abs(t), df)


def first_drop_stability(
    metrics: pd.DataFrame,
    *,
    alpha: float = PAPER_ALPHA,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """The first significant level when the seeds are drawn again with replacement.

    For each of ``n_resamples`` draws of ``n`` seeds (pairs kept together), Welch's and the
    paired t-test are recomputed at every level (batched: one array operation per test), Holm
    applied over the levels (:func:`adjust`), and the first level with ``P < alpha`` and a
    lower mean noted (NaN: none). A draw that repeats seeds understates the spread of a
    truly new population; the distribution shows how fragile one number is, not a
    sampling distribution to test with.

    Returns
    -------
    DataFrame
        ``test`` (welch, paired), ``correction`` (none, holm), the level column (NaN: no
        significant level), ``share`` (of the draws), ``n_resamples``; one row per outcome.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples!r}")
    mat, lv, axis = seed_matrix(metrics)
    n = mat.shape[0]
    rng = np.random.default_rng(seed)
    draw = mat[rng.integers(0, n, size=(n_resamples, n))]  # (B, n, L)
    dense, pruned = draw[:, :, :1], draw[:, :, 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = pruned - dense
        sd = d.std(axis=1, ddof=1)
        t_paired = d.mean(axis=1) / (sd / np.sqrt(n))
        p_paired = _t_p(t_paired, np.full_like(t_paired, n - 1))
        v1, v0 = pruned.var(axis=1, ddof=1), dense.var(axis=1, ddof=1)
        se2 = v1 / n + v0 / n
        t_welch = (pruned.mean(axis=1) - dense.mean(axis=1)) / np.sqrt(se2)
        df = se2**2 / ((v1 / n) ** 2 / (n - 1) + (v0 / n) ** 2 / (n - 1))
        p_welch = _t_p(t_welch, df)
    lower = d.mean(axis=1) < 0
    rows = []
    for test, p in (("welch", p_welch), ("paired", p_paired)):
        for correction in CORRECTIONS:
            q = p if correction == "none" else holm_rows(np.where(np.isfinite(p), p, 1.0))
            hit = (q < alpha) & lower
            first = np.where(hit.any(axis=1), lv[1:][np.argmax(hit, axis=1)], np.nan)
            values, counts = np.unique(np.nan_to_num(first, nan=np.inf), return_counts=True)
            for v, c in zip(values, counts):
                rows.append(
                    {
                        "test": test,
                        "correction": correction,
                        axis.name: float(v) if np.isfinite(v) else math.nan,
                        "share": c / n_resamples,
                        "n_resamples": int(n_resamples),
                    }
                )
    out = pd.DataFrame(rows)
    out["_rank"] = np.nan_to_num(
        axis.compression_rank(out[axis.name].to_numpy(dtype=float)), nan=np.inf
    )
    return (
        out.sort_values(["test", "correction", "_rank"], kind="mergesort")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def stability_interval(
    stability: pd.DataFrame,
    *,
    test: str = "welch",
    correction: str = "none",
    confidence: float = 0.95,
) -> tuple[float, float]:
    """The central ``confidence`` range of the first significant level over the draws
    (a draw without a significant level counts as beyond the last level: ``inf``)."""
    axis = levels.axis_of(stability.columns)
    rows = stability[(stability["test"] == test) & (stability["correction"] == correction)]
    values = axis.compression_rank(rows[axis.name].to_numpy(dtype=float))
    values = np.where(np.isnan(values), np.inf, values)
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(rows["share"].to_numpy()[order])
    alpha = (1 - confidence) / 2
    lo = values[order][np.searchsorted(cum, alpha - 1e-12)]
    hi = values[order][min(np.searchsorted(cum, 1 - alpha - 1e-12), len(cum) - 1)]
    sign = 1.0 if axis.increasing else -1.0
    return float(sign * lo), float(sign * hi)


def display(table: pd.DataFrame, *, alpha: float = PAPER_ALPHA) -> pd.DataFrame:
    """:func:`paired_table` as text: the difference with its interval, d_z and every P."""
    from .. import fmt

    axis = levels.axis_of(table.columns)
    body = table[~axis.is_dense(table[axis.name].to_numpy(dtype=float))]
    level = int(round(100 * float(body["confidence"].iloc[0]))) if len(body) else 95
    return pd.DataFrame(
        {
            axis.name: [axis.format(v) for v in body[axis.name]],
            f"mean paired ΔmAP [{level}% CI]": [
                f"{fmt.num(m, 4)} [{fmt.num(lo, 4)}, {fmt.num(hi, 4)}]"
                for m, lo, hi in zip(body["mean_diff"], body["ci_low"], body["ci_high"])
            ],
            "d_z": [fmt.num(v) for v in body["effect_dz"]],
            "Welch P (Holm)": [_pp(p, h) for p, h in zip(body["welch_p"], body["welch_p_holm"])],
            "paired t P (Holm)": [
                _pp(p, h) for p, h in zip(body["paired_p"], body["paired_p_holm"])
            ],
            "sign-flip P (smallest possible)": [
                _pp(p, m) for p, m in zip(body["signflip_p"], body["signflip_min_p"])
            ],
        }
    ).reset_index(drop=True)


def _pp(a: float, b: float) -> str:
    return f"{_p(a)} ({_p(b)})"


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "—"
    return f"{p:.2g}"


# =========================================================================================
# The stage (notebook 03)
# =========================================================================================
def stability_rows(stability: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """The first significant level of each test as interval rows
    (:data:`prunecxr.analysis.uncertainty.INTERVAL_COLUMNS`): quantity
    ``first_significant_drop[<test>, <correction>]``, estimate NaN (the full-data value is in
    ``paired_tests.parquet``), the central ``confidence`` range of the draws (``inf``: beyond
    the last level, i.e. no significant drop in those draws)."""
    from .uncertainty import interval_rows

    frames = []
    for test in TESTS:
        for correction in CORRECTIONS:
            lo, hi = stability_interval(
                stability, test=test, correction=correction, confidence=confidence
            )
            frames.append(
                interval_rows(
                    [(f"first_significant_drop[{test}, {correction}]", "all")],
                    [math.nan],
                    [lo],
                    [hi],
                    resampling="seeds",
                    method="percentile of draws",
                    n_resamples=int(stability["n_resamples"].iloc[0]),
                    confidence=confidence,
                    n=0,
                    note="inf: no significant level in those draws",
                )
            )
    return pd.concat(frames, ignore_index=True)


def run_stage(
    run: str,
    methods: list[str],
    *,
    alpha: float = PAPER_ALPHA,
    n_boot: int = 1000,
    n_permutations: int = 9999,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Paired tests and first-drop stability of every method; writes ``paired_tests.parquet``,
    ``first_drop_stability.parquet`` and ``intervals_overall.parquet``. Returns method → paired table."""
    from .. import artifacts
    from ..metrics import each_warning_once

    out = {}
    with each_warning_once():
        for method in artifacts.method_order(methods):
            metrics = artifacts.read_metrics(run, method)
            out[method] = paired_table(metrics, n_permutations=n_permutations, seed=seed)
            stability = first_drop_stability(metrics, alpha=alpha, n_resamples=n_boot, seed=seed)
            artifacts.write_analysis(run, method, "paired_tests", out[method])
            artifacts.write_analysis(run, method, "first_drop_stability", stability)
            artifacts.write_intervals(run, method, "overall", stability_rows(stability))
    return out


def summary(
    tables: dict[str, pd.DataFrame],
    stabilities: dict[str, pd.DataFrame] | None = None,
    *,
    alpha: float = PAPER_ALPHA,
) -> pd.DataFrame:
    """The first significant drop of every method under each test and correction, as text."""
    rows = []
    for method, table in tables.items():
        axis = levels.axis_of(table.columns)
        for test in ("welch", "paired", "signflip"):
            for correction in ("none", "holm", "bh"):
                value = first_significant(table, test, correction=correction, alpha=alpha)
                rows.append(
                    {
                        "method": method,
                        "test": test,
                        "correction": correction,
                        "first significant drop": axis.format(value)
                        if np.isfinite(value)
                        else "none",
                    }
                )
    return pd.DataFrame(rows)


def stability_display(stability: pd.DataFrame) -> pd.DataFrame:
    """The distribution of the first significant level over seed draws, one column per test."""
    axis = levels.axis_of(stability.columns)
    data = stability.assign(
        level=[axis.format(v) if np.isfinite(v) else "none" for v in stability[axis.name]],
        column=stability["test"]
        + ", "
        + stability["correction"].map({"none": "uncorrected", "holm": "Holm"}),
    )
    wide = data.pivot_table(
        index="level", columns="column", values="share", aggfunc="sum", fill_value=0.0
    )
    ranks = {
        axis.format(v) if np.isfinite(v) else "none": (
            np.inf if not np.isfinite(v) else axis.compression_rank(v)
        )
        for v in stability[axis.name]
    }
    wide = wide.loc[sorted(wide.index, key=lambda k: ranks[k])]
    return wide.map(lambda v: f"{100 * v:.1f}%").reset_index()


def floor_sentence(table: pd.DataFrame, *, alpha: float = PAPER_ALPHA) -> str:
    """Whether the sign-flip test can reach ``alpha`` at all with this many seeds, in words."""
    from .. import fmt

    n = int(table["n_pairs"].iloc[0]) if len(table) else 0
    floor = float(table["signflip_min_p"].iloc[0]) if len(table) else math.nan
    kind = "exact" if len(table) and bool(table["signflip_exact"].iloc[0]) else "Monte Carlo"
    if not np.isfinite(floor):
        return "No pairs: the sign-flip test is undefined."
    verdict = (
        "so it can never find a drop at this α, whatever the data (nor can Wilcoxon's signed-rank test)"
        if floor >= alpha
        else "so it can reach this α"
    )
    return (
        f"With {n} seeds the {kind} sign-flip test's smallest possible P is {fmt.num(floor, 5)}, "
        f"against α = {fmt.num(alpha, 3)}: {verdict}."
    )
