"""prunecxr.analyze: the analyses on arrays equal those notebooks 03-06 compute from a run's files."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import prunecxr
from prunecxr import artifacts
from prunecxr.analysis import cooccurrence, forgetting, overall, pies
from prunecxr.compress import interchange

CLASSES = ["a", "b", "c", "d"]
LEVELS = [0.0, 0.5, 0.8, 0.9]


def population(seed=0, n=120, n_train=300):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(np.int8)
    y[0] = 1
    train = (rng.random((n_train, len(CLASSES))) < np.linspace(0.05, 0.5, len(CLASSES))).astype(
        np.int8
    )
    base = np.clip(0.6 * y + 0.5 * rng.random(y.shape), 0, 1)
    probs = np.stack(
        [
            np.stack(
                [np.clip(base + rng.normal(0, 0.02 + 0.3 * lv, y.shape), 0, 1) for lv in LEVELS]
            )
            for _ in range(3)
        ]
    ).astype(np.float32)
    return probs, y, train


def test_analyze_equals_the_notebooks_on_the_same_predictions(tmp_path):
    probs, y, train = population()
    ids = [f"img-{i}" for i in range(len(y))]
    result = prunecxr.analyze(
        probs, y, LEVELS, CLASSES, train_labels=train, image_ids=ids, seeds=[0, 1, 2]
    )

    table = prunecxr.api.label_table(y, CLASSES, train_labels=train, image_ids=ids)
    table.to_parquet(tmp_path / "labels.parquet", index=False)
    rows = [
        (s, lv, ids[n], c, float(probs[s, k, n, j]))
        for s in range(3)
        for k, lv in enumerate(LEVELS)
        for n in range(len(ids))
        for j, c in enumerate(CLASSES)
    ]
    pd.DataFrame(rows, columns=list(interchange.PREDICTION_COLUMNS)).to_parquet(
        tmp_path / "p.parquet", index=False
    )
    interchange.import_predictions(
        "api", tmp_path / "p.parquet", labels=tmp_path / "labels.parquet", method="yours"
    )

    pd.testing.assert_frame_equal(result.metrics, artifacts.read_metrics("api", "yours"))
    pd.testing.assert_frame_equal(result.overall, overall.overall_tables("api", ["yours"])["yours"])
    notebook = forgetting.analyze("api", "yours")
    pd.testing.assert_frame_equal(result.curves, notebook.curves)
    pd.testing.assert_frame_equal(result.class_summary, notebook.summary)
    pd.testing.assert_frame_equal(result.frequency_correlations, notebook.correlations)
    forgetting.write("api", notebook)
    pairs = cooccurrence.analyze("api", "yours")
    pd.testing.assert_frame_equal(result.pairs, pairs.pairs)
    pd.testing.assert_frame_equal(result.eq2, pairs.eq2.coefficients)
    exemplars = pies.analyze("api", "yours")
    pd.testing.assert_frame_equal(result.pies, exemplars.table)
    pd.testing.assert_frame_equal(result.pie_class_ratios, exemplars.class_ratios)
    assert result.first_drop == overall.first_significant_drop(result.overall)
    assert (result.class_summary["train_count"] == train.sum(axis=0)).all()
    assert result.pies["is_pie"].sum() == int(0.05 * len(y))


def test_analyze_on_another_axis_and_its_refusals():
    probs, y, _ = population(1)
    bits = [32, 8, 6, 4]
    result = prunecxr.analyze(probs, y, bits, CLASSES, level_name="bits")
    assert (
        "bits" in result.curves.columns and "rel_change_at_extreme" in result.class_summary.columns
    )
    assert result.pies["pie_bits"].unique().tolist() == [4.0]
    assert (
        result.frequency_correlations["pearson_r"].isna().all()
    )  # no training labels: no frequencies
    other = prunecxr.analyze(
        probs, y, [0.0, 0.5, 0.8, 0.95], CLASSES
    )  # 0.9 absent: the most pruned level
    assert other.pies["pie_sparsity"].unique().tolist() == [0.95]
    assert other.class_summary["rel_change_at_095"].notna().all()
    with pytest.raises(ValueError, match=r"levels must start with 0.0 \(the dense model"):
        prunecxr.analyze(probs, y, [0.5, 0.6, 0.8, 0.9], CLASSES)
    with pytest.raises(
        ValueError, match=r"probs has shape \(3, 4, 120, 4\); expected \[3 seeds, 3 levels"
    ):
        prunecxr.analyze(probs, y, [0.0, 0.5, 0.9], CLASSES)
    bad = probs.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"probs\[1, 2, 3, 0\] is nan"):
        prunecxr.analyze(bad, y, LEVELS, CLASSES)
    with pytest.raises(ValueError, match=r"labels\[0, 1\] is 2"):
        prunecxr.analyze(
            probs, np.where(np.arange(y.size).reshape(y.shape) == 1, 2, y), LEVELS, CLASSES
        )


def test_analyze_imports_no_torch():
    code = (
        "import sys, numpy as np, prunecxr; rng = np.random.default_rng(0); "
        "y = (rng.random((40, 2)) < .5).astype(int); y[0] = 1; "
        "p = rng.random((2, 2, 40, 2)); prunecxr.analyze(p, y, [0, .9], ['a', 'b']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
