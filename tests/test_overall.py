"""Fig. 1's statistics (prunecxr.analysis.overall): class-mean AP over seeds, Welch's t-test,
Holm's correction, the first significant drop, the magnitude histogram and the figure."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from prunecxr import artifacts, paths
from prunecxr.analysis import overall
from prunecxr.metrics import MissingPositivesWarning


def metrics_from_means(means: dict[float, list[float]]) -> pd.DataFrame:
    """Two classes whose APs average to the given per-seed means."""
    rows = []
    for sparsity, values in means.items():
        for seed, m in enumerate(values):
            rows += [
                {
                    "seed": seed,
                    "sparsity": sparsity,
                    "class": "A",
                    "ap": m - 0.01,
                    "auroc": 0.5,
                    "n_pos": 3,
                },
                {
                    "seed": seed,
                    "sparsity": sparsity,
                    "class": "B",
                    "ap": m + 0.01,
                    "auroc": 0.5,
                    "n_pos": 3,
                },
            ]
    return pd.DataFrame(rows)


# -- the seeds' class-mean AP against the dense models -------------------------------------
def test_overall_table_hand_computed():
    dense = [0.50, 0.51, 0.52, 0.53, 0.54]
    means = {
        0.0: dense,
        0.5: [0.50, 0.52, 0.51, 0.54, 0.53],  # the same values: no drop
        0.9: [0.30, 0.31, 0.32, 0.33, 0.34],  # a clear drop
        0.95: [0.60, 0.61, 0.62, 0.63, 0.64],  # a clear rise: not a drop
    }
    table = overall.overall_table(metrics_from_means(means))
    assert list(table.columns) == overall.OVERALL_COLUMNS
    assert table["sparsity"].tolist() == [0.0, 0.5, 0.9, 0.95]
    row = table.set_index("sparsity").loc[0.9]
    assert row["mean_ap_median"] == pytest.approx(0.32)
    assert row["mean_ap_q25"] == pytest.approx(0.31) and row["mean_ap_q75"] == pytest.approx(0.33)
    ref = scipy.stats.ttest_ind(means[0.9], dense, equal_var=False)
    assert row["welch_t"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(
        ref.pvalue
    )
    assert np.isnan(table["p_value"].iloc[0])
    assert table["significant_drop"].tolist() == [False, False, True, False]
    assert overall.first_significant_drop(table) == 0.9
    assert overall.first_significant_drop(table, holm=True) == 0.9


def test_seed_mean_ap_leaves_out_undefined_classes():
    metrics = metrics_from_means({0.0: [0.5, 0.6], 0.5: [0.4, 0.45]})
    metrics.loc[metrics["class"] == "B", "ap"] = np.nan
    with pytest.warns(MissingPositivesWarning, match=r"\['B'\].*left out"):
        per_seed = overall.seed_mean_ap(metrics)
    expected = (
        metrics[metrics["class"] == "A"].groupby(["seed", "sparsity"])["ap"].mean().to_numpy()
    )
    np.testing.assert_allclose(per_seed["mean_ap"].to_numpy(), expected)


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.0001, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(overall.holm(p), multipletests(p, method="holm")[1])
    with_nan = overall.holm(np.array([np.nan, 0.01, 0.02]))
    assert np.isnan(with_nan[0]) and with_nan[1:].tolist() == pytest.approx([0.02, 0.02])


def test_holm_can_move_the_first_drop_later():
    dense = np.linspace(0.45, 0.55, 30)
    se = np.sqrt(2 * dense.var(ddof=1) / 30)  # equal variances: Welch's df = 58
    shift = scipy.stats.t.isf(0.0007 / 2, 58) * se  # two-sided P = 0.0007 at 0.7
    means = {
        0.0: list(dense),
        0.6: list(dense),
        0.7: list(dense - shift),
        0.8: list(dense - 3 * shift),
    }
    table = overall.overall_table(metrics_from_means(means)).set_index("sparsity")
    assert table.loc[0.7, "p_value"] == pytest.approx(0.0007, rel=1e-6)
    assert table.loc[0.7, "p_holm"] == pytest.approx(2 * 0.0007, rel=1e-6)  # 2nd smallest of 3
    assert overall.first_significant_drop(table.reset_index()) == 0.7
    assert overall.first_significant_drop(table.reset_index(), holm=True) == 0.8


def test_first_significant_drop_is_nan_without_a_drop():
    table = overall.overall_table(
        metrics_from_means({0.0: [0.5, 0.6, 0.55], 0.5: [0.5, 0.6, 0.56]})
    )
    assert np.isnan(overall.first_significant_drop(table))


def test_overall_table_needs_the_dense_models():
    with pytest.raises(ValueError, match="no sparsity 0"):
        overall.overall_table(metrics_from_means({0.5: [0.5, 0.6]}))


def test_overall_tables_read_each_methods_metrics_paper_first():
    table = metrics_from_means({0.0: [0.5, 0.51, 0.52], 0.9: [0.3, 0.31, 0.32]})
    for method in ("random", "global_l1"):
        artifacts.write_metrics("r", method, table)
    tables = overall.overall_tables("r", ["random", "global_l1"])
    assert list(tables) == ["global_l1", "random"]
    long = overall.overall_long(tables)
    assert long.columns[0] == "method" and len(long) == 4
    shown = overall.summary_display(tables)
    assert shown["first significant drop"].tolist() == ["90%", "90%"]
    with pytest.raises(FileNotFoundError, match="03_prune"):
        overall.overall_tables("r", ["layerwise_l1"])
    assert paths.run_paths("r").metrics("random").exists()


# -- the dense weights' magnitudes -----------------------------------------------------------
def test_magnitude_summary_counts_exactly():
    weights = np.array([0.0, 0.001, -0.005, 0.02, 0.5, -2.0, 0.009, 1e-9], dtype=np.float32)
    summary = overall.magnitude_summary([np.abs(weights), np.abs(weights)])
    assert (summary.n_models, summary.n_weights, summary.n_zero) == (2, 16, 2)
    assert summary.fraction_below == pytest.approx(10 / 16)  # 0, 0.001, 0.005, 0.009, 1e-9
    assert summary.histogram["count"].sum() == 14
    assert "62.5% of the 8 pruned-set weights per model" in overall.magnitude_sentence(summary)


def test_no_dense_models_give_no_magnitude_panel():
    assert overall.magnitude_summary(iter([])) is None
    assert "imported predictions" in overall.magnitude_sentence(None)


def test_figure_1_draws_every_method_paper_first():
    table = overall.overall_table(
        metrics_from_means({0.0: [0.5, 0.51, 0.52], 0.9: [0.3, 0.31, 0.32]})
    )
    rng = np.random.default_rng(0)
    mags = overall.magnitude_summary([np.abs(rng.normal(0, 0.02, 1000)).astype(np.float32)])
    fig, data = overall.figure_1({"random": table, "global_l1": table}, mags)
    assert fig.layout.annotations[0].text.startswith("global_l1: class-mean AP")
    assert set(data["panel"]) == {"mean_ap", "weight_magnitude"}
    assert data.loc[data["panel"] == "mean_ap", "method"].unique().tolist() == [
        "global_l1",
        "random",
    ]
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "first significant drop (Welch, P < 0.001): 90%" in texts
    fig, data = overall.figure_1({"global_l1": table}, None)
    assert set(data["panel"]) == {"mean_ap"}


# -- torch stays out of the analysis stages ---------------------------------------------------
def test_the_analysis_stages_read_the_sweep_without_importing_torch():
    """Notebooks 04-07 and the paper table read the sweep's files and Fig. 1's statistics;
    importing torch would cost each 4-7 s."""
    code = (
        "import sys\n"
        "import prunecxr.analysis, prunecxr.analysis.overall, prunecxr.artifacts, prunecxr.paper, "
        "prunecxr.reader_study\n"
        "assert prunecxr.analysis.overall.overall_table\n"
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not leaked, f'torch was imported: {leaked[:5]}'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
