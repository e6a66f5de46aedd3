"""prunecxr.levels (the compression axes) and the analyses of notebooks 03-06 on any axis:
a bits store is analysed exactly like a sparsity store (Eq. 1, Fig. 1's statistics, FCD, PIEs)."""

import numpy as np
import pandas as pd
import pytest

from prunecxr import artifacts, config, levels, paths
from prunecxr.analysis import cooccurrence, forgetting, overall, pies


# -- the axes --------------------------------------------------------------------------------
def test_axes_dense_levels_and_directions():
    s, b, c = levels.AXES["sparsity"], levels.AXES["bits"], levels.AXES["channel_fraction"]
    assert (s.dense, b.dense, c.dense) == (0.0, 32.0, 0.0)
    assert s.more_compressed(0.5, 0.2) and b.more_compressed(4, 8) and not b.more_compressed(8, 4)
    assert b.order([4, 32, 8, 2]) == [32.0, 8.0, 4.0, 2.0]
    assert s.order([0.9, 0.0, 0.5]) == [0.0, 0.5, 0.9]
    assert b.check_levels([32, 8, 6, 5, 4, 3, 2], dense_first=True) == [32, 8, 6, 5, 4, 3, 2]
    assert (b.format(4), s.format(0.9), c.format(0.5)) == ("4 bits", "90%", "50%")
    assert b.extreme([32, 8, 2]) == 2 and s.extreme([0.0, 0.5]) == 0.95
    assert b.pie_level([32, 8, 4]) == 4 and s.pie_level([0.0, 0.9], 0.9) == 0.9


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("bits", [32, 4, 8], r"strictly decreasing.*\[2\] = 8.0 follows 4.0"),
        ("bits", [32, 4.5], "whole number"),
        ("bits", [33], r"in \[1, 32\]"),
        ("sparsity", [0.0, 0.5, 0.5], "strictly increasing"),
        ("sparsity", [0.1, 0.5], "must start with 0.0"),
        ("channel_fraction", [], "is empty"),
    ],
)
def test_bad_levels_are_named(name, bad, match):
    with pytest.raises(ValueError, match=match):
        levels.AXES[name].check_levels(bad, dense_first=True)


def test_axis_of_needs_exactly_one_level_column():
    assert levels.axis_of(["seed", "bits", "ap"]).name == "bits"
    with pytest.raises(ValueError, match="found none"):
        levels.axis_of(["seed", "ap"])
    with pytest.raises(ValueError, match=r"found \['sparsity', 'bits'\]"):
        levels.axis_of(["sparsity", "bits"])
    with pytest.raises(ValueError, match="unknown level name 'volts'"):
        levels.axis("volts")


# -- a bits store is analysed like a sparsity store -------------------------------------------
BITS = [32, 8, 4, 2]
SPARS = [0.0, 0.5, 0.9, 0.95]
HAND = {  # seed AP at each level (dense first)
    "A": [[0.8, 0.8, 0.6, 0.4], [0.5, 0.45, 0.3, 0.25], [1.0, 0.9, 0.9, 0.1]],
    "B": [[0.4, 0.4, 0.39, 0.38], [0.2, 0.2, 0.2, 0.2], [0.5, 0.6, 0.45, 0.45]],
}


def metrics_frame(level_name, values, order=None):
    rows = []
    for cls, per_seed in HAND.items():
        for seed, aps in enumerate(per_seed):
            for lv, ap in zip(values, aps):
                rows.append(
                    {"seed": seed, level_name: lv, "class": cls, "ap": ap, "auroc": 0.5, "n_pos": 1}
                )
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=0) if order == "shuffled" else frame


def test_forgettability_on_bits_equals_the_same_numbers_on_sparsity():
    """The same APs on the bits axis (32, 8, 4, 2) and on the sparsity axis (0, .5, .9, .95):
    the same curves, level for level; row order of the metrics does not matter."""
    on_bits = forgetting.forgettability_curves(
        metrics_frame("bits", BITS, "shuffled"), classes=["A", "B"]
    )
    on_spars = forgetting.forgettability_curves(
        metrics_frame("sparsity", SPARS), classes=["A", "B"]
    )
    assert list(on_bits.columns) == ["class", "bits", "median_rel_ap_change", "n_seeds"]
    assert on_bits["bits"].tolist() == BITS * 2  # compression order: dense first
    np.testing.assert_array_equal(on_bits["median_rel_ap_change"], on_spars["median_rel_ap_change"])
    wide = forgetting.curve_matrix(on_bits, classes=["A", "B"])
    assert list(wide.columns) == BITS
    drop = forgetting.first_drop(on_bits, threshold=0.2, classes=["A", "B"])
    drop_s = forgetting.first_drop(on_spars, threshold=0.2, classes=["A", "B"])
    # A first drops at the third level on both axes: 4 bits, 90% sparsity
    assert drop["A"] == 4 and drop_s["A"] == 0.9 and np.isnan(drop["B"]) and np.isnan(drop_s["B"])


def test_class_summary_on_bits_uses_the_most_compressed_level():
    curves = forgetting.forgettability_curves(metrics_frame("bits", BITS), classes=["A", "B"])
    labels = pd.DataFrame(
        {
            "image_id": list("abcd"),
            "patient_id": list("abcd"),
            "split": ["train", "train", "test", "test"],
            "A": [1, 1, 1, 0],
            "B": [0, 1, 0, 1],
        }
    )
    summary = forgetting.class_summary(curves, labels, drop_threshold=0.2)
    assert list(summary.columns) == forgetting.summary_columns(levels.AXES["bits"])
    assert summary["extreme_level"].tolist() == [2.0, 2.0]
    a = np.median([(0.4 - 0.8) / 0.8, (0.25 - 0.5) / 0.5, (0.1 - 1.0) / 1.0])
    assert summary.loc[0, "rel_change_at_extreme"] == pytest.approx(a)
    corr = forgetting.frequency_correlations(summary)
    assert list(corr["y"]) == ["first_drop", "rel_change_at_extreme"]


def test_fig1_statistics_on_any_axis():
    """Fig. 1's table: the dense level is the baseline and levels run in compression order."""
    rng = np.random.default_rng(0)
    means = {
        32: 0.6 + rng.normal(0, 0.01, 5),
        8: 0.6 + rng.normal(0, 0.01, 5),
        2: 0.3 + rng.normal(0, 0.01, 5),
    }
    rows = [
        {"seed": i, "bits": b, "class": c, "ap": m + d, "auroc": 0.5, "n_pos": 3}
        for b, ms in means.items()
        for i, m in enumerate(ms)
        for c, d in (("A", -0.01), ("B", 0.01))
    ]
    table = overall.overall_table(pd.DataFrame(rows[::-1]))
    assert list(table.columns) == overall.table_columns("bits")
    assert table["bits"].tolist() == [32.0, 8.0, 2.0]
    assert np.isnan(table["p_value"].iloc[0]) and not table["significant_drop"].iloc[1]
    assert table["significant_drop"].iloc[2] and overall.first_significant_drop(table) == 2.0
    with pytest.raises(ValueError, match="no bits 32 bits"):
        overall.overall_table(pd.DataFrame([r for r in rows if r["bits"] != 32]))
    sparsity_table = overall.overall_table(
        pd.DataFrame([{**r, "sparsity": {32: 0.0, 8: 0.5, 2: 0.9}[r["bits"]]} for r in rows]).drop(
            columns="bits"
        )
    )
    fig, data = overall.figure_1({"weight_quant": table, "global_l1": sparsity_table}, None)
    assert {"bits", "sparsity"} <= set(data.columns) and len(fig.data) == 6
    long = overall.overall_long({"weight_quant": table, "global_l1": sparsity_table})
    assert list(long.columns[:3]) == ["method", "level_name", "level"]


def write_bits_run(run: str):
    """A run with a weight_quant store: labels, meta.json, probs.npy, metrics.parquet."""
    rng = np.random.default_rng(3)
    classes = ["No Finding", "A", "B", "C", "D"]
    n_test = 40
    n = n_test + 30
    y = (rng.random((n, len(classes))) < [0.3, 0.4, 0.3, 0.15, 0.08]).astype(np.int8)
    y[30:35, :] = 1  # every class has test positives
    labels = pd.DataFrame(
        {
            "image_id": [f"img{i:03d}" for i in range(n)],
            "patient_id": "p",
            "split": ["train"] * 30 + ["test"] * n_test,
        }
    )
    for j, c in enumerate(classes):
        labels[c] = y[:, j]
    rp = paths.run_paths(run)
    artifacts.write_parquet(rp.labels, labels)
    config.record_data(run, {"dataset": "nih-phantom", "synthetic": True})
    dense = rng.random((3, 1, n_test, len(classes)))
    noise = np.array([0.0, 0.05, 0.3, 0.8])[None, :, None, None]
    probs = np.clip(dense + noise * rng.normal(size=(3, 4, n_test, len(classes))), 0, 1).astype(
        np.float32
    )
    artifacts.write_store(
        run,
        "weight_quant",
        seeds=[0, 1, 2],
        levels=BITS,
        level_name="bits",
        classes=classes,
        n_test=n_test,
        blocks=list(probs),
    )
    from prunecxr.compress import evaluate

    evaluate.write_method_metrics(run, "weight_quant")
    return labels


def test_analyses_of_notebooks_04_to_06_on_a_bits_store():
    write_bits_run("q")
    meta = artifacts.read_meta("q", "weight_quant")
    assert (meta["level_name"], meta["levels"], meta["recover"]) == (
        "bits",
        [32.0, 8.0, 4.0, 2.0],
        "none",
    )
    assert "sparsities" not in meta
    metrics = artifacts.read_metrics("q", "weight_quant")
    assert list(metrics.columns) == list(artifacts.metrics_columns("bits"))
    result = forgetting.run_stage("q")["weight_quant"]
    assert result.curves["bits"].tolist()[:4] == BITS
    pairs = cooccurrence.run_stage("q")["weight_quant"].pairs
    assert len(pairs) == 10 and pairs["fcd"].notna().all()
    found = pies.run_stage("q", fraction=0.1)["weight_quant"]
    table = pd.read_parquet(paths.run_paths("q").pies("weight_quant"))
    assert list(table.columns) == pies.pie_columns("bits")
    assert (table["dense_bits"].iloc[0], table["pie_bits"].iloc[0]) == (32.0, 2.0)
    assert table["is_pie"].sum() == 4 and found.level_name == "bits"
    fig, _ = pies.figure_5(found)
    assert "32 bits vs 2 bits" in fig.layout.title.text


def test_paper_table_of_a_bits_store_says_it_is_another_axis():
    from prunecxr import paper

    write_bits_run("qp")
    forgetting.run_stage("qp")
    cooccurrence.run_stage("qp")
    pies.run_stage("qp", fraction=0.1)
    values = paper.comparison_values("qp", method="weight_quant").set_index("key")
    assert np.isnan(values.loc["first_significant_drop", "this_run_value"])
    assert "compresses along bits" in values.loc["first_significant_drop", "note"]
    assert np.isfinite(values.loc["rho_freq_change_095", "this_run_value"])
    assert "most compressed level" in values.loc["rho_freq_change_095", "note"]
