"""This run's values beside the paper's published ones.

The published values are data in :mod:`prunecxr.published` (:data:`PUBLISHED`: each value
Holste et al. (MICCAI 2023) report for the analyses of notebooks 03–06, with the dataset it
was measured on and where in the paper it appears). :func:`comparison_values` computes "this
run" for each row from the run's artifacts (read by :mod:`prunecxr.artifacts`) with the same
functions the notebooks use (:mod:`prunecxr.analysis`), and :func:`comparison_table` formats
both with :mod:`prunecxr.fmt`. Nothing here is drawn into a figure.

Like is compared with like: a run on NIH data (``nih-cxr-lt``, or the ``nih-phantom`` whose 15
classes are the NIH ChestX-ray14 labels rather than NIH-CXR-LT's 20) is set beside the
NIH-CXR-LT values, a ``mimic-cxr-lt`` run beside MIMIC-CXR-LT's where the paper gives them
(else NIH-CXR-LT's, said so in the ``note``). Phantom runs are labelled as such.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import artifacts, config, fmt, paths
from .analysis import cooccurrence, forgetting, overall, pies
from .published import DATASET_MATCH, KINDS, MIMIC, NIH, PAPER_SETTINGS, PUBLISHED, SMALL_WEIGHT

VALUE_COLUMNS = [
    "key",
    "quantity",
    "kind",
    "source",
    "published_dataset",
    "published_value",
    "this_run_value",
    "ci_low",
    "ci_high",
    "interval",
    "verdict",
    "this_run_data",
    "method",
    "note",
]
#: the value a kind's "same sign" is taken against (none: only "inside" or not)
VERDICT_REFERENCE = {"corr": 0.0, "coef": 0.0, "ratio": 1.0}
INSIDE, SAME_SIDE, NEITHER, NO_INTERVAL = (
    "inside the interval",
    "outside, same sign",
    "neither",
    "no interval",
)
#: which analysis's intervals file holds each key (prunecxr.paths.INTERVAL_STAGES)
_INTERVAL_STAGE = {
    "first_significant_drop": "overall",
    "pie_rarest_ratio_min": "pies",
    "pie_rarest_ratio_max": "pies",
    "pie_4plus_ratio": "pies",
}
_INTERVAL_STAGE.update(
    {
        k: "forgetting"
        for k in (
            "rho_freq_first_drop",
            "r_freq_first_drop",
            "rho_freq_change_095",
            "r_freq_change_095",
        )
    }
)
_INTERVAL_STAGE.update(
    {
        k: "cooccurrence"
        for k in (
            "rho_fcd_freq_diff",
            "r_fcd_freq_diff",
            "rho_fcd_iou",
            "r_fcd_iou_quarter",
            "eq2_intercept",
            "eq2_abs_log_freq_diff",
            "eq2_iou_quarter",
            "eq2_interaction",
        )
    }
)


def dataset_match(run: str) -> tuple[str, str]:
    """The paper's dataset that ``run`` is compared with, and the caveat ('' when like for like)."""
    dataset = config.run_dataset(run)
    return DATASET_MATCH.get(dataset, (NIH, f"dataset {dataset!r} has no published counterpart"))


def run_dataset_label(run: str) -> str:
    """The run's dataset as the table names it; synthetic pixels are said so."""
    dataset = config.run_dataset(run)
    return f"{dataset} (PHANTOM: synthetic pixels)" if config.is_synthetic(run) else dataset


def caption(run: str) -> str:
    """A caption for the paper-versus-run table: what is compared with what."""
    paper_dataset, caveat = dataset_match(run)
    text = f"Published values ({paper_dataset} unless noted) beside run {run!r} ({run_dataset_label(run)})"
    return text + (f"; {caveat}" if caveat else "")


def published_value(key: str, dataset: str) -> float:
    """The published value of ``key`` on ``dataset`` (KeyError naming what exists)."""
    rows = PUBLISHED[(PUBLISHED["key"] == key) & (PUBLISHED["dataset"] == dataset)]
    if rows.empty:
        have = PUBLISHED.loc[PUBLISHED["key"] == key, "dataset"].tolist()
        raise KeyError(f"no published {key!r} for {dataset!r}; published for {have}")
    return float(rows["value"].iloc[0])


def _published_for(key: str, dataset: str) -> tuple[str, float, str]:
    rows = PUBLISHED[PUBLISHED["key"] == key]
    match = rows[rows["dataset"] == dataset]
    if not match.empty:
        return dataset, float(match["value"].iloc[0]), ""
    other = rows.iloc[0]
    return other["dataset"], float(other["value"]), f"published for {other['dataset']} only"


@dataclass
class _Measured:
    value: float
    note: str = ""


def _missing(stage: str, err: Exception) -> _Measured:
    return _Measured(np.nan, f"not computed yet: run notebook {stage} ({type(err).__name__})")


def _differs(name: str, value) -> str:
    expect = PAPER_SETTINGS[name]
    same = value == expect if isinstance(expect, str) else np.isclose(float(value), expect)
    return "" if same else f"{name} = {value} here, {expect} in the paper"


def _axis_note(run: str, method: str) -> str:
    """Empty for a sparsity store; else why its values are not the paper's quantities."""
    try:
        meta = artifacts.read_meta(run, method)
    except FileNotFoundError:
        return ""
    if meta["level_name"] == "sparsity":
        return ""
    return (
        f"{method} compresses along {meta['level_name']} ({meta['level_unit']}), the paper along sparsity: "
        "the same analysis on another axis"
    )


def _first_drop(run: str, method: str) -> _Measured:
    """Fig. 1's first significant drop (Welch's t-test at the paper's alpha), by :mod:`prunecxr.analysis.overall`."""
    try:
        metrics = artifacts.read_metrics(run, method)
    except FileNotFoundError as err:
        return _missing("03_prune", err)
    if "sparsity" not in metrics.columns:
        return _Measured(np.nan, f"{_axis_note(run, method)}; a level of it is not a sparsity")
    value = overall.first_significant_drop(overall.overall_table(metrics))
    note = "" if np.isfinite(value) else "no sparsity of this run has a significant drop"
    return _Measured(float(value), note)


def _small_weights(run: str) -> _Measured:
    """Fig. 1 (right): the share of the dense models' pruned-set weights below 0.01."""
    from .compress.sweep import dense_magnitudes

    summary = overall.magnitude_summary(dense_magnitudes(run), below=SMALL_WEIGHT)
    if summary is None:
        return _Measured(np.nan, "no dense checkpoints (imported predictions)")
    return _Measured(
        summary.fraction_below,
        f"{summary.n_weights // summary.n_models:,} weights per model; the paper's "
        "ResNet-50 has 23.5 million",
    )


def _forgetting_values(run: str, method: str) -> dict[str, _Measured]:
    keys = ("rho_freq_first_drop", "r_freq_first_drop", "rho_freq_change_095", "r_freq_change_095")
    try:
        res = forgetting.read_results(run, method)
    except FileNotFoundError as err:
        return {k: _missing("04_class_forgetting", err) for k in keys}
    corr = res.correlations.set_index("y")
    threshold = (
        float(res.summary["drop_threshold"].iloc[0])
        if len(res.summary)
        else PAPER_SETTINGS["drop_threshold"]
    )
    note = _differs("drop_threshold", threshold) if len(res.summary) else ""
    drop, change = corr.loc["first_drop"], corr.loc[forgetting.change_column(res.summary)]
    n_drop = (
        f"{int(drop['n'])} of {len(res.summary)} classes drop {fmt.pct(threshold)}"
        if drop["n"] < len(res.summary)
        else ""
    )
    axis_note = _axis_note(run, method)
    drop_note = "; ".join(x for x in (note, n_drop, axis_note) if x)
    change_note = "; ".join(
        x for x in (axis_note, "at the most compressed level" if axis_note else "") if x
    )
    return {
        "rho_freq_first_drop": _Measured(drop["spearman_rho"], drop_note),
        "r_freq_first_drop": _Measured(drop["pearson_r"], drop_note),
        "rho_freq_change_095": _Measured(change["spearman_rho"], change_note),
        "r_freq_change_095": _Measured(change["pearson_r"], change_note),
    }


def _cooccurrence_values(run: str, method: str) -> dict[str, _Measured]:
    keys = tuple(SECTIONS["05_cooccurrence"])  # notebook 05's rows are exactly these values
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = cooccurrence.read_results(run, method)
    except FileNotFoundError as err:
        return {k: _missing("05_cooccurrence", err) for k in keys}
    notes = []
    if len(res.pairs):
        notes = [_differs(c, res.pairs[c].iloc[0]) for c in ("fcd_definition", "cooccurrence")]
    note = "; ".join(n for n in notes if n)
    corr = res.correlations.set_index("x")
    out = {
        "rho_fcd_freq_diff": _Measured(corr.loc["abs_log_freq_diff", "spearman_rho"], note),
        "r_fcd_freq_diff": _Measured(corr.loc["abs_log_freq_diff", "pearson_r"], note),
        "rho_fcd_iou": _Measured(corr.loc["iou", "spearman_rho"], note),
        "r_fcd_iou_quarter": _Measured(corr.loc["iou_quarter", "pearson_r"], note),
    }
    terms = {
        "eq2_intercept": "Intercept",
        "eq2_abs_log_freq_diff": "abs_log_freq_diff",
        "eq2_iou_quarter": "iou_quarter",
        "eq2_interaction": "abs_log_freq_diff:iou_quarter",
    }
    for key, term in terms.items():
        out[key] = (
            _Measured(res.eq2.coef(term), note)
            if res.eq2
            else _Measured(np.nan, "Eq. 2 not fitted")
        )
    out["eq2_interaction_p"] = (
        _Measured(res.eq2.p_value("abs_log_freq_diff:iou_quarter"), note)
        if res.eq2
        else _Measured(np.nan, "Eq. 2 not fitted")
    )
    return out


def _pie_values(run: str, method: str) -> dict[str, _Measured]:
    keys = ("pie_rarest_ratio_min", "pie_rarest_ratio_max", "pie_4plus_ratio")
    try:
        table = artifacts.read_pies(run, method)
    except FileNotFoundError as err:
        return {k: _missing("06_pies", err) for k in keys}
    classes = list(artifacts.read_meta(run, method)["classes"])
    labels = artifacts.read_labels(run, classes)
    test = labels[(labels["split"] == "test").to_numpy()]
    merged = test[["image_id"]].merge(
        table[["image_id", "is_pie"]], on="image_id", how="left", validate="one_to_one"
    )
    if merged["is_pie"].isna().any():
        raise ValueError(
            f"{paths.run_paths(run).pies(method)} lacks {int(merged['is_pie'].isna().sum())} test images "
            "of labels.parquet"
        )
    is_pie = merged["is_pie"].to_numpy(dtype=bool)
    counts = forgetting.label_counts(labels, classes)
    ratios = pies.class_ratios(test, is_pie, classes, train_counts=counts["train_count"])
    lo, hi, rare = pies.rarest_ratio_range(ratios)
    bins = pies.findings_ratios(test, is_pie, classes).set_index("n_findings")
    notes = [
        _differs(c, table[c].iloc[0])
        for c in ("dense_sparsity", "pie_sparsity", "pie_fraction")
        if c in table.columns and len(table)
    ]
    note = "; ".join(n for n in [*notes, _axis_note(run, method)] if n)
    by_class = ratios.set_index("class")["ratio"]
    listed = ", ".join(f"{c} {fmt.ratio(by_class[c])}" for c in rare)
    rare_note = "; ".join(
        x for x in (note, f"rarest in training here: {listed} (— undefined, ignored)") if x
    )
    return {
        "pie_rarest_ratio_min": _Measured(lo, rare_note),
        "pie_rarest_ratio_max": _Measured(hi, rare_note),
        "pie_4plus_ratio": _Measured(bins.loc[pies.FINDING_BINS[-1], "ratio"], note),
    }


def verdict(published: float, low: float, high: float, kind: str) -> str:
    """Where the paper's value falls against this run's interval ``[low, high]``.

    ``inside the interval``; else ``outside, same sign`` when the whole interval lies on the
    paper's side of the kind's reference (0 for correlations and coefficients, 1 for ratios:
    the run finds the same direction, of another size); else ``neither``. ``no interval``
    when the run has none (a P value, a notebook not run).
    """
    if not (np.isfinite(published) and not np.isnan(low) and not np.isnan(high)):
        return NO_INTERVAL
    if low <= published <= high:
        return INSIDE
    ref = VERDICT_REFERENCE.get(kind)
    if ref is not None and ((published > ref and low > ref) or (published < ref and high < ref)):
        return SAME_SIDE
    return NEITHER


def _interval_for(run: str, method: str, key: str) -> tuple[float, float, str]:
    """The widest interval of ``key`` over the resampling units (seeds, classes, patients) of
    the analysis that computed it, over every class (``subset`` "all"): ``(low, high, label)``."""
    stage = _INTERVAL_STAGE.get(key)
    if stage is None:
        return np.nan, np.nan, ""
    try:
        table = artifacts.read_intervals(run, method, stage)
    except FileNotFoundError:
        return np.nan, np.nan, ""
    quantity = "first_significant_drop[welch, none]" if key == "first_significant_drop" else key
    rows = table[(table["quantity"] == quantity) & (table["subset"] == "all")]
    rows = rows[
        np.isfinite(rows["ci_low"].to_numpy(dtype=float))
        | np.isinf(rows["ci_high"].to_numpy(dtype=float))
    ]
    if rows.empty:
        return np.nan, np.nan, ""
    width = (rows["ci_high"] - rows["ci_low"]).to_numpy(dtype=float)
    row = rows.iloc[int(np.nanargmax(np.where(np.isnan(width), -np.inf, width)))]
    level = f"{round(100 * float(row['confidence']))}%"
    return (
        float(row["ci_low"]),
        float(row["ci_high"]),
        f"{level}, over {row['resampling']} ({row['interval']})",
    )


def _dyadic_note(run: str, method: str) -> str:
    """The permutation P values of Eq. 2's interaction, beside the classical one."""
    try:
        tests = artifacts.read_dyadic_tests(run, method)
    except FileNotFoundError:
        return ""
    rows = tests[(tests["quantity"] == "eq2_interaction") & (tests["subset"] == "all")].set_index(
        "inference"
    )
    parts = [
        f"{name}: {fmt.pvalue(rows.loc[name, 'p_value'])}"
        for name in ("Y-QAP (class permutation)", "Freedman–Lane (class permutation)")
        if name in rows.index
    ]
    return (
        ("this run's P is the classical one, which assumes independent pairs; " + ", ".join(parts))
        if parts
        else ""
    )


def comparison_values(run: str, *, method: str | None = None) -> pd.DataFrame:
    """Each published value beside this run's value of the same quantity (numbers).

    Parameters
    ----------
    run : the run; its artifacts are read, nothing is recomputed from scratch.
    method : the compression method (default: ``global_l1``, else the first present, as the
        paper's figures).

    Returns
    -------
    DataFrame
        One row per quantity of :data:`PUBLISHED`: ``key``, ``quantity``, ``kind``,
        ``source``, ``published_dataset``, ``published_value``, ``this_run_value``, its
        interval ``ci_low``/``ci_high`` (the widest of the run's bootstrap intervals over
        seeds, classes and patients; ``docs/statistics.md``) described in ``interval``,
        ``verdict`` (:func:`verdict`), ``this_run_data`` (the run's dataset, marked when synthetic), ``method`` and
        ``note`` (why a value is missing, or how the comparison differs: another dataset,
        other settings). ``this_run_value`` is NaN when the notebook that produces it has not
        run, or when the quantity is undefined on this run (the note says which).

    Raises
    ------
    FileNotFoundError
        When the run has no pruning results at all.
    """
    method = method or forgetting.figure_method(run)
    paper_dataset, _ = dataset_match(run)
    data = run_dataset_label(run)
    measured = {
        "first_significant_drop": _first_drop(run, method),
        "share_weights_below_001": _small_weights(run),
    }
    measured.update(_forgetting_values(run, method))
    measured.update(_cooccurrence_values(run, method))
    measured.update(_pie_values(run, method))
    rows = []
    for key in dict.fromkeys(PUBLISHED["key"]):
        first = PUBLISHED[PUBLISHED["key"] == key].iloc[0]
        pub_dataset, pub_value, pub_note = _published_for(key, paper_dataset)
        m = measured[key]
        extra = _dyadic_note(run, method) if key == "eq2_interaction_p" else ""
        note = "; ".join(x for x in (pub_note, m.note, extra) if x)
        low, high, interval = _interval_for(run, method, key)
        rows.append(
            {
                "key": key,
                "quantity": first["quantity"],
                "kind": first["kind"],
                "source": PUBLISHED.loc[
                    (PUBLISHED["key"] == key) & (PUBLISHED["dataset"] == pub_dataset), "source"
                ].iloc[0],
                "published_dataset": pub_dataset,
                "published_value": pub_value,
                "this_run_value": float(m.value) if m.value is not None else np.nan,
                "ci_low": low,
                "ci_high": high,
                "interval": interval,
                "verdict": verdict(pub_value, low, high, first["kind"]),
                "this_run_data": data,
                "method": method,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=VALUE_COLUMNS)


def format_value(value, kind: str) -> str:
    """A value as text in its kind's format (:data:`KINDS`, via :mod:`prunecxr.fmt`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
    if kind == "p":
        text = fmt.pvalue(value)
        return text[len("P = ") :] if text.startswith("P = ") else text
    return getattr(fmt, KINDS[kind])(value)


def format_interval(low: float, high: float, kind: str, what: str = "") -> str:
    """``[low, high]`` in the kind's format, with what it is taken over; ``—`` when absent.
    An infinite end on the sparsity axis is "none" (no significant level in those draws)."""
    if np.isnan(low) and np.isnan(high):
        return "—"

    def one(v):
        return "none" if np.isinf(v) and kind == "sparsity" else format_value(v, kind)

    return f"[{one(low)}, {one(high)}]" + (f" ({what})" if what else "")


def comparison_table(
    run: str, *, method: str | None = None, keys: list[str] | None = None
) -> pd.DataFrame:
    """The paper-versus-run table as text, for notebooks and the report.

    Columns ``quantity``, ``published``, ``published_dataset``, ``this_run``,
    ``this_run_interval`` (with what it is taken over), ``verdict``, ``this_run_data``,
    ``source``, ``note``; rows of :func:`comparison_values` (only
    ``keys`` if given), every number formatted by :mod:`prunecxr.fmt`.
    """
    values = comparison_values(run, method=method)
    if keys is not None:
        unknown = sorted(set(keys) - set(values["key"]))
        if unknown:
            raise KeyError(f"unknown keys {unknown}; choose from {list(values['key'])}")
        values = values[values["key"].isin(keys)]
    return pd.DataFrame(
        {
            "quantity": values["quantity"],
            "published": [
                format_value(v, k) for v, k in zip(values["published_value"], values["kind"])
            ],
            "published_dataset": values["published_dataset"],
            "this_run": [
                format_value(v, k) for v, k in zip(values["this_run_value"], values["kind"])
            ],
            "this_run_interval": [
                format_interval(lo, hi, k, what)
                for lo, hi, k, what in zip(
                    values["ci_low"], values["ci_high"], values["kind"], values["interval"]
                )
            ],
            "verdict": values["verdict"],
            "this_run_data": values["this_run_data"] + " / " + values["method"],
            "source": values["source"],
            "note": values["note"],
        }
    ).reset_index(drop=True)


#: The rows each analysis notebook shows (its own findings); the report shows them all.
SECTIONS = {
    "04_class_forgetting": [
        "share_weights_below_001",
        "first_significant_drop",
        "rho_freq_first_drop",
        "r_freq_first_drop",
        "rho_freq_change_095",
        "r_freq_change_095",
    ],
    "05_cooccurrence": [
        "rho_fcd_freq_diff",
        "r_fcd_freq_diff",
        "rho_fcd_iou",
        "r_fcd_iou_quarter",
        "eq2_intercept",
        "eq2_abs_log_freq_diff",
        "eq2_iou_quarter",
        "eq2_interaction",
        "eq2_interaction_p",
    ],
    "06_pies": ["pie_rarest_ratio_min", "pie_rarest_ratio_max", "pie_4plus_ratio"],
}


# -- the data: supplementary Table 2 beside the run's class counts ---------------------------
#: Table 2's dataset key (:func:`prunecxr.data.reference.class_counts`) of each paper dataset
_TABLE2 = {NIH: "nih-cxr-lt", MIMIC: "mimic-cxr-lt"}
#: NIH-CXR-LT's findings parsed from reports; it clears No Finding on the images that carry one
NIH_ADDED_FINDINGS = (
    "Subcutaneous Emphysema",
    "Tortuous Aorta",
    "Calcification of the Aorta",
    "Pneumoperitoneum",
    "Pneumomediastinum",
)


def class_count_table(run: str) -> pd.DataFrame:
    """Images per class and split: the paper's supplementary Table 2 beside this run.

    One row per class of the paper's dataset (the one :func:`dataset_match` compares the run
    with) or of the run, in the paper's order, then the run's own: ``class``, then per split the
    paper's count beside the run's (``paper_train``, ``run_train``, ``paper_val``, ``run_val``,
    ``paper_test``, ``run_test``; NaN where a class is not in that dataset) and ``note``; a
    last row ``all images`` holds the image totals.
    Counts come from ``labels.parquet``; nothing is recomputed from scratch.
    """
    from .data import reference

    paper_dataset, _ = dataset_match(run)
    table2 = reference.class_counts(_TABLE2[paper_dataset])
    labels = artifacts.read_labels(run)
    classes = artifacts.class_names(labels)
    splits = ("train", "val", "test")
    names = list(table2.index) + [c for c in classes if c not in table2.index]
    counts = {s: labels.loc[labels["split"] == s, classes].sum() for s in splits}
    info = config.run_data(run)
    subsample = info.get("n_images_available", len(labels)) > len(labels)
    rows = []
    for name in names:
        row = {"class": name}
        for s in splits:
            row[f"paper_{s}"] = float(table2.loc[name, s]) if name in table2.index else np.nan
            row[f"run_{s}"] = float(counts[s][name]) if name in classes else np.nan
        note = ""
        if name not in classes:
            note = "not a class of this run"
        elif name not in table2.index:
            note = f"not a class of {paper_dataset}"
        elif (
            name == "No Finding"
            and paper_dataset == NIH
            and not set(NIH_ADDED_FINDINGS) <= set(classes)
        ):
            note = f"{paper_dataset} clears No Finding on images with one of its five report-parsed findings"
        elif not subsample and any(row[f"paper_{s}"] != row[f"run_{s}"] for s in splits):
            note = "differs"
        rows.append(row | {"note": note})
    totals = reference.image_totals(_TABLE2[paper_dataset])
    total_row = {
        "class": "all images",
        "note": f"a subsample of {len(labels):,} images" if subsample else "",
    }
    for s in splits:
        total_row[f"paper_{s}"] = float(totals[s])
        total_row[f"run_{s}"] = float((labels["split"] == s).sum())
    rows.append(total_row)
    return pd.DataFrame(rows)


def class_count_display(run: str) -> pd.DataFrame:
    """:func:`class_count_table` as text: counts with thousands separators (:func:`prunecxr.fmt.count`)."""
    table = class_count_table(run)
    out = table[["class"]].copy()
    for col in table.columns:
        if col.startswith(("paper_", "run_")):
            out[col.replace("_", " ")] = [fmt.count(v) for v in table[col]]
    out["note"] = table["note"]
    return out
