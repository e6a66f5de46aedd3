"""Uncertainty of Fig. 5 (notebook 06): patient-clustered intervals of the PIE ratios, and
how the PIE set moves when the seeds are drawn again.

PIEs are 1,054 of 21,081 test images on the default run, but they come from a few hundred
patients, and a patient's images share their labels: the images are clustered. The intervals
here resample *patients* (each with all their images), never images. The PIE set itself is
held fixed for those intervals; :func:`pie_stability` then shows how much of it is a property of
this population of seeds. Methods in ``docs/statistics.md``.

Output: ``analysis/<method>/intervals_pies.parquet``
(:data:`prunecxr.analysis.uncertainty.INTERVAL_COLUMNS`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import artifacts, published, stats
from . import forgetting, pies
from .uncertainty import (
    UNLEARNED_AUROC,
    bootstrap_indices,
    interval_rows,
    unit_counts,
    unlearned_table,
)


# =========================================================================================
# Fig. 5: patient-clustered intervals of the PIE ratios, and the PIE set under seed resampling
# =========================================================================================
def pie_ratio_intervals(
    test_labels: pd.DataFrame,
    is_pie: np.ndarray,
    classes: list[str],
    *,
    train_counts: np.ndarray,
    is_unlearned: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    n_rarest: int = published.N_RAREST,
) -> pd.DataFrame:
    """Patient-clustered bootstrap intervals of every PIE:non-PIE ratio of Fig. 5.

    Patients are drawn with replacement, each with all their test images and with each
    image's PIE flag kept (the PIE set is fixed; :func:`pie_stability` shows how it moves
    with the seeds). Per class ``ratio = (Σ w y is_pie / Σ w is_pie) / (Σ w y ¬is_pie / Σ w ¬is_pie)``,
    as :func:`prunecxr.analysis.pies.class_ratios` with every image weighted by its patient's
    draw count ``w``; per-patient sums make each resample one matrix product. Also the
    ratio of 4+ findings and the min and max over the ``n_rarest`` classes rarest in training
    (the paper's "3× to 15×"). Percentile intervals.

    Returns :data:`INTERVAL_COLUMNS` rows: quantity ``pie_ratio[<class>]`` (subset ``unlearned``
    for a class the model did not learn, else ``learned``; ``n`` = PIEs with the class),
    ``pie_4plus_ratio``, ``pie_rarest_ratio_min``, ``pie_rarest_ratio_max``.
    """
    pie = np.asarray(is_pie, dtype=bool)
    if pie.shape != (len(test_labels),):
        raise ValueError(f"is_pie has shape {pie.shape}; expected ({len(test_labels)},)")
    ids = test_labels["patient_id"].astype(str)
    if (ids == "").all():  # imported labels name no patients: each image is its own cluster
        ids = test_labels["image_id"].astype(str)
    patient = pd.factorize(ids)[0]
    n_p = int(patient.max()) + 1
    y = test_labels[list(classes)].to_numpy(dtype=np.float64)
    four = (
        np.minimum(pies.n_findings(test_labels, classes), len(pies.FINDING_BINS) - 1)
        == len(pies.FINDING_BINS) - 1
    ).astype(float)
    cols = np.column_stack([y, four[:, None]])  # classes, then 4+ findings
    # per patient: PIE images, non-PIE images, and each column's positives among both
    agg = np.zeros((n_p, 2 + 2 * cols.shape[1]))
    np.add.at(
        agg,
        patient,
        np.column_stack([pie, ~pie, cols * pie[:, None], cols * ~pie[:, None]]).astype(float),
    )
    m = cols.shape[1]
    # the n_rarest classes rarest in training, ties broken by name (as pies.rarest_ratio_range)
    rare = (
        pd.DataFrame({"class": list(classes), "train_count": np.asarray(train_counts)})
        .sort_values(["train_count", "class"], kind="mergesort")
        .index.to_numpy()[:n_rarest]
    )

    def ratios(sums):
        with np.errstate(invalid="ignore", divide="ignore"):
            num = sums[..., 2 : 2 + m] / sums[..., :1]
            den = sums[..., 2 + m :] / sums[..., 1:2]
            r = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
            r = np.where(sums[..., :1] > 0, r, np.nan)
        rr = r[..., rare]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.concatenate(
                [r, np.nanmin(rr, axis=-1, keepdims=True), np.nanmax(rr, axis=-1, keepdims=True)],
                axis=-1,
            )

    estimate = ratios(agg.sum(axis=0))

    def stat(idx):
        counts = unit_counts(idx, n_p).astype(float)
        return np.moveaxis(ratios(counts @ agg), -1, 0).reshape(len(estimate), *idx.shape[:-1])

    low, high, _, used = bootstrap_indices(
        n_p,
        stat,
        n_resamples=n_boot,
        confidence=confidence,
        method="percentile",
        seed=seed,
        batch=200,
    )
    flags = np.asarray(is_unlearned, dtype=bool)
    names = [(f"pie_ratio[{c}]", "unlearned" if u else "learned") for c, u in zip(classes, flags)]
    names += [
        ("pie_4plus_ratio", "all"),
        ("pie_rarest_ratio_min", "all"),
        ("pie_rarest_ratio_max", "all"),
    ]
    n_pie_with = np.concatenate([(cols * pie[:, None]).sum(axis=0), [np.nan, np.nan]])
    n_pie_with[-2:] = pie.sum()
    return interval_rows(
        names,
        estimate,
        low,
        high,
        resampling="patients",
        method=used,
        n_resamples=n_boot,
        confidence=confidence,
        n=np.nan_to_num(n_pie_with).astype(np.int64),
        note="PIE set fixed; patients drawn with all their images",
    )


def pie_stability(
    probs: np.ndarray,
    dense_k: int,
    pie_k: int,
    image_ids,
    pie_flags: np.ndarray,
    *,
    fraction: float,
    n_resamples: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """How many PIEs stay PIEs when the seeds are drawn again (with replacement).

    For each of ``n_resamples`` draws of the seeds, the mean probabilities at the dense and
    the PIE level are averaged over the drawn seeds, the per-image Spearman correlation
    (:func:`prunecxr.stats.rowwise_spearman`) and the PIE selection
    (:func:`prunecxr.analysis.pies.select_pies`) are recomputed, and compared with the PIEs
    of all seeds. Returns one row per draw: ``draw``, ``n_pies``, ``retained`` (share of the
    original PIEs that are PIEs again) and ``jaccard`` (|A ∩ B| / |A ∪ B|).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples!r}")
    n_seeds = probs.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    weights = (
        np.stack([np.bincount(d, minlength=n_seeds) for d in draws]).astype(np.float64) / n_seeds
    )
    dense = np.asarray(probs[:, dense_k], dtype=np.float64)
    pruned = np.asarray(probs[:, pie_k], dtype=np.float64)
    original = np.asarray(pie_flags, dtype=bool)
    rows = []
    for b in range(n_resamples):
        d = np.tensordot(weights[b], dense, axes=1)
        p = np.tensordot(weights[b], pruned, axes=1)
        flags = pies.select_pies(stats.rowwise_spearman(d, p), image_ids, fraction=fraction)
        inter = int((flags & original).sum())
        union = int((flags | original).sum())
        rows.append(
            {
                "draw": b,
                "n_pies": int(flags.sum()),
                "retained": inter / original.sum() if original.any() else np.nan,
                "jaccard": inter / union if union else np.nan,
            }
        )
    return pd.DataFrame(rows)


def stability_rows(stability: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """The share of PIEs retained under seed resampling as :data:`INTERVAL_COLUMNS` rows
    (``estimate`` = mean over draws; the interval holds the central ``confidence`` of draws)."""
    alpha = (1 - confidence) / 2
    rows = []
    for quantity, column in (("pie_retained_share", "retained"), ("pie_jaccard", "jaccard")):
        v = stability[column].to_numpy(dtype=float)
        rows.append(
            interval_rows(
                [(quantity, "all")],
                [v.mean()],
                [np.quantile(v, alpha)],
                [np.quantile(v, 1 - alpha)],
                resampling="seeds",
                method="percentile of draws",
                n_resamples=len(v),
                confidence=confidence,
                n=int(stability["n_pies"].iloc[0]),
                note="PIEs recomputed from the drawn seeds, compared with all seeds' PIEs",
            )
        )
    return pd.concat(rows, ignore_index=True)


# =========================================================================================
# The stage (notebook 06)
# =========================================================================================
@dataclass(frozen=True)
class PieUncertainty:
    """Notebook 06's intervals and PIE stability for one method."""

    method: str
    intervals: pd.DataFrame
    stability: pd.DataFrame


def analyze(
    run: str,
    method: str,
    *,
    unlearned_auroc: float = UNLEARNED_AUROC,
    n_boot: int = 1000,
    n_pie_draws: int = 20,
    seed: int = 0,
) -> PieUncertainty:
    """Patient-clustered ratio intervals and the PIE set's stability for ``method``."""
    table = artifacts.read_pies(run, method)
    probs, meta = artifacts.read_store(run, method)
    classes = list(meta["classes"])
    labels = artifacts.read_labels(run, classes)
    test = labels[(labels["split"] == "test").to_numpy()].reset_index(drop=True)
    merged = test[["image_id"]].merge(table, on="image_id", how="left", validate="one_to_one")
    if merged["is_pie"].isna().any():
        raise ValueError(
            f"pies.parquet of {method!r} lacks {int(merged['is_pie'].isna().sum())} test images"
        )
    is_pie = merged["is_pie"].to_numpy(dtype=bool)
    counts = forgetting.label_counts(labels, classes)["train_count"].to_numpy()
    flags = unlearned_table(artifacts.read_metrics(run, method), classes, threshold=unlearned_auroc)
    is_unlearned = flags.set_index("class").loc[classes, "unlearned"].to_numpy(dtype=bool)
    intervals = pie_ratio_intervals(
        test,
        is_pie,
        classes,
        train_counts=counts,
        is_unlearned=is_unlearned,
        n_boot=n_boot,
        seed=seed,
    )
    level = [c for c in table.columns if c.startswith("dense_")][0].removeprefix("dense_")
    lv = np.asarray(meta["levels"], dtype=float)
    dense_k = pies.sparsity_index(lv, float(table[f"dense_{level}"].iloc[0]))
    pie_k = pies.sparsity_index(lv, float(table[f"pie_{level}"].iloc[0]))
    stability = pie_stability(
        probs,
        dense_k,
        pie_k,
        test["image_id"].astype(str).to_numpy(),
        is_pie,
        fraction=float(table["pie_fraction"].iloc[0]),
        n_resamples=n_pie_draws,
        seed=seed,
    )
    intervals = pd.concat([intervals, stability_rows(stability)], ignore_index=True)
    return PieUncertainty(method, intervals, stability)


def run_stage(run: str, methods: list[str], **options) -> dict[str, PieUncertainty]:
    """:func:`analyze` every method and write its ``intervals_pies.parquet``."""
    out = {}
    for method in methods:
        out[method] = analyze(run, method, **options)
        artifacts.write_intervals(run, method, "pies", out[method].intervals)
    return out


def ratio_display(intervals: pd.DataFrame) -> pd.DataFrame:
    """The PIE ratios with their patient intervals, as text (unlearned classes named)."""
    from .. import fmt

    rows = intervals[intervals["resampling"] == "patients"]
    return pd.DataFrame(
        {
            "quantity": rows["quantity"],
            "class learned?": rows["subset"]
            .map({"learned": "yes", "unlearned": "NO (dense AUROC low)"})
            .fillna(""),
            "PIEs with it": rows["n"],
            "ratio": [fmt.ratio(v) for v in rows["estimate"]],
            f"{int(round(100 * rows['confidence'].iloc[0])) if len(rows) else 95}% CI (patients)": [
                f"[{fmt.ratio(lo)}, {fmt.ratio(hi)}]"
                for lo, hi in zip(rows["ci_low"], rows["ci_high"])
            ],
        }
    ).reset_index(drop=True)
