"""Statistics shared by the analysis notebooks: correlations, lines, OLS, row-wise Spearman, IoU.

Every correlation and regression the notebooks report is computed here, from arrays that
lib functions built from the run's artifacts, and formatted by :mod:`prunecxr.fmt`. In the
authors' released code several of these coefficients were typed into the plots by hand;
here they are always recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from . import fmt

#: the fewest finite (x, y) pairs for which a correlation and its p-value are reported
MIN_PAIRS = 3


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two variables, over their finite pairs."""

    n: int
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float


def correlation(x, y) -> Correlation:
    """Pearson r and Spearman ρ of ``x`` and ``y`` with their two-sided p-values (scipy).

    Parameters
    ----------
    x, y : array-like, shape (n,)
        Paired observations. A pair in which either value is NaN or infinite is left out
        (``n`` counts the pairs used).

    Returns
    -------
    Correlation
        ``pearson_r = cov(x, y) / (sd(x) sd(y))`` and ``spearman_rho`` = Pearson r of the
        average ranks, with the p-values of :func:`scipy.stats.pearsonr` and
        :func:`scipy.stats.spearmanr`. All four are NaN when fewer than :data:`MIN_PAIRS`
        pairs are finite or when either variable is constant over them (undefined).

    Notes
    -----
    Used for the correlations of Fig. 3 (class frequency against forgettability) and Fig. 4
    (FCD against frequency difference and IoU) of Holste et al. (2023).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length; got shapes {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    nan = float("nan")
    if n < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(n, nan, nan, nan, nan)
    pearson = scipy.stats.pearsonr(x, y)
    spearman = scipy.stats.spearmanr(x, y)
    return Correlation(
        n=n,
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
    )


CORRELATION_COLUMNS = ["x", "y", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"]


def correlation_table(data: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per ``(x, y)`` column pair of ``data``: :func:`correlation` of the two columns.

    Returns a tidy frame with columns ``x``, ``y``, ``n``, ``pearson_r``, ``pearson_p``,
    ``spearman_rho``, ``spearman_p`` (see :func:`correlation` for the NaN cases).
    """
    rows = []
    for x, y in pairs:
        for col in (x, y):
            if col not in data.columns:
                raise KeyError(f"column {col!r} not in data; columns are {list(data.columns)}")
        c = correlation(data[x].to_numpy(dtype=float), data[y].to_numpy(dtype=float))
        rows.append({"x": x, "y": y, **c.__dict__})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def correlation_display(correlations: pd.DataFrame) -> pd.DataFrame:
    """A :func:`correlation_table` for display: ``r (P)`` and ``ρ (P)`` as text (:mod:`prunecxr.fmt`).

    Keeps ``method`` (when present), ``x``, ``y`` and ``n``; adds ``pearson`` and ``spearman``.
    """
    out = correlations.copy()
    out["pearson"] = [fmt.corr("r", r, p) for r, p in zip(out["pearson_r"], out["pearson_p"])]
    out["spearman"] = [fmt.corr("ρ", r, p) for r, p in zip(out["spearman_rho"], out["spearman_p"])]
    keep = [c for c in ("method", "x", "y", "n", "pearson", "spearman") if c in out.columns]
    return out[keep]


@dataclass(frozen=True)
class Line:
    """A least-squares line ``y = intercept + slope · x``, and the x range it was fitted on."""

    slope: float
    intercept: float
    #: the smallest and largest finite x of the fit: where a figure draws the line
    x: np.ndarray

    @property
    def y(self) -> np.ndarray:
        """The line's values at :attr:`x` (the two ends of the drawn segment)."""
        return self.intercept + self.slope * self.x


def fit_line(x, y) -> Line | None:
    """Ordinary least-squares line of ``y`` on ``x`` over their finite pairs.

    Parameters
    ----------
    x, y : array-like, shape (n,)
        Paired observations; a pair in which either value is NaN or infinite is left out.

    Returns
    -------
    Line or None
        ``slope = cov(x, y) / var(x)`` and ``intercept = mean(y) - slope · mean(x)`` over the
        finite pairs, with ``x = [min x, max x]``. None when fewer than two pairs are finite
        or every finite ``x`` is equal (the line is undefined).

    Notes
    -----
    The dashed lines of Figs. 3 and 4 of Holste et al. (2023); the correlations printed
    beside them come from :func:`correlation`.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length; got shapes {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0:
        return None
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    return Line(float(slope), float(intercept), np.array([x[keep].min(), x[keep].max()]))


def label_iou(y) -> np.ndarray:
    """Intersection over union of the positive rows of every pair of columns of a 0/1 matrix.

    Parameters
    ----------
    y : array-like, shape (n_images, n_classes), values 0 or 1
        One row per image, one column per class (a slice of ``labels.parquet``).

    Returns
    -------
    ndarray of float64, shape (n_classes, n_classes)
        ``IoU[a, b] = |A ∩ B| / |A ∪ B|``, where ``A`` is the set of images positive for class
        ``a``; symmetric, 1 on the diagonal. NaN where neither class has a positive image
        (``|A ∪ B| = 0``: undefined).

    Notes
    -----
    The co-occurrence measure of Fig. 4 and Eq. 2 of Holste et al. (2023), taken over the
    test images there; it equals :func:`sklearn.metrics.jaccard_score` of two columns.
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"labels must be 2-D (images × classes); got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    y = y.astype(np.int64)  # the products of int8 columns would overflow
    inter = y.T @ y  # |A ∩ B|; the diagonal holds |A|
    size = np.diag(inter)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)


@dataclass(frozen=True)
class OLSFit:
    """An ordinary least squares fit, as tidy tables."""

    formula: str
    n: int
    r_squared: float
    adj_r_squared: float
    #: one row per term: ``term``, ``coef``, ``std_err``, ``t``, ``p_value``, ``ci_low``, ``ci_high``
    coefficients: pd.DataFrame

    def coef(self, term: str) -> float:
        return float(self._row(term)["coef"])

    def p_value(self, term: str) -> float:
        return float(self._row(term)["p_value"])

    def _row(self, term: str) -> pd.Series:
        rows = self.coefficients[self.coefficients["term"] == term]
        if rows.empty:
            raise KeyError(
                f"term {term!r} not in the model; terms are {list(self.coefficients['term'])}"
            )
        return rows.iloc[0]


def ols(data: pd.DataFrame, formula: str, *, alpha: float = 0.05) -> OLSFit:
    """Fit ``formula`` to ``data`` by OLS with statsmodels' formula API.

    Parameters
    ----------
    data : DataFrame, one row per observation. Rows with a missing value in a variable of
        the formula are dropped (``n`` counts the rows used).
    formula : a patsy formula, e.g. ``"fcd ~ abs_log_freq_diff * iou_quarter"`` (the ``*``
        expands to both main effects and their interaction ``a:b``).
    alpha : the confidence intervals are at level ``1 - alpha``.

    Returns
    -------
    OLSFit
        Coefficients with classical (non-robust) standard errors, t statistics, two-sided
        p-values and confidence intervals, plus R² and adjusted R².

    Notes
    -----
    Eq. 2 of Holste et al. (2023) is this model with
    ``formula = "fcd ~ abs_log_freq_diff * iou_quarter"``.
    """
    import statsmodels.formula.api as smf

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    model = smf.ols(formula, data=data, missing="drop")
    n_obs, n_params = model.exog.shape
    if n_obs <= n_params:
        raise ValueError(
            f"cannot fit {formula!r}: {n_obs} complete rows for {n_params} coefficients "
            "(need more rows than coefficients)"
        )
    fit = model.fit()
    ci = fit.conf_int(alpha=alpha)
    coefficients = pd.DataFrame(
        {
            "term": list(fit.params.index),
            "coef": fit.params.to_numpy(dtype=float),
            "std_err": fit.bse.to_numpy(dtype=float),
            "t": fit.tvalues.to_numpy(dtype=float),
            "p_value": fit.pvalues.to_numpy(dtype=float),
            "ci_low": ci.iloc[:, 0].to_numpy(dtype=float),
            "ci_high": ci.iloc[:, 1].to_numpy(dtype=float),
        }
    )
    return OLSFit(
        formula=formula,
        n=int(fit.nobs),
        r_squared=float(fit.rsquared),
        adj_r_squared=float(fit.rsquared_adj),
        coefficients=coefficients,
    )


def rowwise_spearman(a, b) -> np.ndarray:
    """Spearman correlation between the rows of ``a`` and the rows of ``b``.

    Parameters
    ----------
    a, b : array-like, shape (n, k)
        Row ``i`` of each holds the ``k`` values to correlate (for PIEs: one image's mean
        predicted probabilities over the ``k`` classes, dense and pruned).

    Returns
    -------
    ndarray of float64, shape (n,)
        ``rho_i = cov(R(a_i), R(b_i)) / (sd(R(a_i)) sd(R(b_i)))`` where ``R`` gives average
        ranks (ties share the mean rank), i.e. :func:`scipy.stats.spearmanr` of each row
        pair. NaN when a row is constant (all ``k`` values tied: no ranking to compare),
        when a row holds a NaN, or when ``k < 2``.

    Notes
    -----
    The sums are taken over doubled ranks, which are integers, so they are exact: the
    result does not depend on the order of the columns (classes) or of the rows (images),
    and equal inputs give bit-identical outputs. Used to find pruning-identified exemplars
    (Sect. 2.3 and Fig. 5 of Holste et al. 2023).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be 2-D of equal shape; got {a.shape} and {b.shape}")
    n, k = a.shape
    out = np.full(n, np.nan)
    if n == 0 or k < 2:
        return out
    bad = np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1)
    # doubled average ranks are integers: 2 * rank in {2, 3, ..., 2k}
    ra = np.rint(2 * scipy.stats.rankdata(np.where(bad[:, None], 0.0, a), axis=1)).astype(np.int64)
    rb = np.rint(2 * scipy.stats.rankdata(np.where(bad[:, None], 0.0, b), axis=1)).astype(np.int64)
    sa, sb = ra.sum(axis=1), rb.sum(axis=1)
    num = k * (ra * rb).sum(axis=1) - sa * sb
    da = k * (ra * ra).sum(axis=1) - sa * sa
    db = k * (rb * rb).sum(axis=1) - sb * sb
    ok = ~bad & (da > 0) & (db > 0)
    # one rounding in the product and one in the root: a row against itself gives exactly 1
    rho = num[ok].astype(float) / np.sqrt(da[ok].astype(float) * db[ok].astype(float))
    out[ok] = np.clip(rho, -1.0, 1.0)
    return out
