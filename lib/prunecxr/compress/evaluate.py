"""Scores of the sweep: AP and AUROC per seed, level and class → ``metrics.parquet``.

The probabilities of ``prune/<method>/probs.npy`` are scored against the test labels with
:func:`prunecxr.metrics.ranking_metrics` (equal to scikit-learn's ``average_precision_score``
and ``roc_auc_score``); the long table goes to ``prune/<method>/metrics.parquet``
(``docs/artifacts.md``) through :func:`prunecxr.artifacts.write_metrics`. Torch is not needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import artifacts, paths
from ..metrics import MissingPositivesWarning, each_warning_once, ranking_metrics


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
                pd.DataFrame({
                    "seed": int(seed), level_name: float(level), "class": list(classes),
                    "ap": ap, "auroc": auroc, "n_pos": n_pos,
                })
            )
    return pd.concat(frames, ignore_index=True)[list(columns)]


def write_method_metrics(run: str, method: str) -> pd.DataFrame:
    """``prune/<method>/metrics.parquet`` from the stored probabilities and the test labels."""
    probs, meta = artifacts.read_store(run, method)
    y, classes, _ = artifacts.read_test_labels(run)
    rp = paths.run_paths(run)
    if meta["classes"] != classes:
        raise ValueError(
            f"{rp.prune_meta(method)} has classes {meta['classes']}, but labels.parquet has "
            f"{classes}; re-run notebook 03_prune"
        )
    if probs.shape[2] != len(y):
        raise ValueError(
            f"{rp.probs(method)} has {probs.shape[2]} test rows, labels.parquet {len(y)}; "
            "re-run notebook 03_prune"
        )
    metrics = compute_metrics(
        probs, y, seeds=meta["seeds"], levels=meta["levels"], level_name=meta["level_name"], classes=classes
    )
    artifacts.write_metrics(run, method, metrics)
    return metrics


def write_all_metrics(run: str, methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """:func:`write_method_metrics` for each method, in figure order (each warning shown once)."""
    with each_warning_once():
        return {method: write_method_metrics(run, method) for method in artifacts.method_order(methods)}
