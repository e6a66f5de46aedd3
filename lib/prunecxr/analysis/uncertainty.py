"""Uncertainty on the headline numbers of Fig. 3, and the classes a model did not learn.

Every interval here is a bootstrap interval from :func:`scipy.stats.bootstrap` (vectorized:
the resamples are drawn once and each statistic is computed for all of them as one array
operation), over one of three units that the data are drawn from:

``seeds``
    the population of models: seeds are drawn with replacement and every curve, median and
    correlation is recomputed from the drawn seeds' AP (BCa interval);
``classes``
    the classes a correlation is taken over: classes are drawn with replacement with their
    per-class values (BCa interval);
``patients``
    the test set: patients are drawn with replacement, each with all their images, and the
    AP of every seed, level and class is recomputed on the drawn images
    (:func:`prunecxr.metrics.resampled_ap`; percentile interval, since BCa's jackknife would
    need one recomputation per patient).

``docs/statistics.md`` says why each unit, and what each interval does and does not cover.

**Classes the model did not learn.** A class whose dense AUROC (median over seeds) is below
``unlearned_auroc`` is *unlearned*: its AP sits at its prevalence and its "forgetting" is noise.
Every statistic is reported for ``subset = "all"`` (the paper's: every class) and
``subset = "learned"`` (the unlearned ones left out), and the unlearned classes are named.

**Curves that never cross.** A class whose curve never falls below ``-drop_threshold`` has no
first drop; the paper leaves it out. Here it is also *censored beyond the last level*: it ranks
after every class that drops (ties among themselves) in ``rho_freq_first_drop_censored``.

Output: ``analysis/<method>/intervals_forgetting.parquet`` (:data:`INTERVAL_COLUMNS`,
``docs/artifacts.md``); the PIE intervals are :mod:`prunecxr.analysis.pie_intervals`'.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from .. import artifacts, levels, metrics, published
from . import forgetting

#: the columns of every ``intervals_*.parquet``
INTERVAL_COLUMNS = [
    "quantity",
    "subset",
    "estimate",
    "resampling",
    "interval",
    "n_resamples",
    "confidence",
    "ci_low",
    "ci_high",
    "n",
    "note",
]
SUBSETS = ("all", "learned")
#: below this dense AUROC (median over seeds) a class counts as not learned (the default)
UNLEARNED_AUROC = 0.6


# =========================================================================================
# Batched correlations (along the last axis, over the finite pairs)
# =========================================================================================
def batch_pearson(x, y, mask=None) -> np.ndarray:
    """Pearson r along the last axis of broadcastable ``x`` and ``y``, over the pairs where
    both are finite (and ``mask`` is true). NaN with fewer than 3 pairs or a constant side.

    Equals :func:`scipy.stats.pearsonr` of each row's finite pairs (tested); used to
    compute one correlation per bootstrap resample in one array operation.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    valid = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        valid &= np.broadcast_to(np.asarray(mask, dtype=bool), valid.shape)
    return _masked_pearson(x, y, valid)


def batch_spearman(x, y, mask=None) -> np.ndarray:
    """Spearman ρ along the last axis over the pairs where neither is NaN (and ``mask``).

    ``±inf`` counts as a value (a censored observation ranks beyond every finite one, ties
    among themselves); ranks are average ranks of the valid pairs (:func:`scipy.stats.rankdata`),
    so the result equals :func:`scipy.stats.spearmanr` of each row's valid pairs (tested).
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    valid = ~np.isnan(x) & ~np.isnan(y)
    if mask is not None:
        valid &= np.broadcast_to(np.asarray(mask, dtype=bool), valid.shape)
    rx = scipy.stats.rankdata(np.where(valid, x, np.nan), axis=-1, nan_policy="omit")
    ry = scipy.stats.rankdata(np.where(valid, y, np.nan), axis=-1, nan_policy="omit")
    return _masked_pearson(rx, ry, valid)


def _masked_pearson(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = valid.sum(axis=-1)
    x = np.where(valid, x, 0.0)
    y = np.where(valid, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = x.sum(axis=-1, keepdims=True) / n[..., None]
        my = y.sum(axis=-1, keepdims=True) / n[..., None]
        dx = np.where(valid, x - mx, 0.0)
        dy = np.where(valid, y - my, 0.0)
        sxx, syy = (dx * dx).sum(axis=-1), (dy * dy).sum(axis=-1)
        r = (dx * dy).sum(axis=-1) / np.sqrt(sxx * syy)
    scale = np.maximum(np.abs(mx[..., 0]), np.abs(my[..., 0])) + 1.0
    degenerate = (n < 3) | (sxx <= 1e-24 * scale**2 * n) | (syy <= 1e-24 * scale**2 * n)
    return np.where(degenerate, np.nan, np.clip(r, -1.0, 1.0))


# =========================================================================================
# One bootstrap call for a vector of statistics
# =========================================================================================
def bootstrap_indices(
    n: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_resamples: int,
    confidence: float,
    method: str,
    seed: int,
    batch: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap intervals of a vector of statistics of ``n`` exchangeable units.

    ``statistic(idx)`` receives unit indices of shape ``(..., n)`` (one resample per row)
    and returns shape ``(q, ...)``: all ``q`` statistics of each resample, so that one draw
    of resamples serves all of them. Calls :func:`scipy.stats.bootstrap` on ``arange(n)``
    (vectorized, seeded ``numpy.random.Generator``).

    Returns ``(low, high, distribution, methods)``: arrays of shape ``(q,)``, ``(q,)``,
    ``(q, B)`` and ``(q,)``. Where scipy's interval is undefined (BCa with a constant
    jackknife, or a statistic undefined in some resamples, e.g. a correlation of a resample
    whose classes all coincide) but at least half of the resamples define the statistic,
    the percentile interval of those resamples is used and ``methods`` says so; else NaN.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")

    def stat(idx, axis=-1):
        return statistic(np.moveaxis(idx, axis, -1))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        res = scipy.stats.bootstrap(
            (np.arange(n),),
            stat,
            method=method,
            rng=np.random.default_rng(seed),
            vectorized=True,
            n_resamples=int(n_resamples),
            confidence_level=confidence,
            batch=batch,
        )
    low = np.atleast_1d(np.asarray(res.confidence_interval.low, dtype=float))
    high = np.atleast_1d(np.asarray(res.confidence_interval.high, dtype=float))
    dist = np.asarray(res.bootstrap_distribution, dtype=float).reshape(len(low), -1)
    methods = np.full(len(low), method, dtype=object)
    bad = np.isnan(low) | np.isnan(high)
    defined = np.mean(np.isfinite(dist), axis=1)
    fix = bad & (defined >= 0.5)
    if fix.any():
        alpha = (1 - confidence) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low[fix] = np.nanquantile(dist[fix], alpha, axis=1)
            high[fix] = np.nanquantile(dist[fix], 1 - alpha, axis=1)
        for i in np.flatnonzero(fix):
            methods[i] = (
                f"percentile of the {np.floor(1000 * defined[i]) / 10:g}% defined resamples ({method} undefined)"
            )
    return low, high, dist, methods


def interval_rows(
    names: list[tuple[str, str]],
    estimates: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    resampling: str,
    method: str | np.ndarray,
    n_resamples: int,
    confidence: float,
    n: np.ndarray | int,
    note: str = "",
) -> pd.DataFrame:
    """Tidy interval rows (:data:`INTERVAL_COLUMNS`) for ``names`` = ``[(quantity, subset)]``."""
    n = np.broadcast_to(np.asarray(n), (len(names),))
    method = np.broadcast_to(np.asarray(method, dtype=object), (len(names),))
    return pd.DataFrame(
        {
            "quantity": [q for q, _ in names],
            "subset": [s for _, s in names],
            "estimate": np.asarray(estimates, dtype=float),
            "resampling": resampling,
            "interval": list(method),
            "n_resamples": int(n_resamples),
            "confidence": float(confidence),
            "ci_low": np.asarray(low, dtype=float),
            "ci_high": np.asarray(high, dtype=float),
            "n": n.astype(np.int64),
            "note": note,
        }
    )[INTERVAL_COLUMNS]


# =========================================================================================
# Classes the model did not learn
# =========================================================================================
def dense_auroc(metrics_table: pd.DataFrame, classes: list[str]) -> pd.Series:
    """Median over seeds of each class's AUROC at the dense level (``metrics.parquet``)."""
    axis = levels.axis_of(metrics_table.columns)
    if "auroc" not in metrics_table.columns:
        raise ValueError("metrics lack the column 'auroc'; see docs/artifacts.md (metrics.parquet)")
    dense = metrics_table[axis.is_dense(metrics_table[axis.name].to_numpy(dtype=float))]
    return dense.groupby("class")["auroc"].median().reindex(classes).rename("dense_auroc")


def unlearned(auroc: pd.Series, *, threshold: float = UNLEARNED_AUROC) -> pd.Series:
    """Whether each class's dense AUROC is below ``threshold`` (NaN AUROC: not flagged)."""
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError(f"unlearned_auroc must be in [0, 1]; got {threshold!r}")
    return (auroc < threshold).rename("unlearned")


def unlearned_table(
    metrics_table: pd.DataFrame, classes: list[str], *, threshold: float = UNLEARNED_AUROC
) -> pd.DataFrame:
    """``class``, ``dense_auroc``, ``unlearned``: one row per class, the flagged first."""
    auroc = dense_auroc(metrics_table, classes)
    out = pd.DataFrame(
        {
            "class": classes,
            "dense_auroc": auroc.to_numpy(),
            "unlearned": unlearned(auroc, threshold=threshold).to_numpy(),
        }
    )
    return out.sort_values(
        ["unlearned", "dense_auroc"], ascending=[False, True], kind="mergesort"
    ).reset_index(drop=True)


def unlearned_classes(run: str, method: str, *, threshold: float = UNLEARNED_AUROC) -> list[str]:
    """The classes of ``method`` whose dense AUROC (median over seeds) is below ``threshold``,
    in canonical order (the figures flag them)."""
    classes = list(artifacts.read_meta(run, method)["classes"])
    flags = unlearned(
        dense_auroc(artifacts.read_metrics(run, method), classes), threshold=threshold
    )
    return [c for c in classes if bool(flags.get(c, False))]


# =========================================================================================
# Fig. 3: per-seed relative changes, and the correlations with frequency
# =========================================================================================
@dataclass(frozen=True)
class SeedChanges:
    """Per seed relative AP changes of Eq. 1 as an array, in canonical order."""

    classes: list[str]
    seeds: np.ndarray
    #: levels in compression order, the dense one first
    levels: np.ndarray
    #: ``rel[i, k, c] = (AP_{i,k,c} - AP_{i,0,c}) / AP_{i,0,c}``, shape (seeds, levels, classes)
    rel: np.ndarray
    axis: levels.Axis

    def curves(self, seed_idx: np.ndarray | None = None) -> np.ndarray:
        """Median over (drawn) seeds: shape ``(..., levels, classes)`` (Eq. 1's curves)."""
        rel = self.rel if seed_idx is None else self.rel[seed_idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN class stays NaN
            return np.nanmedian(rel, axis=-3)


def seed_changes(metrics_table: pd.DataFrame, classes: list[str]) -> SeedChanges:
    """:func:`prunecxr.analysis.forgetting.relative_ap_change` as a (seed, level, class) array."""
    rel = forgetting.relative_ap_change(metrics_table)
    axis = levels.axis_of(rel.columns)
    lv = np.array(axis.order(rel[axis.name].unique()), dtype=float)
    seeds = np.sort(rel["seed"].unique())
    cube = rel.pivot_table(
        index=["seed", axis.name],
        columns="class",
        values="rel_ap_change",
        aggfunc="first",
        dropna=False,
    )
    cube = cube.reindex(pd.MultiIndex.from_product([seeds, lv]), columns=classes)
    return SeedChanges(
        list(classes),
        seeds,
        lv,
        cube.to_numpy(dtype=float).reshape(len(seeds), len(lv), len(classes)),
        axis,
    )


def first_drop_values(
    curves: np.ndarray, level_values: np.ndarray, axis: levels.Axis, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """First level below ``-threshold`` per class (NaN if never) and the censored version.

    ``curves`` has shape ``(..., levels, classes)``, levels in compression order. The
    censored value of a class whose curve never crosses (but is defined) is beyond the last
    level: ``+inf`` on an axis where larger values compress more (sparsity), ``-inf`` on one
    where smaller values do (bits). Returns two arrays ``(..., classes)``.
    """
    below = (curves < -threshold) & ~axis.is_dense(level_values)[:, None]
    hit = below.any(axis=-2)
    first = np.where(hit, level_values[np.argmax(below, axis=-2)], np.nan)
    defined = np.isfinite(curves).any(axis=-2)
    beyond = np.inf if axis.increasing else -np.inf
    censored = np.where(hit, first, np.where(defined, beyond, np.nan))
    return first, censored


#: the Fig. 3 statistics: (quantity, correlation, which per-class value); keys of prunecxr.paper
FIG3_QUANTITIES = (
    ("rho_freq_first_drop", "spearman", "first_drop"),
    ("r_freq_first_drop", "pearson", "first_drop"),
    ("rho_freq_first_drop_censored", "spearman", "censored"),
    ("rho_freq_change_095", "spearman", "change"),
    ("r_freq_change_095", "pearson", "change"),
)


def _fig3_statistics(
    values: dict[str, np.ndarray], log_freq: np.ndarray, learned: np.ndarray
) -> np.ndarray:
    """Every (quantity, subset) of Fig. 3, stacked: shape ``(len(FIG3_QUANTITIES) * 2, ...)``."""
    out = []
    for _, kind, source in FIG3_QUANTITIES:
        fn = batch_spearman if kind == "spearman" else batch_pearson
        for subset in SUBSETS:
            out.append(fn(log_freq, values[source], None if subset == "all" else learned))
    return np.stack(out)


def _fig3_names() -> list[tuple[str, str]]:
    return [(q, s) for q, _, _ in FIG3_QUANTITIES for s in SUBSETS]


def _log(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, np.log(np.where(counts > 0, counts, 1.0)), np.nan)


@dataclass(frozen=True)
class PatientData:
    """What a patient bootstrap of the AP needs: the test labels, the probabilities at the
    dense and at the extreme level, and each test image's patient."""

    y: np.ndarray  #: (n_test, classes), 0/1
    dense: np.ndarray  #: (seeds, n_test, classes)
    extreme: np.ndarray  #: (seeds, n_test, classes)
    patient: np.ndarray  #: (n_test,), integer codes in [0, n_patients)

    @property
    def n_patients(self) -> int:
        return int(self.patient.max()) + 1 if self.patient.size else 0


def patient_ap_changes(data: PatientData, counts: np.ndarray) -> np.ndarray:
    """Relative AP change at the extreme level, per resample, seed and class: ``(B, seeds, classes)``.

    ``counts`` (B, patients): how many times each patient is drawn.
    """
    n_seeds, _, n_classes = data.dense.shape
    out = np.empty((counts.shape[0], n_seeds, n_classes))
    for i in range(n_seeds):
        for c in range(n_classes):
            ap0 = metrics.resampled_ap(data.y[:, c], data.dense[i, :, c], counts, data.patient)
            apk = metrics.resampled_ap(data.y[:, c], data.extreme[i, :, c], counts, data.patient)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, i, c] = np.where(ap0 > 0, (apk - ap0) / ap0, np.nan)
    return out


def forgetting_intervals(
    changes: SeedChanges,
    train_counts: np.ndarray,
    is_unlearned: np.ndarray,
    *,
    drop_threshold: float = published.DROP_THRESHOLD,
    patients: PatientData | None = None,
    n_boot: int = 1000,
    n_boot_patients: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Bootstrap intervals of Fig. 3's correlations over seeds, classes and patients.

    Parameters
    ----------
    changes : :func:`seed_changes` of the method's metrics.
    train_counts : shape (classes,): training images per class (the frequency of Fig. 3).
    is_unlearned : shape (classes,), bool: :func:`unlearned` (the ``learned`` subset leaves
        these out).
    drop_threshold : the first-drop threshold (paper: 0.2).
    patients : the test probabilities at the dense and the extreme level, for the patient
        bootstrap of the change at the extreme level (None: not computed).
    n_boot, n_boot_patients : resamples of the seed and class bootstraps (BCa) and of the
        patient bootstrap (percentile).
    confidence : the intervals' level.
    seed : seeds the resampling (``numpy.random.default_rng``).

    Returns
    -------
    DataFrame, :data:`INTERVAL_COLUMNS`
        One row per quantity of :data:`FIG3_QUANTITIES`, subset and resampling. ``estimate``
        is the full-data value (equal to notebook 04's correlations for ``subset = "all"``).
        The first-drop correlations have no patient interval: the patient bootstrap
        recomputes only the extreme level (``docs/statistics.md``).
    """
    axis = changes.axis
    log_freq = _log(train_counts)
    learned = ~np.asarray(is_unlearned, dtype=bool)
    at = np.flatnonzero(np.isclose(changes.levels, axis.extreme(changes.levels)))
    extreme = int(at[0]) if len(at) else None  # a store without 95%: its change is undefined

    def per_class(curves):
        first, censored = first_drop_values(curves, changes.levels, axis, drop_threshold)
        change = (
            curves[..., extreme, :]
            if extreme is not None
            else np.full_like(curves[..., 0, :], np.nan)
        )
        return {"first_drop": first, "censored": censored, "change": change}

    full = per_class(changes.curves())
    estimates = _fig3_statistics(full, log_freq, learned)
    names = _fig3_names()
    n_used = np.array(
        [
            np.sum(
                np.isfinite(log_freq) & ~np.isnan(full[src]) & (learned if s == "learned" else True)
            )
            for _, _, src in FIG3_QUANTITIES
            for s in SUBSETS
        ]
    )
    frames = []

    def seeds_stat(idx):
        return _fig3_statistics(per_class(changes.curves(idx)), log_freq, learned)

    low, high, _, used = bootstrap_indices(
        len(changes.seeds),
        seeds_stat,
        n_resamples=n_boot,
        confidence=confidence,
        method="BCa",
        seed=seed,
    )
    frames.append(
        interval_rows(
            names,
            estimates,
            low,
            high,
            resampling="seeds",
            method=used,
            n_resamples=n_boot,
            confidence=confidence,
            n=n_used,
        )
    )

    def classes_stat(idx):
        values = {k: v[idx] for k, v in full.items()}
        return _fig3_statistics(values, log_freq[idx], learned[idx])

    low, high, _, used = bootstrap_indices(
        len(changes.classes),
        classes_stat,
        n_resamples=n_boot,
        confidence=confidence,
        method="BCa",
        seed=seed + 1,
    )
    frames.append(
        interval_rows(
            names,
            estimates,
            low,
            high,
            resampling="classes",
            method=used,
            n_resamples=n_boot,
            confidence=confidence,
            n=n_used,
        )
    )

    if patients is not None and n_boot_patients > 0:
        keep = [i for i, (q, _) in enumerate(names) if "change" in q]

        def patients_stat(idx):
            counts = unit_counts(idx, patients.n_patients)
            rel = patient_ap_changes(patients, counts)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                change = np.nanmedian(rel, axis=1)  # (B, classes)
            stats_ = _fig3_statistics(
                {"first_drop": change * np.nan, "censored": change * np.nan, "change": change},
                log_freq,
                learned,
            )
            return np.moveaxis(stats_, 1, -1).reshape(stats_.shape[0], *idx.shape[:-1])

        low, high, _, used = bootstrap_indices(
            patients.n_patients,
            patients_stat,
            n_resamples=n_boot_patients,
            confidence=confidence,
            method="percentile",
            seed=seed + 2,
            batch=50,
        )
        frames.append(
            interval_rows(
                [names[i] for i in keep],
                estimates[keep],
                low[keep],
                high[keep],
                resampling="patients",
                method=used[keep],
                n_resamples=n_boot_patients,
                confidence=confidence,
                n=n_used[keep],
            )
        )
    return pd.concat(frames, ignore_index=True)


def unit_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Draw counts per unit, shape ``(B, n)``, of unit-index resamples ``idx`` (B, m)."""
    idx = np.asarray(idx).reshape(-1, idx.shape[-1])
    offsets = (np.arange(idx.shape[0]) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n).reshape(idx.shape[0], n)


def patient_data(run: str, method: str, classes: list[str]) -> PatientData | None:
    """The test labels, patients and the dense and extreme levels' probabilities of ``method``;
    None when the store lacks either level (imported predictions at levels of their own: the
    change at 95% is then undefined, and so is its patient interval)."""
    probs, meta = artifacts.read_store(run, method)
    axis = levels.axis(meta["level_name"])
    lv = np.asarray(meta["levels"], dtype=float)
    labels = artifacts.read_labels(run, classes)
    test = labels[(labels["split"] == "test").to_numpy()]
    order = [list(meta["classes"]).index(c) for c in classes]
    dense, extreme = (
        np.flatnonzero(axis.is_dense(lv)),
        np.flatnonzero(np.isclose(lv, axis.extreme(lv))),
    )
    if not len(dense) or not len(extreme):
        return None
    dense_k, extreme_k = int(dense[0]), int(extreme[0])
    ids = test["patient_id"].astype(str)
    if (ids == "").all():  # imported labels name no patients: each image is its own cluster
        ids = test["image_id"].astype(str)
    patient = pd.factorize(ids)[0]
    return PatientData(
        y=test[classes].to_numpy(dtype=np.int64),
        dense=np.asarray(probs[:, dense_k][..., order], dtype=np.float32),
        extreme=np.asarray(probs[:, extreme_k][..., order], dtype=np.float32),
        patient=patient.astype(np.int64),
    )


# =========================================================================================
# The stage (notebook 04)
# =========================================================================================
@dataclass(frozen=True)
class ForgettingUncertainty:
    """Notebook 04's intervals and unlearned classes for one method."""

    method: str
    intervals: pd.DataFrame
    unlearned: pd.DataFrame


def analyze(
    run: str,
    method: str,
    *,
    drop_threshold: float = published.DROP_THRESHOLD,
    unlearned_auroc: float = UNLEARNED_AUROC,
    n_boot: int = 1000,
    n_boot_patients: int = 100,
    seed: int = 0,
) -> ForgettingUncertainty:
    """:func:`forgetting_intervals` of ``method`` from the run's artifacts (notebook 04's tables)."""
    summary = artifacts.read_class_summary(run, method)
    classes = list(summary["class"])
    table = artifacts.read_metrics(run, method)
    flags = unlearned_table(table, classes, threshold=unlearned_auroc)
    is_unlearned = flags.set_index("class").loc[classes, "unlearned"].to_numpy(dtype=bool)
    patients = patient_data(run, method, classes) if n_boot_patients > 0 else None
    intervals = forgetting_intervals(
        seed_changes(table, classes),
        summary["train_count"].to_numpy(),
        is_unlearned,
        drop_threshold=drop_threshold,
        patients=patients,
        n_boot=n_boot,
        n_boot_patients=n_boot_patients,
        seed=seed,
    )
    return ForgettingUncertainty(method, intervals, flags)


def run_stage(run: str, methods: list[str], **options) -> dict[str, ForgettingUncertainty]:
    """:func:`analyze` every method of ``methods`` and write its ``intervals_forgetting.parquet``."""
    out = {}
    for method in methods:
        out[method] = analyze(run, method, **options)
        artifacts.write_intervals(run, method, "forgetting", out[method].intervals)
    return out


def interval_display(intervals: pd.DataFrame) -> pd.DataFrame:
    """Intervals as text, one row per quantity and subset, one column per resampling unit."""
    from .. import fmt

    rows = {}
    for r in intervals.itertuples(index=False):
        row = rows.setdefault(
            (r.quantity, r.subset),
            {"quantity": r.quantity, "subset": r.subset, "estimate": fmt.num(r.estimate, 3)},
        )
        row[f"{int(round(100 * r.confidence))}% CI over {r.resampling}"] = (
            f"[{fmt.num(r.ci_low, 3)}, {fmt.num(r.ci_high, 3)}] {r.interval}"
        )
    return pd.DataFrame(list(rows.values())).fillna("")
