"""The analyses on arrays in memory: :func:`analyze`, for people who will not use notebooks.

``prunecxr.analyze(probs, labels, levels, classes)`` runs the paper's analyses — Fig. 1's
Welch tests, Eq. 1's forgettability curves and the class summary (Figs. 2-3), FCD, IoU and
Eq. 2 per class pair (Fig. 4), PIEs (Fig. 5) — on probabilities of any model and any
compression method, and returns them as DataFrames. It calls the functions notebooks 03-06
call on a run's files (:mod:`prunecxr.metrics`, :mod:`prunecxr.analysis`), so the numbers
are those the notebooks would show for the same predictions; nothing is written, and torch is
not imported. ``docs/extending.md`` shows an example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import levels as levels_
from . import metrics as metrics_
from . import published
from .analysis import cooccurrence, forgetting, overall, pies

#: the columns of :attr:`Result.eq2` (:class:`prunecxr.stats.OLSFit`'s coefficients)
EQ2_COLUMNS = ("term", "coef", "std_err", "t", "p_value", "ci_low", "ci_high")


@dataclass(frozen=True)
class Result:
    """What :func:`analyze` returns: one DataFrame per table of the paper's analyses.

    Attributes
    ----------
    metrics : AP and AUROC per seed, level and class (the rows of ``metrics.parquet``).
    overall : Fig. 1: class-mean AP over seeds per level, Welch's t-test against the dense
        level, Holm's correction (:func:`prunecxr.analysis.overall.overall_table`).
    first_drop : the least compressed level whose mean AP is significantly below the dense
        models' (NaN: none), at ``alpha``.
    curves : Eq. 1: the forgettability curve of every class with a positive test image.
    class_summary : per class: training and test counts, first drop, change at the extreme level.
    frequency_correlations : Fig. 3: log training frequency against each per-class quantity.
    pairs : Fig. 4: FCD, |Δ log frequency|, IoU and IoU^¼ per class pair.
    pair_correlations : FCD against each predictor of Eq. 2.
    eq2 : Eq. 2's OLS coefficients (empty when it cannot be fitted: too few pairs).
    pies : Fig. 5: per test image, the Spearman correlation of dense and compressed mean
        probabilities and whether it is a PIE.
    pie_class_ratios, pie_findings_ratios : PIE : non-PIE prevalence per class and per number of findings.
    level_name : the level axis.
    """

    metrics: pd.DataFrame
    overall: pd.DataFrame
    first_drop: float
    curves: pd.DataFrame
    class_summary: pd.DataFrame
    frequency_correlations: pd.DataFrame
    pairs: pd.DataFrame
    pair_correlations: pd.DataFrame
    eq2: pd.DataFrame
    pies: pd.DataFrame
    pie_class_ratios: pd.DataFrame
    pie_findings_ratios: pd.DataFrame
    level_name: str


def _binary(name: str, y, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise ValueError(
            f"{name} must be an array [images, {n_classes} classes] of 0/1, got shape {y.shape}"
        )
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{r}, {c}] is {y[r, c].item()!r}; labels must be 0 or 1")
    return y.astype(np.int8)


def label_table(
    labels, classes: Sequence[str], *, train_labels=None, image_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """A ``labels.parquet``-like table: the test labels ``[N, C]`` (and the training labels
    ``[M, C]``, for class frequencies) with ``image_id``, ``patient_id`` and ``split``."""
    classes = [str(c) for c in classes]
    y = _binary("labels", labels, len(classes))
    ids = [f"test-{i}" for i in range(len(y))] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != len(y):
        raise ValueError(f"image_ids has {len(ids)} entries for {len(y)} label rows")
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids holds a duplicate")
    parts = [pd.DataFrame({"image_id": ids, "split": "test"})]
    blocks = [y]
    if train_labels is not None:
        t = _binary("train_labels", train_labels, len(classes))
        parts.insert(
            0, pd.DataFrame({"image_id": [f"train-{i}" for i in range(len(t))], "split": "train"})
        )
        blocks.insert(0, t)
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(1, "patient_id", "")
    values = pd.DataFrame(np.concatenate(blocks), columns=classes).astype(np.int8)
    return pd.concat([frame, values], axis=1)


def analyze(
    probs,
    labels,
    levels: Sequence[float],
    classes: Sequence[str],
    *,
    level_name: str = "sparsity",
    seeds: Sequence[int] | None = None,
    train_labels=None,
    image_ids: Sequence[str] | None = None,
    method: str = "yours",
    alpha: float = published.PAPER_ALPHA,
    drop_threshold: float = published.DROP_THRESHOLD,
    fcd: str = "euclidean",
    cooccurrence_definition: str = "counts",
    pie_level: float | None = None,
    pie_fraction: float = published.PIE_FRACTION,
) -> Result:
    """The paper's analyses of one compression method's predictions, as DataFrames.

    Parameters
    ----------
    probs : array ``[S, K, N, C]``
        Sigmoid probabilities per seed (model of the population), level, test image and class.
    labels : array ``[N, C]`` of 0/1
        The test images' labels, rows and classes in the order of ``probs``.
    levels : K numbers
        The levels of axis 1 on the axis ``level_name`` (:mod:`prunecxr.levels`: ``sparsity``,
        ``bits`` or ``channel_fraction``), in compression order, the dense level first.
    classes : C names
        The classes of axis 3, in canonical order.
    seeds : S integers, optional
        The seeds of axis 0 (default 0 … S-1).
    train_labels : array ``[M, C]`` of 0/1, optional
        The training images' labels: the class frequencies of Fig. 3 and of the class
        summary. Without them ``train_count`` is 0 and the frequency correlations are NaN.
    image_ids : N names, optional
        The test images' names in ``pies`` (default ``test-<i>``).
    method : the method's name in the tables.
    alpha, drop_threshold, fcd, cooccurrence_definition, pie_fraction
        As the notebooks' parameters (the paper's values by default).
    pie_level : float, optional
        The compressed level compared with the dense one for PIEs: by default the paper's 0.9
        on the sparsity axis when it is among the levels, else the most compressed level.

    Returns
    -------
    Result
    """
    axis = levels_.axis(level_name)
    level_list = axis.check_levels(levels, dense_first=True, name="levels")
    classes = [str(c) for c in classes]
    probs = np.asarray(probs)
    if probs.ndim != 4:
        raise ValueError(
            f"probs must be an array [seeds, levels, images, classes], got shape {probs.shape}"
        )
    seeds = list(range(probs.shape[0])) if seeds is None else [int(s) for s in seeds]
    expected = (len(seeds), len(level_list), None, len(classes))
    if any(e is not None and e != s for e, s in zip(expected, probs.shape)):
        raise ValueError(
            f"probs has shape {probs.shape}; expected [{len(seeds)} seeds, {len(level_list)} levels, N, "
            f"{len(classes)} classes]"
        )
    bad = ~((probs >= 0) & (probs <= 1))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"probs{list(index)} is {probs[index].item()!r}; a probability is a number in [0, 1]"
        )
    table = label_table(labels, classes, train_labels=train_labels, image_ids=image_ids)
    y = table.loc[table["split"] == "test", classes].to_numpy()
    if y.shape[0] != probs.shape[2]:
        raise ValueError(f"labels has {y.shape[0]} rows; probs has {probs.shape[2]} test images")

    scores = metrics_.compute_metrics(
        probs, y, seeds=seeds, levels=level_list, level_name=axis.name, classes=classes
    )
    fig1 = overall.overall_table(scores, alpha=alpha)
    curves = forgetting.forgettability_curves(scores, classes=None)
    summary = forgetting.class_summary(curves, table, drop_threshold=drop_threshold)
    pairs = cooccurrence.pair_table(curves, table, fcd=fcd, cooccurrence=cooccurrence_definition)
    fit = cooccurrence.summarize(method, pairs)
    if pie_level is None:
        pie_level = axis.pie_level(level_list)
        if not np.isclose(level_list, pie_level, atol=published.SPARSITY_ATOL, rtol=0).any():
            pie_level = level_list[
                -1
            ]  # the paper's 0.9 is not among the levels: the most compressed
    found = pies.analyze_arrays(
        method,
        probs,
        table,
        levels=level_list,
        level_name=axis.name,
        classes=classes,
        dense_sparsity=axis.dense,
        pie_sparsity=pie_level,
        fraction=pie_fraction,
        store="probs",
        labels_name="labels",
    )
    return Result(
        metrics=scores,
        overall=fig1,
        first_drop=overall.first_significant_drop(fig1),
        curves=curves,
        class_summary=summary,
        frequency_correlations=forgetting.frequency_correlations(summary),
        pairs=pairs,
        pair_correlations=fit.correlations,
        eq2=fit.eq2.coefficients if fit.eq2 is not None else pd.DataFrame(columns=EQ2_COLUMNS),
        pies=found.table,
        pie_class_ratios=found.class_ratios,
        pie_findings_ratios=found.findings_ratios,
        level_name=axis.name,
    )


__all__ = ["Result", "analyze", "label_table"]
