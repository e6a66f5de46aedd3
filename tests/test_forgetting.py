"""prunecxr.analysis.forgetting: Eq. 1, the class summary and Figs. 2-3, on hand-built cases."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from prunecxr import analysis, artifacts, config, paths, stats
from prunecxr.analysis import forgetting

SETTINGS = settings(max_examples=30, deadline=None)


def metrics_frame(ap: dict, sparsities, seeds) -> pd.DataFrame:
    """Long-format metrics from ``{class: [[AP per sparsity] per seed]}``."""
    rows = []
    for cls, per_seed in ap.items():
        for seed, values in zip(seeds, per_seed):
            for sp, v in zip(sparsities, values):
                rows.append(
                    {"seed": seed, "sparsity": sp, "class": cls, "ap": v, "auroc": 0.5, "n_pos": 1}
                )
    return pd.DataFrame(rows)


def labels_frame(classes, train, test) -> pd.DataFrame:
    """Labels with ``train[c]`` positive training and ``test[c]`` positive test images (20 of each split)."""
    n = 20
    rows = {
        "image_id": [f"i{j:03d}" for j in range(2 * n)],
        "patient_id": [f"p{j:03d}" for j in range(2 * n)],
        "split": ["train"] * n + ["test"] * n,
    }
    for c in classes:
        col = np.zeros(2 * n, dtype=np.int8)
        col[: train[c]] = 1
        col[n : n + test[c]] = 1
        rows[c] = col
    return pd.DataFrame(rows)


SPARS = [0.0, 0.5, 0.9, 0.95]
SEEDS = [0, 1, 2]
HAND = {
    # seed AP at sparsities 0, .5, .9, .95
    "A": [[0.8, 0.8, 0.6, 0.4], [0.5, 0.45, 0.3, 0.25], [1.0, 0.9, 0.9, 0.1]],
    "B": [[0.4, 0.4, 0.39, 0.38], [0.2, 0.2, 0.2, 0.2], [0.5, 0.6, 0.45, 0.45]],
}


def test_relative_change_and_median_by_hand():
    curves = forgetting.forgettability_curves(metrics_frame(HAND, SPARS, SEEDS), classes=["A", "B"])
    assert list(curves.columns) == forgetting.CURVE_COLUMNS
    a = curves[curves["class"] == "A"].set_index("sparsity")["median_rel_ap_change"]
    # A at 0.5: seeds -> 0, -0.1, -0.1 -> median -0.1 ; at 0.9: -0.25, -0.4, -0.1 -> -0.25
    # at 0.95: -0.5, -0.5, -0.9 -> -0.5
    np.testing.assert_allclose(a.to_numpy(), [0.0, -0.1, -0.25, -0.5])
    b = curves[curves["class"] == "B"].set_index("sparsity")["median_rel_ap_change"]
    # B at 0.9: -0.025, 0, -0.1 -> -0.025 ; at 0.95: -0.05, 0, -0.1 -> -0.05
    np.testing.assert_allclose(b.to_numpy(), [0.0, 0.0, -0.025, -0.05])
    assert (curves["n_seeds"] == 3).all()


def test_first_drop_and_change_at_95_by_hand():
    curves = forgetting.forgettability_curves(metrics_frame(HAND, SPARS, SEEDS))
    drop = forgetting.first_drop(curves, threshold=0.2)
    assert drop["A"] == 0.9  # -0.25 < -0.2 first at 0.9
    assert np.isnan(drop["B"])  # never: NaN, no crash
    assert forgetting.first_drop(curves, threshold=0.05)["A"] == 0.5
    # strictly below: A reaches exactly -0.5 at 0.95, which is not below -0.5
    assert np.isnan(forgetting.first_drop(curves, threshold=0.5)["A"])
    np.testing.assert_allclose(forgetting.change_at(curves, 0.95).to_numpy(), [-0.5, -0.05])
    with pytest.raises(ValueError, match="drop_threshold"):
        forgetting.first_drop(curves, threshold=20)


def test_zero_or_nan_dense_ap_gives_nan_for_that_seed():
    ap = {"A": [[0.0, 0.1, 0.1, 0.1], [np.nan, 0.3, 0.2, 0.2], [0.5, 0.25, 0.5, 0.5]]}
    rel = forgetting.relative_ap_change(metrics_frame(ap, SPARS, SEEDS))
    assert rel.loc[rel["seed"].isin([0, 1]), "rel_ap_change"].isna().all()
    curves = forgetting.forgettability_curves(metrics_frame(ap, SPARS, SEEDS))
    # nanmedian over the one seed left
    np.testing.assert_allclose(curves["median_rel_ap_change"], [0.0, -0.5, 0.0, 0.0])
    assert (curves["n_seeds"] == 1).all()


def test_class_without_positive_is_excluded_with_warning():
    ap = dict(HAND, C=[[np.nan] * 4] * 3)
    with pytest.warns(UserWarning, match=r"\['C'\] have no positive test image"):
        curves = forgetting.forgettability_curves(
            metrics_frame(ap, SPARS, SEEDS), classes=["A", "B", "C"]
        )
    assert set(curves["class"]) == {"A", "B"}


def test_metrics_errors_name_the_problem():
    m = metrics_frame(HAND, SPARS, SEEDS)
    with pytest.raises(ValueError, match=r"no sparsity-0 \(dense\) rows for seeds \[1\]"):
        forgetting.relative_ap_change(m[~((m["seed"] == 1) & (m["sparsity"] == 0))])
    with pytest.raises(ValueError, match="more than one row for seed=0"):
        forgetting.relative_ap_change(pd.concat([m, m.iloc[[0]]]))
    with pytest.raises(ValueError, match=r"lack the columns \['ap'\]"):
        forgetting.relative_ap_change(m.drop(columns="ap"))
    with pytest.raises(ValueError, match=r"\['Z'\] have no rows"):
        forgetting.forgettability_curves(m, classes=["A", "Z"])
    with pytest.raises(ValueError, match=r"metrics hold classes \['B'\] that are not among"):
        forgetting.forgettability_curves(m, classes=["A"])


def reference_curves(metrics: pd.DataFrame) -> dict:
    """Slow reference: plain loops over a dict of AP values, np.nanmedian."""
    ap = {(r.seed, r.sparsity, r._3): r.ap for r in metrics.itertuples()}
    out = {}
    for cls in set(metrics["class"]):
        for sp in set(metrics["sparsity"]):
            vals = []
            for seed in set(metrics["seed"]):
                ap0, apk = ap[(seed, 0.0, cls)], ap[(seed, sp, cls)]
                vals.append((apk - ap0) / ap0 if np.isfinite(ap0) and ap0 > 0 else np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[(cls, sp)] = np.nanmedian(vals)
    return out


ap_values = st.one_of(st.floats(0.01, 1.0), st.just(0.0), st.just(np.nan))


@SETTINGS
@given(
    st.integers(1, 4).flatmap(
        lambda n_seeds: st.lists(
            st.lists(
                st.lists(ap_values, min_size=3, max_size=3), min_size=n_seeds, max_size=n_seeds
            ),
            min_size=2,
            max_size=3,
        )
    ),
    st.randoms(),
)
def test_curves_properties(per_class, rnd):
    classes = [f"c{i}" for i in range(len(per_class))]
    seeds = list(range(len(per_class[0])))
    sparsities = [0.0, 0.3, 0.9]
    m = metrics_frame(dict(zip(classes, per_class)), sparsities, seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        curves = forgetting.forgettability_curves(m, classes=classes)
        shuffled = forgetting.forgettability_curves(
            m.sample(frac=1, random_state=rnd.randint(0, 10**6)), classes=classes
        )
    # no output depends on the row order of the inputs
    pd.testing.assert_frame_equal(curves, shuffled)
    # every curve is 0 at sparsity 0
    assert (curves.loc[curves["sparsity"] == 0, "median_rel_ap_change"] == 0).all()
    # equals the slow reference
    ref = reference_curves(m)
    for row in curves.itertuples():
        np.testing.assert_allclose(
            row.median_rel_ap_change, ref[(row._1, row.sparsity)], equal_nan=True
        )


def test_class_summary_counts_order_and_permutation():
    curves = forgetting.forgettability_curves(metrics_frame(HAND, SPARS, SEEDS))
    labels = labels_frame(["B", "A"], train={"A": 9, "B": 3}, test={"A": 4, "B": 2})
    summary = forgetting.class_summary(curves, labels)
    assert list(summary.columns) == forgetting.SUMMARY_COLUMNS
    assert list(summary["class"]) == ["B", "A"]  # canonical order: the label columns
    assert summary.set_index("class").loc["A", "train_count"] == 9
    assert summary.set_index("class").loc["B", "test_count"] == 2
    # permuting classes permutes the results; shuffling rows changes nothing
    other = forgetting.class_summary(
        curves.sample(frac=1, random_state=0),
        labels[["image_id", "patient_id", "split", "A", "B"]].sample(frac=1, random_state=1),
    )
    assert list(other["class"]) == ["A", "B"]
    pd.testing.assert_frame_equal(other.set_index("class").loc[["B", "A"]].reset_index(), summary)


def test_class_summary_without_95_warns_and_gives_nan():
    m = metrics_frame({k: [v[:3] for v in vals] for k, vals in HAND.items()}, SPARS[:3], SEEDS)
    curves = forgetting.forgettability_curves(m)
    labels = labels_frame(["A", "B"], train={"A": 5, "B": 2}, test={"A": 3, "B": 1})
    with pytest.warns(UserWarning, match="sparsity 0.95 is not among"):
        summary = forgetting.class_summary(curves, labels)
    assert summary["rel_change_at_095"].isna().all()


def test_frequency_correlations_match_scipy():
    rng = np.random.default_rng(0)
    summary = pd.DataFrame(
        {
            "class": list("abcdefgh"),
            "train_count": rng.integers(1, 1000, 8),
            "test_count": 1,
            "first_drop": [0.5, 0.6, np.nan, 0.9, 0.95, 0.3, 0.65, 0.7],
            "rel_change_at_095": rng.uniform(-1, 0, 8),
            "drop_threshold": 0.2,
        }
    )
    corr = forgetting.frequency_correlations(summary).set_index("y")
    logf = np.log(summary["train_count"].to_numpy(float))
    keep = np.isfinite(summary["first_drop"].to_numpy())
    ref = scipy.stats.spearmanr(logf[keep], summary["first_drop"][keep])
    assert corr.loc["first_drop", "n"] == 7
    assert corr.loc["first_drop", "spearman_rho"] == pytest.approx(ref.statistic)
    assert corr.loc["first_drop", "spearman_p"] == pytest.approx(ref.pvalue)
    ref = scipy.stats.pearsonr(logf, summary["rel_change_at_095"])
    assert corr.loc["rel_change_at_095", "pearson_r"] == pytest.approx(ref.statistic)


def test_spread_classes_commonest_to_rarest():
    summary = pd.DataFrame(
        {"class": list("abcdefghij"), "train_count": [5, 100, 7, 50, 1, 3, 9, 80, 2, 20]}
    )
    assert forgetting.spread_classes(summary, n=3) == ["b", "g", "e"]
    assert forgetting.spread_classes(summary, n=20) == list("bhdjgcafie")


# -- on a run directory --------------------------------------------------------------------
def write_run(run: str, methods=("global_l1", "random")) -> None:
    classes = ["A", "B", "C"]
    ap = dict(HAND, C=[[0.3, 0.1, 0.05, 0.01]] * 3)
    rp = paths.run_paths(run)
    artifacts.write_parquet(
        rp.labels,
        labels_frame(classes, train={"A": 9, "B": 3, "C": 1}, test={"A": 4, "B": 2, "C": 1}),
    )
    config.record_data(run, {"dataset": "nih-phantom", "synthetic": True})
    for method in methods:
        artifacts.write_json(
            rp.prune_meta(method),
            {"method": method, "seeds": SEEDS, "sparsities": SPARS, "classes": classes},
        )
        artifacts.write_parquet(rp.metrics(method), metrics_frame(ap, SPARS, SEEDS))


def test_run_stage_writes_artifacts_for_every_method():
    write_run("r1")
    results = forgetting.run_stage("r1", drop_threshold=0.2)
    assert list(results) == ["global_l1", "random"]
    rp = paths.run_paths("r1")
    for method in results:
        curves = pd.read_parquet(rp.forgettability(method))
        summary = pd.read_parquet(rp.class_summary(method))
        assert {"class", "sparsity", "median_rel_ap_change"} <= set(curves.columns)
        assert list(summary.columns[:5]) == [
            "class",
            "train_count",
            "test_count",
            "first_drop",
            "rel_change_at_095",
        ]
    again = forgetting.read_results("r1", "global_l1")
    pd.testing.assert_frame_equal(again.summary, results["global_l1"].summary)
    overview = forgetting.overview(results)
    assert len(overview) == 4 and set(overview["method"]) == {"global_l1", "random"}


def test_figure_method_falls_back_with_warning():
    write_run("r2", methods=("random",))
    with pytest.warns(UserWarning, match="'global_l1' has no results"):
        assert forgetting.figure_method("r2") == "random"
    assert analysis.figure_method is forgetting.figure_method  # what notebooks 04-06 call
    with pytest.raises(FileNotFoundError, match="03_prune"):
        artifacts.methods_present("nothing-here")


def test_figures_2_and_3():
    write_run("r3")
    res = forgetting.run_stage("r3")["global_l1"]
    fig, data = forgetting.figure_2(res, classes=["B"])
    visible = {t.name.split(" (")[0]: t.visible for t in fig.data}
    assert visible == {"A": "legendonly", "B": True, "C": "legendonly"}  # all classes reachable
    assert data["shown"].sum() == len(SPARS)
    fig, data = forgetting.figure_2(res)  # auto spread
    assert all(t.visible is True for t in fig.data)
    with pytest.raises(ValueError, match=r"fig2_classes \['Nope'\]"):
        forgetting.figure_2(res, classes=["Nope"])
    fig, data = forgetting.figure_3(res)
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "ρ = " in texts and "r = " in texts
    assert list(data["class"]) == ["A", "B", "C"]
    shown = stats.correlation_display(res.correlations)
    assert shown["spearman"].str.startswith("ρ = ").all()
