"""Pruning-identified exemplars (notebook 06): Fig. 5 of Holste et al. (2023).

For each test image, the seeds' predicted probabilities are averaged at the dense sparsity
(0) and at a high sparsity (0.9); the Spearman correlation of the two probability vectors
across classes measures how much pruning reorders the image's predictions. PIEs are the
``int(fraction · N)`` images with the lowest correlation (``fraction`` = 0.05 in the paper).

Constant predictions (NaN correlation)
--------------------------------------
An image whose mean probabilities are equal for every class under either model has no
ranking to compare: its ``spearman`` is NaN. A NaN is not evidence that pruning changed the
image's ranking, so such images rank *after* every image with a finite correlation; they
become PIEs only when fewer than ``int(fraction · N)`` images have one, which keeps the
number of PIEs fixed. Ties (equal correlations, or NaNs) are broken by ``image_id``, so the
selection never depends on row order or on how a library sorts NaN. A warning counts them.

Other compression methods (notebook 08)
---------------------------------------
The same selection finds *compression-identified exemplars* of any method: the dense level of
its axis (:mod:`prunecxr.levels`: 32 bits, no channel removed) against its most compressed
level (:meth:`prunecxr.levels.Axis.pie_level`); ``pie_sparsity`` applies to the sparsity axis.

Output: ``analysis/<method>/pies.parquet`` (``image_id``, ``spearman``, ``is_pie``, plus the
parameters ``dense_sparsity``, ``pie_sparsity``, ``pie_fraction``, the levels named by their
axis on the other axes: ``dense_bits``, ``pie_bits``, ...), one row per test image in the order
of the test rows of ``labels.parquet``.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import artifacts, config, data, figures, fmt, levels, paths, published, stats
from ..levels import axis as level_axis
from . import forgetting

#: bins of the number of findings per image (Fig. 5, right); "No Finding" is not a finding
FINDING_BINS = ("0", "1", "2", "3", "4+")
#: top predictions listed per model in the gallery
GALLERY_TOP = 3
PIE_COLUMNS = ["image_id", "spearman", "is_pie", "dense_sparsity", "pie_sparsity", "pie_fraction"]


def pie_columns(level_name: str = "sparsity") -> list[str]:
    """:data:`PIE_COLUMNS` with the two levels named by their axis (``dense_bits``, ``pie_bits``...)."""
    return [c.replace("sparsity", level_name) for c in PIE_COLUMNS]


def is_no_finding(name: str) -> bool:
    """Whether a class name is the 'No Finding' label (not counted as a finding)."""
    return " ".join(str(name).replace("_", " ").lower().split()) == "no finding"


# -- selecting PIEs ------------------------------------------------------------------------
def sparsity_index(sparsities, sparsity: float, *, name: str = "sparsity") -> int:
    """Position of ``sparsity`` among the run's ``sparsities`` (error naming those present)."""
    values = np.asarray(sparsities, dtype=float)
    hit = np.flatnonzero(np.isclose(values, float(sparsity), atol=published.SPARSITY_ATOL))
    if hit.size == 0:
        raise ValueError(f"{name}={sparsity!r} is not among the run's sparsities {values.tolist()}")
    return int(hit[0])


def mean_probs(
    probs: np.ndarray, sparsities, sparsity: float, *, name: str = "sparsity"
) -> np.ndarray:
    """The seeds' mean predicted probabilities at one sparsity.

    Parameters
    ----------
    probs : ndarray, shape (n_seeds, n_sparsities, n_test, n_classes)
        ``prune/<method>/probs.npy`` (may be memory-mapped; only one sparsity is read).
    sparsities : the sparsities of axis 1 (``meta.json``).
    sparsity : the sparsity to average at.

    Returns
    -------
    ndarray of float64, shape (n_test, n_classes): ``mean_i probs[i, k]``.
    """
    if probs.ndim != 4:
        raise ValueError(
            f"probs must be [n_seeds, n_sparsities, n_test, n_classes]; got shape {probs.shape}"
        )
    if probs.shape[1] != len(sparsities):
        raise ValueError(
            f"probs has {probs.shape[1]} sparsities but meta.json lists {len(sparsities)}"
        )
    k = sparsity_index(sparsities, sparsity, name=name)
    return np.asarray(probs[:, k], dtype=np.float64).mean(axis=0)


def n_pies(n_images: int, fraction: float) -> int:
    """The number of PIEs among ``n_images``: ``int(fraction · n_images)`` (the paper's rule)."""
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise ValueError(f"pie_fraction must be a fraction in [0, 1]; got {fraction!r}")
    return int(fraction * n_images)


def select_pies(spearman, image_ids, *, fraction: float) -> np.ndarray:
    """Flag the ``int(fraction · N)`` images with the lowest Spearman correlation.

    Parameters
    ----------
    spearman : array-like, shape (N,): per-image correlation (NaN allowed).
    image_ids : array-like of str, shape (N,): unique ids, used to break ties.
    fraction : share of images flagged.

    Returns
    -------
    ndarray of bool, shape (N,), in the input order. Ranking: finite correlations ascending,
    then NaNs; ties by ``image_id`` (module docstring).
    """
    rho = np.asarray(spearman, dtype=float)
    ids = pd.Series(np.asarray(image_ids), dtype=str)
    if rho.ndim != 1 or len(ids) != rho.size:
        raise ValueError(
            f"spearman and image_ids must be 1-D of equal length; got {rho.shape} and {len(ids)}"
        )
    if ids.duplicated().any():
        raise ValueError(f"image_ids are not unique, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    k = n_pies(rho.size, fraction)
    order = (
        pd.DataFrame(
            {
                "undefined": np.isnan(rho),
                "rho": np.nan_to_num(rho, nan=0.0),
                "image_id": ids.to_numpy(),
            }
        )
        .sort_values(["undefined", "rho", "image_id"], kind="mergesort")
        .index.to_numpy()
    )
    flags = np.zeros(rho.size, dtype=bool)
    flags[order[:k]] = True
    return flags


def pie_table(
    dense: np.ndarray,
    pruned: np.ndarray,
    image_ids,
    *,
    fraction: float,
) -> pd.DataFrame:
    """Per image Spearman correlation of dense and pruned mean probabilities, and the PIE flag.

    Parameters
    ----------
    dense, pruned : ndarray, shape (N, n_classes): mean probabilities (:func:`mean_probs`).
    image_ids : shape (N,), unique.
    fraction : share of images flagged as PIEs (paper: 0.05).

    Returns
    -------
    DataFrame with ``image_id``, ``spearman`` (:func:`prunecxr.stats.rowwise_spearman`; NaN
    for constant predictions) and ``is_pie`` (:func:`select_pies`), in the input order.
    """
    rho = stats.rowwise_spearman(dense, pruned)
    n_nan = int(np.isnan(rho).sum())
    if n_nan:
        warnings.warn(
            f"{n_nan} test images have constant predictions under the dense or the pruned model "
            "(Spearman undefined); they rank after every finite correlation",
            stacklevel=2,
        )
    return pd.DataFrame(
        {
            "image_id": pd.Series(np.asarray(image_ids), dtype=str).to_numpy(),
            "spearman": rho,
            "is_pie": select_pies(rho, image_ids, fraction=fraction),
        }
    )


# -- Fig. 5 --------------------------------------------------------------------------------
def class_ratios(
    test_labels: pd.DataFrame, is_pie, classes: list[str], *, train_counts=None
) -> pd.DataFrame:
    """Prevalence of each class among PIEs divided by its prevalence among non-PIEs (Fig. 5, left).

    Parameters
    ----------
    test_labels : DataFrame, one row per test image with a 0/1 column per class.
    is_pie : bool array, shape (n_test,), aligned with ``test_labels``.
    classes : the classes, canonical order.
    train_counts : optional, shape (n_classes,): training images per class, to order rows
        from commonest to rarest as the paper does (ties keep canonical order).

    Returns
    -------
    DataFrame
        ``class``, ``train_count`` (if given), ``n_pie``/``n_non_pie`` (positive images in
        each group), ``pie_prevalence = n_pie / #PIEs``, ``non_pie_prevalence``, and
        ``ratio = pie_prevalence / non_pie_prevalence``. The ratio is NaN where it is
        undefined: no PIE, or a class absent from the non-PIEs (prevalence 0).
    """
    pie = np.asarray(is_pie, dtype=bool)
    if pie.shape != (len(test_labels),):
        raise ValueError(f"is_pie has shape {pie.shape}; expected ({len(test_labels)},)")
    y = test_labels[list(classes)].to_numpy(dtype=np.int64)
    n_p, n_n = int(pie.sum()), int((~pie).sum())
    out = pd.DataFrame({"class": list(classes)})
    if train_counts is not None:
        out["train_count"] = np.asarray(train_counts, dtype=np.int64)
    out["n_pie"] = y[pie].sum(axis=0)
    out["n_non_pie"] = y[~pie].sum(axis=0)
    out["pie_prevalence"] = out["n_pie"] / n_p if n_p else np.nan
    out["non_pie_prevalence"] = out["n_non_pie"] / n_n if n_n else np.nan
    out["ratio"] = _ratio(out["pie_prevalence"], out["non_pie_prevalence"])
    if train_counts is not None:
        out = out.sort_values("train_count", ascending=False, kind="mergesort").reset_index(
            drop=True
        )
    return out


def _ratio(num: pd.Series, den: pd.Series) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    out = np.full(num.shape, np.nan)
    out[ok] = num[ok] / den[ok]
    return out


def n_findings(test_labels: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Findings per image: positive labels, 'No Finding' not counted. Shape (n_images,)."""
    findings = [c for c in classes if not is_no_finding(c)]
    return test_labels[findings].to_numpy(dtype=np.int64).sum(axis=1)


def findings_ratios(test_labels: pd.DataFrame, is_pie, classes: list[str]) -> pd.DataFrame:
    """Share of images with 0, 1, 2, 3, 4+ findings among PIEs over that among non-PIEs (Fig. 5, right).

    Returns one row per bin of :data:`FINDING_BINS` (every bin, even an empty one):
    ``n_findings``, ``n_pie``, ``n_non_pie``, ``pie_share = n_pie / #PIEs``,
    ``non_pie_share`` and ``ratio = pie_share / non_pie_share`` — NaN when undefined (no
    PIE, or no non-PIE image in the bin), so an empty bin shows as an empty bar.
    """
    pie = np.asarray(is_pie, dtype=bool)
    if pie.shape != (len(test_labels),):
        raise ValueError(f"is_pie has shape {pie.shape}; expected ({len(test_labels)},)")
    bins = np.minimum(n_findings(test_labels, classes), len(FINDING_BINS) - 1)
    n_p, n_n = int(pie.sum()), int((~pie).sum())
    out = pd.DataFrame({"n_findings": list(FINDING_BINS)})
    out["n_pie"] = np.bincount(bins[pie], minlength=len(FINDING_BINS))
    out["n_non_pie"] = np.bincount(bins[~pie], minlength=len(FINDING_BINS))
    out["pie_share"] = out["n_pie"] / n_p if n_p else np.nan
    out["non_pie_share"] = out["n_non_pie"] / n_n if n_n else np.nan
    out["ratio"] = _ratio(out["pie_share"], out["non_pie_share"])
    return out


def rarest_ratio_range(
    ratios: pd.DataFrame, *, n: int = published.N_RAREST
) -> tuple[float, float, list[str]]:
    """Smallest and largest PIE:non-PIE ratio among the ``n`` classes rarest in training.

    ``ratios`` needs ``train_count`` (:func:`class_ratios` with ``train_counts``); rarity
    ties are broken by class name. NaN ratios are ignored (both NaN if all are).
    Returns ``(min, max, classes)``; the paper reports 3× to 15× on NIH-CXR-LT.
    """
    if "train_count" not in ratios.columns:
        raise ValueError("class ratios need train_count to find the rarest classes")
    rare = ratios.sort_values(["train_count", "class"], kind="mergesort").head(n)
    values = rare["ratio"].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), list(rare["class"])
    return float(values.min()), float(values.max()), list(rare["class"])


def figure_5(result: Pies, *, unlearned=()) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 5: PIE:non-PIE prevalence ratio per class (commonest to rarest) and per number of findings.

    A dashed line marks 1 (as frequent among PIEs as among non-PIEs); an undefined ratio is
    an empty bar; a class of ``unlearned`` (dense AUROC low) is a grey bar. Returns the figure
    and the plotted data (both panels, long format, with ``unlearned``).
    """
    cls = result.class_ratios.copy()
    cls["unlearned"] = cls["class"].isin(set(unlearned))
    bins = result.findings_ratios
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.75, 0.25],
        horizontal_spacing=0.08,
        subplot_titles=("By class (commonest → rarest)", "By number of findings"),
    )
    fig.add_trace(
        go.Bar(
            x=cls["class"],
            y=cls["ratio"],
            showlegend=False,
            marker_color=np.where(cls["unlearned"], "#aaaaaa", "#1f77b4").tolist(),
            texttemplate="%{y:.1f}",
            textposition="outside",
            cliponaxis=False,
            customdata=np.stack([cls["n_pie"], cls["n_non_pie"]], axis=1),
            hovertemplate="%{x}<br>ratio %{y:.2f}<br>PIEs with it %{customdata[0]}"
            "<br>non-PIEs with it %{customdata[1]}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=bins["n_findings"],
            y=bins["ratio"],
            showlegend=False,
            marker_color="#1f77b4",
            texttemplate="%{y:.1f}",
            textposition="outside",
            cliponaxis=False,
            customdata=np.stack([bins["n_pie"], bins["n_non_pie"]], axis=1),
            hovertemplate="%{x} findings<br>ratio %{y:.2f}<br>PIEs %{customdata[0]}"
            "<br>non-PIEs %{customdata[1]}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    for col in (1, 2):
        fig.add_hline(y=1, line_dash="dash", line_color="black", row=1, col=col)
    fig.update_xaxes(type="category", row=1, col=2, title_text="Findings per image")
    fig.update_xaxes(title_text="Class", tickangle=-45, row=1, col=1)
    fig.update_yaxes(title_text="PIE : non-PIE ratio", row=1, col=1)
    n_pie = int(result.table["is_pie"].sum())
    fig.update_layout(
        title=f"Pruning-identified exemplars (Fig. 5), {result.method}: {n_pie} PIEs of "
        f"{len(result.table)} test images, {_level_text(result, result.dense_sparsity)} vs "
        f"{_level_text(result, result.pie_sparsity)}",
        margin=dict(t=140, b=170),
    )
    # an undefined ratio has no bar and no value: say so under the panels
    fig.add_annotation(
        text="No bar and no value: ratio undefined (absent from non-PIEs, or no PIE)."
        + (
            " Grey: a class the model did not learn (dense AUROC low)."
            if cls["unlearned"].any()
            else ""
        ),
        xref="paper",
        yref="paper",
        x=1,
        xanchor="right",
        y=-0.5,
        yanchor="top",
        showarrow=False,
        font=dict(size=11),
    )
    data = pd.concat(
        [
            cls.assign(panel="class", group=cls["class"])[
                ["panel", "group", "n_pie", "n_non_pie", "ratio", "unlearned"]
            ],
            bins.assign(panel="n_findings", group=bins["n_findings"], unlearned=False)[
                ["panel", "group", "n_pie", "n_non_pie", "ratio", "unlearned"]
            ],
        ],
        ignore_index=True,
    )
    return fig, data


def _level_text(result: Pies, value: float) -> str:
    """A level of ``result``'s axis as text: ``90% sparsity``, ``4 bits``, ``50% channel_fraction``."""
    axis = levels.axis(result.level_name)
    text = axis.format(value)
    return text if axis.name == "bits" else f"{text} {axis.name.replace('_', ' ')}"


# -- the stage -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Pies:
    """Notebook 06's results for one method."""

    method: str
    dense_sparsity: float
    pie_sparsity: float
    fraction: float
    #: pies.parquet: image_id, spearman, is_pie (+ parameters), test order
    table: pd.DataFrame
    class_ratios: pd.DataFrame
    findings_ratios: pd.DataFrame
    #: mean probabilities, shape (n_test, n_classes), for the gallery
    dense: np.ndarray
    pruned: np.ndarray
    classes: list
    #: the test rows of labels.parquet, in test order
    test: pd.DataFrame
    #: the axis of the two levels (``dense_sparsity`` and ``pie_sparsity`` hold levels of it)
    level_name: str = "sparsity"


def analyze(
    run: str,
    method: str,
    *,
    dense_sparsity: float = 0.0,
    pie_sparsity: float = published.PIE_SPARSITY,
    fraction: float = published.PIE_FRACTION,
) -> Pies:
    """PIEs of ``method``: read ``probs.npy`` (memory-mapped, :func:`prunecxr.artifacts.read_store`),
    average seeds, correlate, flag.

    On the sparsity axis the levels compared are ``dense_sparsity`` and ``pie_sparsity``; on
    another axis (notebook 08's methods) the dense level and the store's most compressed level
    (:meth:`prunecxr.levels.Axis.pie_level`).
    """
    probs, meta = artifacts.read_store(run, method, mmap=True)
    classes = list(meta["classes"])
    labels = artifacts.read_labels(run, classes)
    return analyze_arrays(
        method,
        probs,
        labels,
        levels=meta["levels"],
        level_name=meta["level_name"],
        classes=classes,
        dense_sparsity=dense_sparsity,
        pie_sparsity=pie_sparsity,
        fraction=fraction,
        store=str(paths.run_paths(run).probs(method)),
        labels_name="labels.parquet",
    )


def analyze_arrays(
    method: str,
    probs: np.ndarray,
    labels: pd.DataFrame,
    *,
    levels: Sequence[float],
    level_name: str,
    classes: list[str],
    dense_sparsity: float = 0.0,
    pie_sparsity: float = published.PIE_SPARSITY,
    fraction: float = published.PIE_FRACTION,
    store: str = "probs",
    labels_name: str = "the labels",
) -> Pies:
    """:func:`analyze` on arrays: ``probs [S, K, N, C]`` (levels ``levels`` of axis
    ``level_name``, classes ``classes``) and a ``labels.parquet``-like table whose test rows
    are the N images (``store`` and ``labels_name`` name them in messages)."""
    axis = level_axis(level_name)
    if axis.name == "sparsity":
        dense_level, pie_level, names = (
            float(dense_sparsity),
            float(pie_sparsity),
            ("dense_sparsity", "pie_sparsity"),
        )
    else:
        dense_level, pie_level = axis.dense, axis.pie_level(levels)
        names = (f"dense level ({axis.name})", f"pie level ({axis.name}, the most compressed)")
    if np.isclose(dense_level, pie_level, atol=published.SPARSITY_ATOL):
        raise ValueError(
            f"{names[0]} and {names[1]} are both {pie_level!r}; choose two different ones"
        )
    test = labels[(labels["split"] == "test").to_numpy()].reset_index(drop=True)
    if probs.shape[2] != len(test):
        raise ValueError(
            f"{store} holds {probs.shape[2]} test images; {labels_name} has {len(test)} (split == 'test')"
        )
    dense = mean_probs(probs, levels, dense_level, name=names[0])
    pruned = mean_probs(probs, levels, pie_level, name=names[1])
    table = pie_table(dense, pruned, test["image_id"], fraction=fraction)
    columns = pie_columns(axis.name)
    table[columns[3]] = dense_level
    table[columns[4]] = pie_level
    table["pie_fraction"] = float(fraction)
    if not table["is_pie"].any():
        warnings.warn(
            f"int({fraction} × {len(table)} test images) = 0: no PIE; the ratios of Fig. 5 are undefined",
            stacklevel=2,
        )
    counts = forgetting.label_counts(labels, classes)
    ratios = class_ratios(test, table["is_pie"], classes, train_counts=counts["train_count"])
    bins = findings_ratios(test, table["is_pie"], classes)
    return Pies(
        method,
        dense_level,
        pie_level,
        float(fraction),
        table[columns],
        ratios,
        bins,
        dense,
        pruned,
        classes,
        test,
        axis.name,
    )


def run_stage(
    run: str,
    *,
    dense_sparsity: float = 0.0,
    pie_sparsity: float = published.PIE_SPARSITY,
    fraction: float = published.PIE_FRACTION,
) -> dict[str, Pies]:
    """Analyze every method present in the run and write its ``pies.parquet``."""
    results = {}
    for method in artifacts.methods_present(run):
        results[method] = analyze(
            run, method, dense_sparsity=dense_sparsity, pie_sparsity=pie_sparsity, fraction=fraction
        )
        artifacts.write_analysis(run, method, "pies", results[method].table)
    return results


def overview(results: dict[str, Pies]) -> pd.DataFrame:
    """One row per method: PIE count, the rarest classes' ratio range and the 4+ findings ratio."""
    rows = []
    for method, res in results.items():
        lo, hi, rare = rarest_ratio_range(res.class_ratios)
        four = res.findings_ratios.set_index("n_findings").loc[FINDING_BINS[-1], "ratio"]
        rows.append(
            {
                "method": method,
                "n_test": len(res.table),
                "n_pies": int(res.table["is_pie"].sum()),
                "rarest_classes": ", ".join(rare),
                "rarest_ratio_min": lo,
                "rarest_ratio_max": hi,
                "ratio_4plus_findings": four,
                "spearman_median": float(np.nanmedian(res.table["spearman"]))
                if len(res.table)
                else np.nan,
            }
        )
    return pd.DataFrame(rows)


# -- gallery -------------------------------------------------------------------------------
def gallery_table(result: Pies, *, size: int, top: int = GALLERY_TOP) -> pd.DataFrame:
    """The ``size`` PIEs with the lowest correlation: labels and both models' top predictions.

    Returns one row per PIE (lowest Spearman first, ties by ``image_id``): ``position`` (row
    in the test split), ``image_id``, ``spearman``, ``labels`` (its positive classes),
    ``dense_top`` and ``pruned_top`` (the ``top`` classes with the highest mean probability,
    as text ``class (p)``).
    """
    if size < 0:
        raise ValueError(f"gallery_size must be >= 0; got {size!r}")
    table = result.table.assign(position=np.arange(len(result.table)))
    pies = table[table["is_pie"]].assign(_undefined=lambda d: d["spearman"].isna())
    pies = pies.sort_values(["_undefined", "spearman", "image_id"], kind="mergesort").head(size)
    classes = result.classes

    def top_text(probs: np.ndarray) -> str:
        order = np.lexsort((np.arange(len(classes)), -probs))[:top]
        return "; ".join(f"{classes[j]} ({fmt.num(probs[j])})" for j in order)

    rows = []
    for pos, image_id, rho in zip(pies["position"], pies["image_id"], pies["spearman"]):
        positive = [c for c in classes if int(result.test.loc[pos, c]) == 1]
        labels = ", ".join(positive) if positive else "(none)"
        rows.append(
            {
                "position": int(pos),
                "image_id": image_id,
                "spearman": rho,
                "labels": labels,
                "dense_top": top_text(result.dense[pos]),
                "pruned_top": top_text(result.pruned[pos]),
            }
        )
    return pd.DataFrame(
        rows, columns=["position", "image_id", "spearman", "labels", "dense_top", "pruned_top"]
    )


def gallery_images(run: str, image_ids) -> list[np.ndarray]:
    """The test images ``image_ids``, uint8 ``[H, W]`` each, from :func:`prunecxr.data.open_split`.

    Looked up by id (never by position), so a gallery cannot show the wrong image.
    """
    split = data.open_split(run, "test")
    where = {str(i): k for k, i in enumerate(split.image_ids)}
    missing = [i for i in map(str, image_ids) if i not in where]
    if missing:
        raise ValueError(f"images {missing[:3]} are not in the test split of run {run!r}")
    return [np.asarray(split.images[where[i]]) for i in map(str, image_ids)]


def gallery_html(
    gallery: pd.DataFrame,
    *,
    run: str,
    pie_sparsity: float,
    images: list[np.ndarray] | None = None,
    level_name: str = "sparsity",
) -> str:
    """HTML cards of the gallery's PIEs: id, Spearman, labels, both models' top predictions.

    ``images`` (one uint8 ``[H, W]`` per gallery row, :func:`gallery_images`) are embedded as
    base64 PNGs (:func:`prunecxr.figures.png_base64`) only when given; the notebook passes them only when ``embed_images`` resolves
    to true (:func:`prunecxr.config.resolve_embed`).
    """
    if images is not None and len(images) != len(gallery):
        raise ValueError(f"{len(images)} images for {len(gallery)} gallery rows")
    notice = config.PHANTOM_NOTICE if config.is_synthetic(run) else ""
    axis = levels.axis(level_name)
    compressed = (
        f"{fmt.pct(pie_sparsity)} sparse"
        if axis.name == "sparsity"
        else (
            axis.format(pie_sparsity)
            if axis.name == "bits"
            else f"{axis.format(pie_sparsity)} {axis.name.replace('_', ' ')}"
        )
    )
    cards = []
    for k, row in enumerate(gallery.itertuples(index=False)):
        img = ""
        if images is not None:
            src = figures.png_base64(images[k])
            img = (
                f'<img src="data:image/png;base64,{src}" alt="{html.escape(str(row.image_id))}" '
                'style="width:160px;height:160px;image-rendering:pixelated;display:block"/>'
            )
        cards.append(
            '<div style="border:1px solid #ccc;padding:6px;margin:4px;width:220px;font-size:12px">'
            f"{img}<b>{html.escape(str(row.image_id))}</b> — Spearman {html.escape(fmt.num(row.spearman))}<br>"
            f"<i>labels</i>: {html.escape(row.labels)}<br>"
            f"<i>dense</i>: {html.escape(row.dense_top)}<br>"
            f"<i>{html.escape(compressed)}</i>: {html.escape(row.pruned_top)}</div>"
        )
    head = f'<p style="color:#b00020"><b>{html.escape(notice)}</b></p>' if notice else ""
    if images is None:
        head += "<p>Images not embedded (embed_images); labels and predictions only.</p>"
    return head + '<div style="display:flex;flex-wrap:wrap">' + "".join(cards) + "</div>"


def gallery(run: str, result: Pies, *, size: int, embed: bool):
    """The gallery as an IPython HTML display: :func:`gallery_table` cards, images only if ``embed``."""
    from IPython.display import HTML

    table = gallery_table(result, size=size)
    images = gallery_images(run, table["image_id"]) if embed else None
    return HTML(
        gallery_html(
            table,
            run=run,
            pie_sparsity=result.pie_sparsity,
            images=images,
            level_name=result.level_name,
        )
    )


def save_method_figures(run: str, results: dict[str, Pies], *, skip: str) -> pd.DataFrame:
    """Fig. 5 for every method but ``skip`` as ``fig5_pies_<method>``; the files written."""
    rows = []
    for method, res in results.items():
        if method == skip:
            continue
        fig, data = figure_5(res)
        saved = figures.save_figure(fig, f"fig5_pies_{method}", run=run, data=data)
        rows.append(
            {
                "method": method,
                "figure": saved.html.stem,
                "html": str(saved.html),
                "png": str(saved.png) if saved.png else "",
            }
        )
    return pd.DataFrame(rows, columns=["method", "figure", "html", "png"])
