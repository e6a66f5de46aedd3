"""Ranking metrics: AP and AUROC of many score columns at once, in NumPy.

The one implementation of average precision in the project: training's validation AP
(:mod:`prunecxr.train`), the dense models' test AP and the pruning sweep's metrics
(:mod:`prunecxr.compress.evaluate`) all call :func:`ranking_metrics`. It equals scikit-learn's
``average_precision_score`` and ``roc_auc_score`` (tested against them) without importing
scikit-learn, whose import alone costs a second in every training process.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from . import artifacts

__all__ = [
    "MissingPositivesWarning",
    "compute_metrics",
    "each_warning_once",
    "mean_average_precision",
    "ranking_metrics",
]


class MissingPositivesWarning(UserWarning):
    """A class has no positive test image: its AP is undefined (NaN) and left out of means."""


@contextlib.contextmanager
def each_warning_once() -> Iterator[None]:
    """Re-emit the warnings raised inside once each (by category and message).

    The methods of a run share their test labels, so scoring or summarizing each would
    repeat the same :class:`MissingPositivesWarning`.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        key = (w.category, str(w.message))
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def ranking_metrics(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and AUROC of every column at once; equal to scikit-learn's (tested against it).

    Parameters
    ----------
    y : array, shape ``(N, C)``, values 0/1
    scores : array, shape ``(N, C)``, finite

    Returns
    -------
    ap, auroc : float64 arrays, shape ``(C,)``
        ``AP = Σ_t (R_t − R_{t−1}) P_t`` over the distinct scores ``t`` in decreasing order,
        with ``P_t`` and ``R_t`` the precision and recall of "score ≥ t" (scikit-learn's
        ``average_precision_score``; tied scores enter together). ``AUROC = (Σ_{i: y_i=1}
        r_i − n₊(n₊+1)/2) / (n₊ n₋)`` with ``r_i`` the average rank of ``scores_i`` (ties get
        the mean rank): the Mann–Whitney form of ``roc_auc_score``. AP is NaN for a column
        without a positive; AUROC is NaN for one without a positive or without a negative.
    """
    y = np.asarray(y)
    scores = np.asarray(scores)
    if y.shape != scores.shape or y.ndim != 2:
        raise ValueError(f"y and scores must both be [N, C]; got {y.shape} and {scores.shape}")
    if not np.isfinite(scores).all():
        r, col = np.argwhere(~np.isfinite(scores))[0]
        raise ValueError(f"scores must be finite; row {r}, column {col} is {scores[r, col]}")
    n, c = y.shape
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    t = np.take_along_axis(y, order, axis=0).astype(np.float64)
    rows = np.arange(n)[:, None]
    last = np.ones((n, c), dtype=bool)  # last position of each run of equal scores
    last[:-1] = s[:-1] != s[1:]
    first = np.ones((n, c), dtype=bool)
    first[1:] = last[:-1]
    end = np.minimum.accumulate(np.where(last, rows, n)[::-1], axis=0)[::-1]
    start = np.maximum.accumulate(np.where(first, rows, -1), axis=0)
    tp = np.cumsum(t, axis=0)
    precision_at_end = np.take_along_axis(tp, end, axis=0) / (end + 1)
    n_pos = t.sum(axis=0)
    n_neg = n - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (t * precision_at_end).sum(axis=0) / n_pos
        ascending_rank = n - (start + end) / 2.0  # 1-based average rank among ascending scores
        u = (t * ascending_rank).sum(axis=0) - n_pos * (n_pos + 1) / 2.0
        auroc = u / (n_pos * n_neg)
    ap[n_pos == 0] = np.nan
    auroc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return ap, auroc


def mean_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean of :func:`ranking_metrics`'s AP over the columns with at least one positive.

    NaN when no column has a positive (every AP is undefined).
    """
    ap = ranking_metrics(y, scores)[0]
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def resampled_ap(
    y: np.ndarray, scores: np.ndarray, counts: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """AP of one class under many cluster resamplings of the images (a patient bootstrap).

    Parameters
    ----------
    y : array, shape ``(N,)``, values 0/1
    scores : array, shape ``(N,)``, finite
    counts : array, shape ``(B, G)``, non-negative integers: how many times each of ``G``
        clusters (patients) is drawn in each of ``B`` resamples (0 = left out).
    groups : integer array, shape ``(N,)``: the cluster of each image, in ``[0, G)``.

    Returns
    -------
    float64 array, shape ``(B,)``
        :func:`ranking_metrics`'s AP of the data in which image ``i`` appears
        ``w_bi = counts[b, groups[i]]`` times: ``AP_b = Σ_{i: y_i=1} w_bi P_b(s_i) / Σ_{i: y_i=1} w_bi``
        with ``P_b(s)`` the weighted precision of "score ≥ s" (tied scores enter together).
        NaN for a resample without a drawn positive.

    Notes
    -----
    The images are sorted once and cut into the runs that end at each positive; a sparse
    (cluster × run) count matrix turns every resample's weighted image counts into one
    sparse-dense product, so ``B`` resamples cost about one pass over the images (counts
    stay exact in float32 below 2**24). With one cluster per image and every count 1 the
    result equals :func:`ranking_metrics`'s AP (tested).
    """
    import scipy.sparse

    y = np.asarray(y)
    scores = np.asarray(scores)
    counts = np.asarray(counts)
    groups = np.asarray(groups)
    if y.ndim != 1 or y.shape != scores.shape or groups.shape != y.shape or counts.ndim != 2:
        raise ValueError(
            f"y, scores and groups must be (N,) and counts (B, G); got {y.shape}, {scores.shape}, "
            f"{groups.shape}, {counts.shape}"
        )
    if groups.size and (groups.min() < 0 or groups.max() >= counts.shape[1]):
        raise ValueError(
            f"groups must lie in [0, {counts.shape[1]}); got {groups.min()}..{groups.max()}"
        )
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    g = groups[order]
    pos = np.flatnonzero(y[order] == 1)
    if pos.size == 0:
        return np.full(counts.shape[0], np.nan)
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last index of each run of ties
    end_of_pos = ends[np.searchsorted(ends, pos)]
    # run k: the images after end_of_pos[k-1] up to end_of_pos[k] (empty for tied positives)
    run = np.searchsorted(end_of_pos, np.arange(s.size))
    keep = run < pos.size
    per_run = scipy.sparse.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (g[keep], run[keep])),
        shape=(counts.shape[1], pos.size),
    )
    c = counts.astype(np.float32, copy=False)
    # weighted images scored >= s_i, (B, P): integer counts, exact in float32, summed in float64
    seen = np.cumsum(per_run.T.dot(c.T).T, axis=1, dtype=np.float64)
    w_pos = c[:, g[pos]].astype(np.float64)
    # positives up to the end of each positive's tie run
    last_pos = np.searchsorted(pos, end_of_pos, side="right") - 1
    tp = np.cumsum(w_pos, axis=1)[:, last_pos]
    total = w_pos.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (w_pos * (tp / np.where(seen > 0, seen, 1))).sum(axis=1, dtype=np.float64) / total
    ap[total == 0] = np.nan
    return ap


def compute_metrics(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    seeds: Sequence[int],
    classes: Sequence[str],
    sparsities: Sequence[float] | None = None,
    levels: Sequence[float] | None = None,
    level_name: str = "sparsity",
) -> pd.DataFrame:
    """AP and AUROC per (seed, level, class): the rows of ``metrics.parquet``.

    Parameters
    ----------
    probs : array ``[S, K, N, C]``
        Probabilities (:func:`prunecxr.artifacts.read_store`).
    y : array ``[N, C]`` of 0/1
        Test labels in the same row and class order.
    seeds, classes : sequences
        The labels of axes S and C.
    levels, level_name : the labels of axis K and their axis (:mod:`prunecxr.levels`);
        ``sparsities`` is ``levels`` of a sparsity store.

    Returns
    -------
    DataFrame
        Columns :func:`prunecxr.artifacts.metrics_columns` (the level column named
        ``level_name``), seed-major, then level, then class. AP (and AUROC) is NaN for a class
        with no positive test image, which warns (:class:`prunecxr.metrics.MissingPositivesWarning`).
    """
    levels = sparsities if levels is None else levels
    if levels is None:
        raise ValueError("compute_metrics needs the levels of axis 1")
    columns = artifacts.metrics_columns(level_name)
    probs = np.asarray(probs) if not isinstance(probs, np.ndarray) else probs
    s_, k_, n_, c_ = probs.shape
    if (len(seeds), len(levels), len(classes)) != (s_, k_, c_) or y.shape != (n_, c_):
        raise ValueError(
            f"probs {probs.shape} do not match {len(seeds)} seeds, {len(levels)} levels, "
            f"{len(classes)} classes and labels {y.shape}"
        )
    n_pos = y.sum(axis=0).astype(np.int64)
    empty = [classes[i] for i in np.flatnonzero(n_pos == 0)]
    if empty:
        warnings.warn(
            f"classes without a positive test image: {empty}; their AP is NaN and they are "
            "left out of class means",
            MissingPositivesWarning,
            stacklevel=2,
        )
    frames = []
    for i, seed in enumerate(seeds):
        for j, level in enumerate(levels):
            p = np.asarray(probs[i, j])
            if not np.isfinite(p).all():
                r, cc = np.argwhere(~np.isfinite(p))[0]
                raise ValueError(
                    f"probabilities of seed {seed} at {level_name} {level} are not finite "
                    f"(test row {r}, class {classes[cc]!r})"
                )
            ap, auroc = ranking_metrics(y, p)
            frames.append(
                pd.DataFrame(
                    {
                        "seed": int(seed),
                        level_name: float(level),
                        "class": list(classes),
                        "ap": ap,
                        "auroc": auroc,
                        "n_pos": n_pos,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[list(columns)]
