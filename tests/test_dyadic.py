"""prunecxr.analysis.dyadic: batched OLS, Mantel / Y-QAP / Freedman–Lane permutation tests, robust
SEs and the class and seed bootstraps of Fig. 4 and Eq. 2; the permutation tests' size under a
dyadic null, where the classical tests are too liberal."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.formula.api as smf

from prunecxr.analysis import cooccurrence, dyadic, uncertainty


def dyadic_null(rng, n, m=1):
    """``m`` datasets of ``n`` classes: response and predictor both carry class effects, independent."""
    ia, ib = np.triu_indices(n, 1)
    u, v = rng.normal(size=(m, n)), rng.normal(size=(m, n))
    y = u[:, ia] + u[:, ib] + 0.5 * rng.normal(size=(m, ia.size))
    x = v[:, ia] + v[:, ib] + 0.5 * rng.normal(size=(m, ia.size))
    return ia, ib, y, x


def test_permutation_tests_hold_their_size_where_classical_ones_do_not():
    rng = np.random.default_rng(0)
    n, m = 10, 300
    ia, ib, y, x = dyadic_null(rng, n, m)
    mantel_p = np.array(
        [dyadic.mantel(y[i], x[i], ia, ib, n, n_permutations=199, seed=i)[1] for i in range(m)]
    )
    classical_p = np.array([scipy.stats.pearsonr(x[i], y[i]).pvalue for i in range(m)])
    X = np.stack([np.ones_like(x), x], axis=-1)
    qap_p = np.array(
        [dyadic.qap_eq2(y[i], X[i], ia, ib, n, n_permutations=199, seed=i)[1][1] for i in range(m)]
    )
    # the classical tests assume 45 independent pairs: far too many rejections
    assert np.mean(classical_p < 0.05) > 0.15
    # 300 datasets: a true 5% lies in [0.025, 0.08] with probability > 0.99
    assert 0.02 <= np.mean(mantel_p < 0.05) <= 0.08
    assert 0.02 <= np.mean(qap_p < 0.05) <= 0.08


def test_permutation_tests_find_a_real_association():
    rng = np.random.default_rng(1)
    ia, ib, y, x = dyadic_null(rng, 12)
    y = y[0] + 1.5 * x[0]
    assert dyadic.mantel(y, x[0], ia, ib, 12, n_permutations=199)[1] < 0.01
    X = dyadic.design(np.abs(x[0]), rng.random(ia.size))
    _, p_qap, p_fl = dyadic.qap_eq2(y, X, ia, ib, 12, n_permutations=199)
    assert p_qap[1] < 0.05 and p_fl[1] < 0.05
    assert np.isnan(p_fl[0])


def test_ols_batch_equals_statsmodels():
    rng = np.random.default_rng(2)
    data = pd.DataFrame(
        {"fcd": rng.random(40), "abs_log_freq_diff": rng.random(40), "iou_quarter": rng.random(40)}
    )
    data.loc[3, "fcd"] = np.nan
    fit = smf.ols(cooccurrence.EQ2_FORMULA, data=data, missing="drop").fit()
    beta, t = dyadic.ols_batch(
        dyadic.design(data["abs_log_freq_diff"], data["iou_quarter"]), data["fcd"]
    )
    np.testing.assert_allclose(beta, fit.params.to_numpy())
    np.testing.assert_allclose(t, fit.tvalues.to_numpy())
    # many responses at once, one fit each
    Y = rng.random((3, 40))
    b3, _ = dyadic.ols_batch(dyadic.design(data["abs_log_freq_diff"], data["iou_quarter"]), Y)
    for i in range(3):
        np.testing.assert_allclose(
            b3[i],
            smf.ols(
                "y ~ a * b",
                data=pd.DataFrame(
                    {"y": Y[i], "a": data["abs_log_freq_diff"], "b": data["iou_quarter"]}
                ),
            )
            .fit()
            .params.to_numpy(),
        )


def _pairs(rng, n=9):
    classes = [f"c{i}" for i in range(n)]
    ia, ib = np.triu_indices(n, 1)
    return classes, pd.DataFrame(
        {
            "class_a": [classes[i] for i in ia],
            "class_b": [classes[j] for j in ib],
            "fcd": rng.random(ia.size),
            "abs_log_freq_diff": rng.random(ia.size),
            "iou": rng.random(ia.size) ** 3,
        }
    ).assign(iou_quarter=lambda d: d["iou"] ** 0.25)


def test_dyadic_tests_report_the_statsmodels_fits_beside_the_permutations():
    rng = np.random.default_rng(3)
    classes, pairs = _pairs(rng)
    tests = dyadic.dyadic_tests(pairs, classes, n_permutations=99)
    ia, ib = dyadic.pair_index(pairs, classes)
    hc3 = smf.ols(cooccurrence.EQ2_FORMULA, data=pairs).fit(cov_type="HC3")
    cl = smf.ols(cooccurrence.EQ2_FORMULA, data=pairs).fit(
        cov_type="cluster", cov_kwds={"groups": np.column_stack([ia, ib])}
    )
    rows = tests.set_index(["quantity", "inference"])
    assert rows.loc[("eq2_interaction", "HC3"), "p_value"] == pytest.approx(
        hc3.pvalues["abs_log_freq_diff:iou_quarter"]
    )
    assert rows.loc[
        ("eq2_interaction", "cluster-robust by both classes"), "p_value"
    ] == pytest.approx(cl.pvalues["abs_log_freq_diff:iou_quarter"])
    c = scipy.stats.spearmanr(pairs["abs_log_freq_diff"], pairs["fcd"])
    assert rows.loc[
        ("rho_fcd_freq_diff", "classical (independent pairs)"), "p_value"
    ] == pytest.approx(c.pvalue)
    assert rows.loc[
        ("rho_fcd_freq_diff", "Mantel (class permutation)"), "estimate"
    ] == pytest.approx(c.statistic)
    assert tests["p_value"].dropna().between(0, 1).all()
    assert (
        tests["assumes_independent_pairs"] == tests["inference"].str.startswith("classical")
    ).all()
    again = dyadic.dyadic_tests(pairs, classes, n_permutations=99)
    pd.testing.assert_frame_equal(tests, again)  # seeded: the same P values twice


def test_cooccurrence_intervals_estimates_are_notebook_05s():
    rng = np.random.default_rng(4)
    classes, pairs = _pairs(rng)
    iv = dyadic.cooccurrence_intervals(pairs, classes, n_boot=200)
    est = iv.set_index("quantity")["estimate"]
    corr = cooccurrence.predictor_correlations(pairs).set_index("x")
    fit = cooccurrence.fit_eq2(pairs)
    assert est["rho_fcd_freq_diff"] == pytest.approx(corr.loc["abs_log_freq_diff", "spearman_rho"])
    assert est["r_fcd_iou_quarter"] == pytest.approx(corr.loc["iou_quarter", "pearson_r"])
    assert est["eq2_interaction"] == pytest.approx(fit.coef("abs_log_freq_diff:iou_quarter"))
    assert (iv["resampling"] == "classes").all()
    assert (iv["ci_low"] <= iv["estimate"] + 1e-9).mean() > 0.5


def test_seed_bootstrap_recomputes_fcd_from_the_curves():
    rng = np.random.default_rng(5)
    classes = [f"c{i}" for i in range(6)]
    rows = [
        (s, k, c, 0.5 * (1 - j * k / 6) + rng.normal(0, 0.01), 0.9, 5)
        for s in range(4)
        for k in (0.0, 0.5, 0.9)
        for j, c in enumerate(classes)
    ]
    m = pd.DataFrame(rows, columns=["seed", "sparsity", "class", "ap", "auroc", "n_pos"])
    changes = uncertainty.seed_changes(m, classes)
    curves = pd.DataFrame(
        [
            (c, lv, changes.curves()[k, j])
            for j, c in enumerate(classes)
            for k, lv in enumerate(changes.levels)
        ],
        columns=["class", "sparsity", "median_rel_ap_change"],
    )
    labels = pd.DataFrame((rng.random((200, 6)) < 0.3).astype(int), columns=classes).assign(
        split="test"
    )
    pairs = cooccurrence.pair_table(curves, labels)
    iv = dyadic.cooccurrence_intervals(pairs, classes, changes, n_boot=100)
    seeds = iv[iv["resampling"] == "seeds"].set_index("quantity")
    assert seeds.loc["rho_fcd_freq_diff", "estimate"] == pytest.approx(
        cooccurrence.predictor_correlations(pairs)
        .set_index("x")
        .loc["abs_log_freq_diff", "spearman_rho"]
    )


def test_learned_pairs_drop_every_pair_of_an_unlearned_class():
    rng = np.random.default_rng(6)
    classes, pairs = _pairs(rng, n=5)
    sub, keep = dyadic.learned_pairs(pairs, classes, [False, True, False, False, False])
    assert keep == ["c0", "c2", "c3", "c4"] and len(sub) == 6
    assert "c1" not in set(sub["class_a"]) | set(sub["class_b"])
    with pytest.raises(ValueError, match="not among"):
        dyadic.pair_index(pairs, classes[:3])


def test_holm_within_each_family_of_tests():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(7)
    classes, pairs = _pairs(rng)
    tests = dyadic.dyadic_tests(pairs, classes, n_permutations=99)
    fam = tests[(tests["inference"] == "HC3") & (tests["quantity"] != "eq2_intercept")]
    np.testing.assert_allclose(fam["p_holm"], multipletests(fam["p_value"], method="holm")[1])
    fig4 = tests[tests["inference"] == "Mantel (class permutation)"]
    np.testing.assert_allclose(fig4["p_holm"], multipletests(fig4["p_value"], method="holm")[1])
    assert tests.loc[tests["quantity"] == "eq2_intercept", "p_holm"].isna().all()
