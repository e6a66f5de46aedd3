"""Paired comparisons of the attended arms with the dense baseline, seed by seed.

Every arm is trained with the dense population's seeds, data order and recipe, so arm and
baseline pair by seed: for a quantity ``q`` (a class's AP, the mean AP, a pointing-game
accuracy, ...) the differences ``d_s = q_arm,s − q_dense,s`` over the seeds ``s`` both have are
tested with the Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`, two-sided, exact for
few seeds) and given a 95% percentile bootstrap confidence interval of their mean
(:func:`scipy.stats.bootstrap`, seeded). With ``n`` seeds the smallest two-sided Wilcoxon P is
``2 / 2^n``: 0.25 with 3 seeds, so a population of 3 cannot show a difference at P < 0.05
whatever its size; with 10 seeds it is 0.002. The bootstrap of 3 values is crude too: it
spans at most their range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["BASELINE", "DIFFERENCE_COLUMNS", "paired_differences", "paired_test"]

#: the arm every other is compared with: the dense population of the run
BASELINE = "dense"
DIFFERENCE_COLUMNS = [
    "quantity",
    "class",
    "arm",
    "n_seeds",
    "baseline_mean",
    "arm_mean",
    "mean_difference",
    "ci_low",
    "ci_high",
    "wilcoxon_statistic",
    "p_value",
]
#: bootstrap resamples and the seed of their generator
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def paired_test(differences) -> dict[str, float]:
    """Mean, 95% bootstrap CI and two-sided Wilcoxon signed-rank test of paired ``differences``.

    NaN differences are dropped. With fewer than 2 differences the CI and the test are NaN;
    when every difference is 0 the test is undefined (P = 1 is returned, statistic NaN).
    """
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    out = {
        "n_seeds": int(d.size),
        "mean_difference": float(d.mean()) if d.size else np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "wilcoxon_statistic": np.nan,
        "p_value": np.nan,
    }
    if d.size < 2:
        return out
    if np.all(d == d[0]):
        out.update(ci_low=float(d[0]), ci_high=float(d[0]))
    else:
        ci = scipy.stats.bootstrap(
            (d,),
            np.mean,
            confidence_level=0.95,
            n_resamples=N_RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(BOOTSTRAP_SEED),
        ).confidence_interval
        out.update(ci_low=float(ci.low), ci_high=float(ci.high))
    if np.all(d == 0):
        out["p_value"] = 1.0
        return out
    res = scipy.stats.wilcoxon(d, alternative="two-sided")
    out.update(wilcoxon_statistic=float(res.statistic), p_value=float(res.pvalue))
    return out


def paired_differences(
    table: pd.DataFrame, *, quantities: Sequence[str], baseline: str = BASELINE
) -> pd.DataFrame:
    """Every arm against ``baseline``, per quantity and class, paired by seed.

    Parameters
    ----------
    table : tidy rows ``arm``, ``seed``, ``class`` and one column per quantity.
    quantities : the columns compared.

    Returns
    -------
    DataFrame with :data:`DIFFERENCE_COLUMNS`, one row per (quantity, class, arm ≠ baseline),
    in the order classes and arms first appear; seeds without both values are left out.
    """
    missing = {"arm", "seed", "class", *quantities} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}")
    if baseline not in set(table["arm"]):
        raise ValueError(
            f"no rows of the baseline arm {baseline!r}; arms: {sorted(set(table['arm']))}"
        )
    arms = [a for a in pd.unique(table["arm"]) if a != baseline]
    rows = []
    for q in quantities:
        wide = table.pivot_table(
            index=["class", "seed"], columns="arm", values=q, aggfunc="first", sort=False
        )
        for cls in pd.unique(table["class"]):
            if cls not in wide.index.get_level_values(0):
                continue
            part = wide.xs(cls, level="class")
            for arm in arms:
                if arm not in part.columns:
                    continue
                pair = (
                    part[[baseline, arm]].dropna().sort_index()
                )  # by seed: the bootstrap sees one order
                rows.append(
                    {
                        "quantity": q,
                        "class": cls,
                        "arm": arm,
                        "baseline_mean": float(pair[baseline].mean()) if len(pair) else np.nan,
                        "arm_mean": float(pair[arm].mean()) if len(pair) else np.nan,
                        **paired_test((pair[arm] - pair[baseline]).to_numpy()),
                    }
                )
    return (
        pd.DataFrame(rows)[DIFFERENCE_COLUMNS] if rows else pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    )
