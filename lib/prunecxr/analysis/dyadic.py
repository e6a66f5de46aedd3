"""Inference for class pairs (Fig. 4 and Eq. 2) that respects how pairs share classes.

The 105 pairs of 15 classes are not 105 independent observations: every class appears in 14
of them, so a class with an odd curve or an odd frequency moves 14 FCD values together. The
classical OLS t-test and the correlation tests of :mod:`prunecxr.stats` assume independent
pairs; they are kept (and labelled so) beside tests that keep the pair structure:

* **Mantel test** (Mantel 1967) of each Fig. 4 correlation: the class labels of one matrix
  are permuted (rows and columns together) and the correlation recomputed;
* **Y-QAP** (Krackhardt 1988) of each Eq. 2 coefficient: the class labels of the FCD matrix
  are permuted and the model refitted, the t statistic compared;
* **Freedman–Lane** (Freedman & Lane 1983; Anderson & Legendre 1999) of each single Eq. 2
  term: the model without the term is fitted, its residual matrix permuted by class labels
  and added back, the full model refitted; this tests one term with the others in the model;
* **cluster-robust standard errors** by class (statsmodels ``cov_type="cluster"`` with both
  classes of a pair as two cluster dimensions) and HC3 standard errors
  (MacKinnon & White 1985). With 15 classes the cluster-robust ones rest on few clusters
  and are themselves unreliable (Cameron & Miller 2015); they are shown, not preferred.

No library in this stack offers node-label permutations of dyadic data (scipy's
``permutation_test`` permutes observations, not the nodes they share), so they are written
here over numpy: one seeded ``numpy.random.Generator`` draws every permutation at once, and
every refit is one batched least-squares solve. ``tests/test_dyadic.py`` shows the Mantel and
QAP tests hold their size on simulated dyadic data where the classical tests do not.

Intervals (:func:`cooccurrence_intervals`): bootstrap over classes (a class drawn twice
brings all its pairs; a pair of a class with itself is left out) and over seeds (the curves,
hence every FCD, recomputed from the drawn seeds); BCa via :func:`scipy.stats.bootstrap`.

Output: ``analysis/<method>/dyadic_tests.parquet`` and ``intervals_cooccurrence.parquet``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from . import cooccurrence, uncertainty

DYADIC_COLUMNS = [
    "quantity",
    "subset",
    "estimate",
    "inference",
    "statistic",
    "p_value",
    "p_holm",
    "n_permutations",
    "assumes_independent_pairs",
]
#: the Eq. 2 terms in the design's column order, and their keys in prunecxr.paper
EQ2_KEYS = {
    "Intercept": "eq2_intercept",
    "abs_log_freq_diff": "eq2_abs_log_freq_diff",
    "iou_quarter": "eq2_iou_quarter",
    "abs_log_freq_diff:iou_quarter": "eq2_interaction",
}
#: Fig. 4's correlations: (key in prunecxr.paper, predictor, kind)
FIG4_CORRELATIONS = (
    ("rho_fcd_freq_diff", "abs_log_freq_diff", "spearman"),
    ("r_fcd_freq_diff", "abs_log_freq_diff", "pearson"),
    ("rho_fcd_iou", "iou", "spearman"),
    ("r_fcd_iou_quarter", "iou_quarter", "pearson"),
)


# =========================================================================================
# Pairs as matrices
# =========================================================================================
def pair_index(pairs: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Node indices ``(ia, ib)`` of every pair row in ``classes`` (error naming a stranger)."""
    pos = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(pairs["class_a"]).union(pairs["class_b"]) - set(pos))
    if unknown:
        raise ValueError(f"pairs name classes {unknown} that are not among {list(classes)}")
    return pairs["class_a"].map(pos).to_numpy(), pairs["class_b"].map(pos).to_numpy()


def to_matrix(values, ia: np.ndarray, ib: np.ndarray, n: int) -> np.ndarray:
    """A symmetric ``(n, n)`` matrix from pair values; NaN on the diagonal and for absent pairs."""
    out = np.full((n, n), np.nan)
    v = np.asarray(values, dtype=float)
    out[ia, ib] = v
    out[ib, ia] = v
    return out


def node_permutations(n: int, n_permutations: int, seed: int) -> np.ndarray:
    """``n_permutations`` random orderings of ``n`` nodes, shape ``(P, n)`` (seeded)."""
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1; got {n_permutations!r}")
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)


def permutation_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Two-sided permutation P: ``(1 + #{|null| >= |observed|}) / (P + 1)`` (Phipson & Smyth 2010);
    a NaN null value counts as not exceeding. ``null`` has shape ``(P, ...)``."""
    observed = np.asarray(observed, dtype=float)
    with np.errstate(invalid="ignore"):
        exceed = (np.abs(null) >= np.abs(observed) * (1 - 1e-12)).sum(axis=0)
    return np.where(np.isfinite(observed), (1 + exceed) / (null.shape[0] + 1), np.nan)


# =========================================================================================
# Batched least squares
# =========================================================================================
def design(a, b) -> np.ndarray:
    """Eq. 2's design ``[1, a, b, a·b]`` along a new last axis (a = |Δ log F|, b = IoU^¼)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return np.stack([np.ones_like(a), a, b, a * b], axis=-1)


def ols_batch(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS of many responses at once over each row's complete observations.

    ``X`` has shape ``(..., m, p)``, ``y`` ``(..., m)`` (broadcastable). Rows where ``y`` or a
    column of ``X`` is not finite are left out of that fit. Returns ``(beta, t)`` of shape
    ``(..., p)`` with classical standard errors ``sqrt(s² (XᵀX)⁻¹_jj)``,
    ``s² = RSS / (n - p)``; NaN where fewer than ``p + 1`` rows are complete or ``XᵀX`` is
    singular. Equals statsmodels' OLS of each row (tested).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    shape = np.broadcast_shapes(X.shape[:-1], y.shape)
    X = np.broadcast_to(X, shape + X.shape[-1:])
    y = np.broadcast_to(y, shape)
    p = X.shape[-1]
    ok = np.isfinite(y) & np.isfinite(X).all(axis=-1)
    X0 = np.where(ok[..., None], X, 0.0)
    y0 = np.where(ok, y, 0.0)
    xtx = np.einsum("...mi,...mj->...ij", X0, X0)
    xty = np.einsum("...mi,...m->...i", X0, y0)
    n = ok.sum(axis=-1)
    det_ok = np.abs(np.linalg.det(xtx)) > 1e-12 * np.maximum(np.abs(xtx).max(axis=(-1, -2)), 1) ** p
    good = (n > p) & det_ok
    eye = np.broadcast_to(np.eye(p), xtx.shape)
    inv = np.linalg.inv(np.where(good[..., None, None], xtx, eye))
    beta = np.einsum("...ij,...j->...i", inv, xty)
    resid = np.where(ok, y0 - np.einsum("...mi,...i->...m", X0, beta), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = (resid**2).sum(axis=-1) / (n - p)
        se = np.sqrt(s2[..., None] * np.diagonal(inv, axis1=-2, axis2=-1))
        t = beta / se
    beta = np.where(good[..., None], beta, np.nan)
    t = np.where(good[..., None], t, np.nan)
    return beta, t


# =========================================================================================
# Tests that keep the pair structure
# =========================================================================================
def mantel(
    y, x, ia, ib, n: int, *, kind: str = "pearson", n_permutations: int = 999, seed: int = 0
) -> tuple[float, float]:
    """Mantel test of the correlation of two pair variables: ``(statistic, P)``.

    The class labels of ``x``'s matrix are permuted (rows and columns together), which keeps
    every class's pairs together; the null distribution is the correlation over those
    relabellings, P two-sided (:func:`permutation_p`). ``kind``: pearson or spearman.
    """
    if kind not in ("pearson", "spearman"):
        raise ValueError(f"unknown kind {kind!r}; choose pearson or spearman")
    fn = uncertainty.batch_pearson if kind == "pearson" else uncertainty.batch_spearman
    y = np.asarray(y, dtype=float)
    X = to_matrix(x, ia, ib, n)
    observed = fn(np.asarray(x, dtype=float), y)
    perm = node_permutations(n, n_permutations, seed)
    null = fn(X[perm[:, ia], perm[:, ib]], y)
    return float(observed), float(permutation_p(observed, null))


def qap_eq2(
    y, X: np.ndarray, ia, ib, n: int, *, n_permutations: int = 999, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y-QAP and Freedman–Lane P values of every coefficient of a pair regression.

    Parameters
    ----------
    y : shape (m,): the response per pair (FCD).
    X : shape (m, p): the design (:func:`design`), first column the intercept.
    ia, ib, n : the pairs' classes (:func:`pair_index`) and the number of classes.

    Returns
    -------
    (t, p_yqap, p_freedman_lane), each of shape (p,)
        The observed t statistics; Y-QAP: the FCD matrix's class labels permuted, the model
        refitted; Freedman–Lane: for each term ``j``, the model without ``j`` fitted, its
        residual matrix's class labels permuted and added to its fitted values, the full
        model refitted. Both compare ``|t_j|`` with its permutation distribution (pivotal, as
        Anderson & Legendre 1999 advise). The intercept's Freedman–Lane P is NaN (no
        reduced model without it is meaningful here).
    """
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    _, t_obs = ols_batch(X, y)
    perm = node_permutations(n, n_permutations, seed)
    pa, pb = perm[:, ia], perm[:, ib]
    Y = to_matrix(y, ia, ib, n)
    _, t_null = ols_batch(X, Y[pa, pb])
    p_qap = permutation_p(t_obs, t_null)
    p_fl = np.full(X.shape[1], np.nan)
    for j in range(1, X.shape[1]):
        reduced = np.delete(X, j, axis=1)
        beta_r, _ = ols_batch(reduced, y)
        fitted = reduced @ beta_r
        E = to_matrix(y - fitted, ia, ib, n)
        _, t_star = ols_batch(X, fitted + E[pa, pb])
        p_fl[j] = permutation_p(t_obs[j], t_star[:, j])
    return t_obs, p_qap, p_fl


def _robust(pairs: pd.DataFrame, ia: np.ndarray, ib: np.ndarray) -> dict[str, pd.DataFrame]:
    """statsmodels fits of Eq. 2 with classical, HC3 and two-way cluster-robust (by class) SEs."""
    import statsmodels.formula.api as smf

    data = pairs.assign(_a=ia, _b=ib).dropna(subset=["fcd", "abs_log_freq_diff", "iou_quarter"])
    model = smf.ols(cooccurrence.EQ2_FORMULA, data=data)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, kwargs in (
            ("classical (independent pairs)", {}),
            ("HC3", {"cov_type": "HC3"}),
            (
                "cluster-robust by both classes",
                {"cov_type": "cluster", "cov_kwds": {"groups": data[["_a", "_b"]].to_numpy()}},
            ),
        ):
            fit = model.fit(**kwargs)
            out[name] = pd.DataFrame({"coef": fit.params, "t": fit.tvalues, "p": fit.pvalues})
    return out


def dyadic_tests(
    pairs: pd.DataFrame,
    classes: list[str],
    *,
    subset: str = "all",
    n_permutations: int = 999,
    seed: int = 0,
) -> pd.DataFrame:
    """Every Fig. 4 correlation and Eq. 2 coefficient with P values under each inference.

    Returns :data:`DYADIC_COLUMNS` rows: for the correlations (:data:`FIG4_CORRELATIONS`)
    ``classical (independent pairs)`` (scipy's P, as notebook 05 shows) and ``Mantel (class
    permutation)``; for the Eq. 2 coefficients (:data:`EQ2_KEYS`) the classical, HC3 and
    cluster-robust P (statsmodels) and ``Y-QAP`` and ``Freedman–Lane`` P (class permutations).
    """
    from .. import stats

    ia, ib = pair_index(pairs, classes)
    n = len(classes)
    rows = []
    y = pairs["fcd"].to_numpy(dtype=float)
    for key, predictor, kind in FIG4_CORRELATIONS:
        c = stats.correlation(pairs[predictor].to_numpy(dtype=float), y)
        est, p = (
            (c.spearman_rho, c.spearman_p) if kind == "spearman" else (c.pearson_r, c.pearson_p)
        )
        rows.append((key, subset, est, "classical (independent pairs)", est, p, 0, True))
        stat, p_m = mantel(
            y,
            pairs[predictor].to_numpy(dtype=float),
            ia,
            ib,
            n,
            kind=kind,
            n_permutations=n_permutations,
            seed=seed,
        )
        rows.append(
            (key, subset, est, "Mantel (class permutation)", stat, p_m, n_permutations, False)
        )
    X = design(pairs["abs_log_freq_diff"], pairs["iou_quarter"])
    if len(pairs) > X.shape[1]:
        fits = _robust(pairs, ia, ib)
        t_obs, p_qap, p_fl = qap_eq2(y, X, ia, ib, n, n_permutations=n_permutations, seed=seed + 1)
        for j, (term, key) in enumerate(EQ2_KEYS.items()):
            coef = float(fits["HC3"].loc[term, "coef"])
            for name, fit in fits.items():
                rows.append(
                    (
                        key,
                        subset,
                        coef,
                        name,
                        float(fit.loc[term, "t"]),
                        float(fit.loc[term, "p"]),
                        0,
                        name.startswith("classical"),
                    )
                )
            rows.append(
                (
                    key,
                    subset,
                    coef,
                    "Y-QAP (class permutation)",
                    float(t_obs[j]),
                    float(p_qap[j]),
                    n_permutations,
                    False,
                )
            )
            rows.append(
                (
                    key,
                    subset,
                    coef,
                    "Freedman–Lane (class permutation)",
                    float(t_obs[j]),
                    float(p_fl[j]),
                    n_permutations,
                    False,
                )
            )
    out = pd.DataFrame(rows, columns=[c for c in DYADIC_COLUMNS if c != "p_holm"])
    out.insert(out.columns.get_loc("p_value") + 1, "p_holm", holm_by_family(out))
    return out


def holm_by_family(tests: pd.DataFrame) -> np.ndarray:
    """Holm-adjusted P within each family: one subset, one inference, and either Fig. 4's four
    correlations or Eq. 2's three slopes (the intercept is not a hypothesis of the paper)."""
    from .paired import adjust

    out = np.full(len(tests), np.nan)
    family = np.where(tests["quantity"].str.startswith("eq2_"), "eq2", "fig4")
    slope = tests["quantity"].to_numpy() != "eq2_intercept"
    for _, idx in (
        tests.assign(_f=family).groupby(["subset", "inference", "_f"], sort=False).groups.items()
    ):
        idx = np.asarray([i for i in idx if slope[tests.index.get_loc(i)]])
        if idx.size:
            pos = tests.index.get_indexer(idx)
            out[pos] = adjust(tests["p_value"].to_numpy(dtype=float)[pos], "holm")
    return out


# =========================================================================================
# Intervals: classes and seeds
# =========================================================================================
def _fig4_statistics(fcd: np.ndarray, a: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Fig. 4's correlations and Eq. 2's coefficients along the last (pair) axis, stacked."""
    out = []
    for _, predictor, kind in FIG4_CORRELATIONS:
        x = {"abs_log_freq_diff": a, "iou": iou, "iou_quarter": iou**0.25}[predictor]
        fn = uncertainty.batch_spearman if kind == "spearman" else uncertainty.batch_pearson
        out.append(fn(x, fcd))
    beta, _ = ols_batch(design(a, iou**0.25), fcd)
    return np.concatenate([np.stack(out), np.moveaxis(beta, -1, 0)])


def _names(subset: str) -> list[tuple[str, str]]:
    return [(k, subset) for k, _, _ in FIG4_CORRELATIONS] + [(k, subset) for k in EQ2_KEYS.values()]


def cooccurrence_intervals(
    pairs: pd.DataFrame,
    classes: list[str],
    changes: uncertainty.SeedChanges | None = None,
    *,
    fcd: str = "euclidean",
    subset: str = "all",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """BCa intervals of Fig. 4's correlations and Eq. 2's coefficients over classes and seeds.

    ``classes``: the pairs' classes (a subset leaves the others out). ``changes``: the per
    seed relative changes (:func:`prunecxr.analysis.uncertainty.seed_changes`) for the seed
    bootstrap, which recomputes every FCD (definition ``fcd``) from the drawn seeds' curves
    while frequencies and IoU (test labels) stay; None: no seed interval.
    Returns :data:`prunecxr.analysis.uncertainty.INTERVAL_COLUMNS` rows.
    """
    n = len(classes)
    ia, ib = pair_index(pairs, classes)
    F = to_matrix(pairs["fcd"], ia, ib, n)
    A = to_matrix(pairs["abs_log_freq_diff"], ia, ib, n)
    Iou = to_matrix(pairs["iou"], ia, ib, n)
    estimate = _fig4_statistics(
        pairs["fcd"].to_numpy(dtype=float),
        pairs["abs_log_freq_diff"].to_numpy(dtype=float),
        pairs["iou"].to_numpy(dtype=float),
    )
    names = _names(subset)
    frames = []

    def classes_stat(idx):
        u, v = np.triu_indices(idx.shape[-1], 1)  # the jackknife passes n - 1 classes
        sa, sb = idx[..., u], idx[..., v]  # a class drawn twice: its self-pair is NaN, left out
        return _fig4_statistics(F[sa, sb], A[sa, sb], Iou[sa, sb])

    low, high, _, used = uncertainty.bootstrap_indices(
        n, classes_stat, n_resamples=n_boot, confidence=confidence, method="BCa", seed=seed
    )
    frames.append(
        uncertainty.interval_rows(
            names,
            estimate,
            low,
            high,
            resampling="classes",
            method=used,
            n_resamples=n_boot,
            confidence=confidence,
            n=len(pairs),
        )
    )
    if changes is not None:
        col = [changes.classes.index(c) for c in classes]
        above = ~changes.axis.is_dense(changes.levels)
        a = pairs["abs_log_freq_diff"].to_numpy(dtype=float)
        iou = pairs["iou"].to_numpy(dtype=float)

        def seeds_stat(idx):
            curves = changes.curves(idx)[..., above, :][..., col]  # (..., L', n)
            diff = curves[..., ia] - curves[..., ib]
            f = np.sqrt((diff**2).sum(axis=-2)) if fcd == "euclidean" else (diff**2).mean(axis=-2)
            return _fig4_statistics(f, a, iou)

        low, high, _, used = uncertainty.bootstrap_indices(
            len(changes.seeds),
            seeds_stat,
            n_resamples=n_boot,
            confidence=confidence,
            method="BCa",
            seed=seed + 1,
        )
        frames.append(
            uncertainty.interval_rows(
                names,
                estimate,
                low,
                high,
                resampling="seeds",
                method=used,
                n_resamples=n_boot,
                confidence=confidence,
                n=len(pairs),
            )
        )
    return pd.concat(frames, ignore_index=True)


def learned_pairs(
    pairs: pd.DataFrame, classes: list[str], is_unlearned
) -> tuple[pd.DataFrame, list[str]]:
    """The pairs whose two classes were both learned, and those classes."""
    flags = dict(zip(classes, np.asarray(is_unlearned, dtype=bool)))
    keep = [c for c in classes if not flags[c]]
    rows = pairs["class_a"].isin(keep) & pairs["class_b"].isin(keep)
    return pairs[rows].reset_index(drop=True), keep


# =========================================================================================
# The stage (notebook 05)
# =========================================================================================
def analyze(
    run: str,
    method: str,
    *,
    fcd: str = "euclidean",
    unlearned_auroc: float = uncertainty.UNLEARNED_AUROC,
    n_boot: int = 1000,
    n_permutations: int = 999,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(dyadic_tests, intervals)`` of ``method`` for every class and for the learned ones."""
    from .. import artifacts

    pairs = artifacts.read_pairs(run, method)
    summary = artifacts.read_class_summary(run, method)
    classes = [c for c in summary["class"] if c in set(pairs["class_a"]) | set(pairs["class_b"])]
    metrics = artifacts.read_metrics(run, method)
    flags = uncertainty.unlearned_table(metrics, classes, threshold=unlearned_auroc)
    is_unlearned = flags.set_index("class").loc[classes, "unlearned"].to_numpy(dtype=bool)
    changes = uncertainty.seed_changes(metrics, classes)
    tests, intervals = [], []
    subsets = [("all", pairs, classes)]
    if is_unlearned.any():
        subsets.append(("learned", *learned_pairs(pairs, classes, is_unlearned)))
    for subset, sub_pairs, sub_classes in subsets:
        if len(sub_classes) < 4:
            continue
        tests.append(
            dyadic_tests(
                sub_pairs, sub_classes, subset=subset, n_permutations=n_permutations, seed=seed
            )
        )
        intervals.append(
            cooccurrence_intervals(
                sub_pairs, sub_classes, changes, fcd=fcd, subset=subset, n_boot=n_boot, seed=seed
            )
        )
    return pd.concat(tests, ignore_index=True), pd.concat(intervals, ignore_index=True)


def run_stage(
    run: str, methods: list[str], **options
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`analyze` every method; writes ``dyadic_tests.parquet`` and ``intervals_cooccurrence.parquet``."""
    from .. import artifacts

    out = {}
    for method in methods:
        out[method] = analyze(run, method, **options)
        artifacts.write_analysis(run, method, "dyadic_tests", out[method][0])
        artifacts.write_intervals(run, method, "cooccurrence", out[method][1])
    return out


def tests_display(tests: pd.DataFrame) -> pd.DataFrame:
    """P values as text: one row per quantity and subset, one column per inference."""
    wide = tests.pivot_table(
        index=["quantity", "subset"],
        columns="inference",
        values="p_value",
        aggfunc="first",
        sort=False,
    )
    est = tests.groupby(["quantity", "subset"], sort=False)["estimate"].first()
    out = wide.map(lambda p: "—" if not np.isfinite(p) else f"{p:.2g}")
    out.insert(0, "estimate", est.map(lambda v: f"{v:.3f}"))
    order = [
        c
        for c in (
            "estimate",
            "classical (independent pairs)",
            "HC3",
            "cluster-robust by both classes",
            "Mantel (class permutation)",
            "Y-QAP (class permutation)",
            "Freedman–Lane (class permutation)",
        )
        if c in out.columns
    ]
    return out[order].reset_index()
