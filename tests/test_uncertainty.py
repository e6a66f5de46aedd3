"""prunecxr.analysis.uncertainty and pie_intervals: batched correlations, the patient-resampled
AP, Fig. 3's bootstrap intervals, unlearned classes, censoring, the PIE ratio intervals."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from prunecxr import levels
from prunecxr import metrics as metrics_
from prunecxr.analysis import forgetting, pie_intervals, pies, uncertainty


def synth_metrics(n_seeds=6, n_classes=8, seed=0):
    rng = np.random.default_rng(seed)
    sp = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95]
    base = rng.uniform(0.05, 0.8, n_classes)
    fragility = np.linspace(0.1, 1.5, n_classes)
    rows = []
    for s in range(n_seeds):
        for k in sp:
            ap = np.clip(base * (1 - fragility * k**2) + rng.normal(0, 0.02, n_classes), 0.001, 1)
            for c in range(n_classes):
                auroc = 0.5 if c == 0 else 0.9  # class c0 was not learned
                rows.append((s, float(k), f"c{c}", ap[c], auroc, 10))
    return pd.DataFrame(rows, columns=["seed", "sparsity", "class", "ap", "auroc", "n_pos"])


CLASSES = [f"c{c}" for c in range(8)]


def test_batch_correlations_equal_scipy_row_by_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 12))
    y = x * 0.5 + rng.normal(size=(5, 12))
    y[0, 3] = np.nan
    y[1, :2] = np.inf  # censored: ranks last in Spearman, left out of Pearson
    r = uncertainty.batch_pearson(x, y)
    rho = uncertainty.batch_spearman(x, y)
    for i in range(5):
        fin = np.isfinite(y[i])
        assert r[i] == pytest.approx(scipy.stats.pearsonr(x[i, fin], y[i, fin]).statistic)
        ok = ~np.isnan(y[i])
        assert rho[i] == pytest.approx(scipy.stats.spearmanr(x[i, ok], y[i, ok]).statistic)
    assert np.isnan(uncertainty.batch_pearson([1.0, 2.0], [3.0, 1.0]))  # fewer than 3 pairs
    assert np.isnan(uncertainty.batch_spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))  # constant


def test_resampled_ap_equals_ranking_metrics():
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.1).astype(int)
    s = np.round(rng.random(n) + 0.4 * y, 2)  # many ties
    ap = metrics_.ranking_metrics(y[:, None], s[:, None])[0][0]
    assert metrics_.resampled_ap(y, s, np.ones((1, n), int), np.arange(n))[0] == pytest.approx(
        ap, rel=1e-12
    )
    # a patient drawn k times: its images appear k times
    patient = rng.integers(0, 50, n)
    counts = rng.integers(0, 3, (4, 50))
    out = metrics_.resampled_ap(y, s, counts, patient)
    for b in range(4):
        rep = counts[b, patient]
        direct = metrics_.ranking_metrics(np.repeat(y, rep)[:, None], np.repeat(s, rep)[:, None])[
            0
        ][0]
        assert out[b] == pytest.approx(direct, rel=1e-6)
    assert np.isnan(metrics_.resampled_ap(np.zeros(n, int), s, counts, patient)).all()


def test_seed_changes_give_notebook_04s_curves_and_correlations():
    m = synth_metrics()
    ch = uncertainty.seed_changes(m, CLASSES)
    curves = forgetting.forgettability_curves(m, classes=CLASSES)
    np.testing.assert_allclose(
        ch.curves(), forgetting.curve_matrix(curves, classes=CLASSES).to_numpy().T
    )
    counts = np.geomspace(30, 5000, 8).astype(int)
    flags = uncertainty.unlearned(uncertainty.dense_auroc(m, CLASSES)).to_numpy()
    assert flags.tolist() == [True] + [False] * 7
    iv = uncertainty.forgetting_intervals(ch, counts, flags, n_boot=200, seed=0)
    summary = forgetting.class_summary(
        curves, pd.DataFrame({"split": ["train"], **{c: [1] for c in CLASSES}})
    )
    summary["train_count"] = counts
    corr = forgetting.frequency_correlations(summary).set_index("y")
    est = iv[(iv["subset"] == "all") & (iv["resampling"] == "seeds")].set_index("quantity")[
        "estimate"
    ]
    assert est["rho_freq_first_drop"] == pytest.approx(
        corr.loc["first_drop", "spearman_rho"], nan_ok=True
    )
    assert est["r_freq_change_095"] == pytest.approx(corr.loc["rel_change_at_095", "pearson_r"])
    assert est["rho_freq_change_095"] == pytest.approx(
        corr.loc["rel_change_at_095", "spearman_rho"]
    )
    assert set(iv["resampling"]) == {"seeds", "classes"}
    assert (iv["ci_low"] <= iv["ci_high"] + 1e-12).all()


def test_class_bootstrap_equals_scipy_paired_bootstrap():
    m = synth_metrics()
    ch = uncertainty.seed_changes(m, CLASSES)
    counts = np.geomspace(30, 5000, 8)
    flags = np.zeros(8, bool)
    iv = uncertainty.forgetting_intervals(ch, counts, flags, n_boot=300, seed=5)
    row = iv[
        (iv["quantity"] == "r_freq_change_095")
        & (iv["subset"] == "all")
        & (iv["resampling"] == "classes")
    ]
    change = ch.curves()[-1]

    def pearson(x, y, axis=-1):
        return uncertainty.batch_pearson(x, y)

    direct = scipy.stats.bootstrap(
        (np.log(counts), change),
        pearson,
        paired=True,
        vectorized=True,
        n_resamples=300,
        method="BCa",
        rng=np.random.default_rng(6),
    )
    assert row["ci_low"].iloc[0] == pytest.approx(direct.confidence_interval.low)
    assert row["ci_high"].iloc[0] == pytest.approx(direct.confidence_interval.high)


def test_never_crossing_curve_is_censored_beyond_the_last_level():
    axis = levels.axis("sparsity")
    lv = np.array([0.0, 0.5, 0.9])
    curves = np.array(
        [[0.0, 0.0, 0.0], [-0.1, -0.3, -0.05], [-0.5, -0.6, -0.1]]
    )  # levels × classes
    first, censored = uncertainty.first_drop_values(curves, lv, axis, 0.2)
    np.testing.assert_array_equal(first, [0.9, 0.5, np.nan])  # one column per class
    np.testing.assert_array_equal(censored, [0.9, 0.5, np.inf])
    bits = levels.axis("bits")
    _, cens_bits = uncertainty.first_drop_values(curves, np.array([32.0, 8.0, 2.0]), bits, 0.2)
    assert cens_bits[2] == -np.inf  # fewer bits compress more: "beyond" is below every level
    # in Spearman's rho the censored class ranks after every class that drops
    rho = uncertainty.batch_spearman(np.array([3.0, 1.0, 2.0]), np.array([np.inf, 0.5, 0.7]))
    assert rho == pytest.approx(1.0)


def test_patient_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(2)
    m = synth_metrics(n_seeds=3)
    ch = uncertainty.seed_changes(m, CLASSES)
    n = 300
    y = (rng.random((n, 8)) < 0.2).astype(int)
    dense = np.clip(y * 0.3 + rng.random((3, n, 8)) * 0.7, 0, 1).astype(np.float32)
    extreme = np.clip(y * 0.1 * np.arange(8) / 8 + rng.random((3, n, 8)), 0, 1).astype(np.float32)
    data = uncertainty.PatientData(
        y=y, dense=dense, extreme=extreme, patient=rng.integers(0, 60, n)
    )
    rel = uncertainty.patient_ap_changes(data, np.ones((1, 60), int))[0]
    ap0 = metrics_.ranking_metrics(y, dense[1])[0]
    apk = metrics_.ranking_metrics(y, extreme[1])[0]
    np.testing.assert_allclose(rel[1], (apk - ap0) / ap0, rtol=1e-6)
    iv = uncertainty.forgetting_intervals(
        ch,
        np.geomspace(30, 5000, 8),
        np.zeros(8, bool),
        patients=data,
        n_boot=100,
        n_boot_patients=50,
    )
    pat = iv[iv["resampling"] == "patients"]
    assert set(pat["quantity"]) == {"rho_freq_change_095", "r_freq_change_095"}
    assert (pat["interval"] == "percentile").all()


def test_unlearned_table_and_threshold():
    m = synth_metrics()
    table = uncertainty.unlearned_table(m, CLASSES, threshold=0.6)
    assert table["class"].iloc[0] == "c0" and bool(table["unlearned"].iloc[0])
    with pytest.raises(ValueError, match="unlearned_auroc"):
        uncertainty.unlearned(table.set_index("class")["dense_auroc"], threshold=1.5)


def _pie_data(rng, n_patients=120, per_patient=1):
    classes = ["a", "b", "c"]
    y = (rng.random((n_patients, 3)) < [0.3, 0.2, 0.05]).astype(int)
    is_pie = rng.random(n_patients) < 0.2 + 0.5 * y[:, 2]
    frame = pd.DataFrame(y, columns=classes)
    frame.insert(0, "patient_id", [f"p{i}" for i in range(n_patients)])
    frame = frame.loc[frame.index.repeat(per_patient)].reset_index(drop=True)
    return frame, np.repeat(is_pie, per_patient), classes


def test_pie_ratio_intervals_are_patient_clustered():
    rng = np.random.default_rng(4)
    one, pie_one, classes = _pie_data(rng)
    ivs = pie_intervals.pie_ratio_intervals(
        one,
        pie_one,
        classes,
        train_counts=[500, 300, 20],
        is_unlearned=[False, False, True],
        n_boot=300,
        n_rarest=2,
    )
    ratios = pies.class_ratios(one, pie_one, classes)
    np.testing.assert_allclose(ivs["estimate"].to_numpy()[:3], ratios["ratio"].to_numpy())
    assert ivs["subset"].tolist()[:3] == ["learned", "learned", "unlearned"]
    # each patient's image duplicated: resampling patients gives exactly the same intervals
    # (resampling images would pretend to twice the data and narrow them)
    rng = np.random.default_rng(4)
    two, pie_two, _ = _pie_data(rng, per_patient=2)
    ivs2 = pie_intervals.pie_ratio_intervals(
        two,
        pie_two,
        classes,
        train_counts=[500, 300, 20],
        is_unlearned=[False, False, True],
        n_boot=300,
        n_rarest=2,
    )
    np.testing.assert_allclose(
        ivs2[["estimate", "ci_low", "ci_high"]].to_numpy(),
        ivs[["estimate", "ci_low", "ci_high"]].to_numpy(),
        equal_nan=True,
    )
    rare = ivs.set_index("quantity")
    assert rare.loc["pie_rarest_ratio_max", "estimate"] == pytest.approx(
        ratios["ratio"].iloc[1:].max()
    )


def test_pie_stability_of_identical_seeds_is_total():
    rng = np.random.default_rng(5)
    one_seed = rng.random((1, 2, 50, 4))
    probs = np.repeat(one_seed, 3, axis=0)  # three identical seeds
    ids = np.array([f"i{k:02d}" for k in range(50)])
    flags = pies.pie_table(probs[0, 0], probs[0, 1], ids, fraction=0.2)["is_pie"].to_numpy()
    stab = pie_intervals.pie_stability(probs, 0, 1, ids, flags, fraction=0.2, n_resamples=4)
    assert (stab["retained"] == 1).all() and (stab["jaccard"] == 1).all()
    rows = pie_intervals.stability_rows(stab)
    assert rows.set_index("quantity").loc["pie_retained_share", "estimate"] == 1


def test_figures_flag_the_unlearned_classes():
    from prunecxr.analysis import cooccurrence

    m = synth_metrics()
    curves = forgetting.forgettability_curves(m, classes=CLASSES)
    labels = pd.DataFrame(
        (np.random.default_rng(0).random((300, 8)) < 0.3).astype(int), columns=CLASSES
    )
    labels["split"] = ["train", "test"] * 150
    summary = forgetting.class_summary(curves, labels)
    result = forgetting.Forgetting("m", curves, summary, forgetting.frequency_correlations(summary))
    flagged = uncertainty.unlearned_table(m, CLASSES).query("unlearned")["class"].tolist()
    fig, data = forgetting.figure_3(result, unlearned=flagged)
    assert data.set_index("class")["unlearned"].to_dict() == {c: c == "c0" for c in CLASSES}
    assert "not learned" in fig.layout.title.text
    fig4, data4 = cooccurrence.figure_4(
        cooccurrence.summarize("m", cooccurrence.pair_table(curves, labels)), unlearned=flagged
    )
    assert data4["involves_unlearned"].sum() == len(CLASSES) - 1  # every pair of c0
