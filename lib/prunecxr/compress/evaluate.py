"""Scores of the sweep: AP and AUROC per seed, level and class → ``metrics.parquet``.

The probabilities of ``prune/<method>/probs.npy`` are scored against the test labels with
:func:`prunecxr.metrics.ranking_metrics` (equal to scikit-learn's ``average_precision_score``
and ``roc_auc_score``); the long table goes to ``prune/<method>/metrics.parquet``
(``docs/artifacts.md``) through :func:`prunecxr.artifacts.write_metrics`. Torch is not needed;
the scoring itself, :func:`prunecxr.metrics.compute_metrics`, serves :func:`prunecxr.analyze` too.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .. import artifacts, paths
from ..metrics import compute_metrics, each_warning_once

__all__ = ["compute_metrics", "write_all_metrics", "write_method_metrics"]


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
        probs,
        y,
        seeds=meta["seeds"],
        levels=meta["levels"],
        level_name=meta["level_name"],
        classes=classes,
    )
    artifacts.write_metrics(run, method, metrics)
    return metrics


def write_all_metrics(run: str, methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """:func:`write_method_metrics` for each method, in figure order (each warning shown once)."""
    with each_warning_once():
        return {
            method: write_method_metrics(run, method) for method in artifacts.method_order(methods)
        }
