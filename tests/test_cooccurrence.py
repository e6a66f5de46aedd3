"""prunecxr.analysis.cooccurrence: FCD, frequencies, IoU, Eq. 2 and Fig. 4."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.spatial.distance
import scipy.stats
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import jaccard_score, mean_squared_error

from prunecxr import artifacts, config, paths, stats
from prunecxr.analysis import cooccurrence

SETTINGS = settings(max_examples=40, deadline=None)
curve = hnp.arrays(float, 5, elements=st.floats(-1, 1))


# -- FCD -----------------------------------------------------------------------------------
def test_fcd_by_hand_and_against_scipy_sklearn():
    a, b = np.array([-0.1, -0.3, -0.7]), np.array([-0.1, -0.2, -0.4])
    assert cooccurrence.fcd(a, b) == pytest.approx(np.sqrt(0.01 + 0.09))
    assert cooccurrence.fcd(a, b, definition="mse") == pytest.approx(0.1 / 3)
    assert cooccurrence.fcd(a, b) == pytest.approx(scipy.spatial.distance.euclidean(a, b))
    assert cooccurrence.fcd(a, b, definition="mse") == pytest.approx(mean_squared_error(a, b))
    assert np.isnan(cooccurrence.fcd([np.nan, 0.1], [0.0, 0.1]))
    with pytest.raises(ValueError, match="unknown fcd 'cosine'"):
        cooccurrence.fcd(a, b, definition="cosine")
    with pytest.raises(ValueError, match="equal length"):
        cooccurrence.fcd(a, b[:2])


@SETTINGS
@given(curve, curve, st.sampled_from(cooccurrence.FCD_DEFINITIONS))
def test_fcd_symmetric_zero_on_identical_nonnegative(a, b, definition):
    assert cooccurrence.fcd(a, b, definition=definition) == cooccurrence.fcd(
        b, a, definition=definition
    )
    assert cooccurrence.fcd(a, a, definition=definition) == 0.0
    assert cooccurrence.fcd(a, b, definition=definition) >= 0.0


# -- frequencies and IoU -------------------------------------------------------------------
Y = np.array(
    [
        [1, 1, 0, 0],
        [1, 0, 0, 0],
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
    ]
)


def test_counts_iou_is_jaccard():
    freq, iou = cooccurrence.class_frequencies(Y)
    np.testing.assert_array_equal(freq, [3, 3, 3, 0])
    for a, b in itertools.combinations(range(3), 2):
        assert iou[a, b] == pytest.approx(jaccard_score(Y[:, a], Y[:, b]))
    assert iou[0, 1] == pytest.approx(2 / 4)  # images 0, 2 share both; union images 0-3
    assert np.isnan(iou[3, 3])  # neither class has a positive: undefined
    assert iou[0, 3] == 0.0


def test_counts_iou_is_the_one_of_stats():
    _, iou = cooccurrence.class_frequencies(Y)
    np.testing.assert_array_equal(iou, stats.label_iou(Y))


def test_released_code_quantities_by_hand():
    freq, iou = cooccurrence.class_frequencies(Y, cooccurrence="released_code")
    C = Y.T @ Y
    # column sums of Y^T Y: class 0 -> C[0,0]+C[1,0]+C[2,0] = 3 + 2 + 1 = 6
    np.testing.assert_array_equal(freq, C.sum(axis=0))
    assert freq[0] == 6
    assert iou[0, 1] == pytest.approx(C[0, 1] / (freq[0] + freq[1] - C[0, 1]))
    with pytest.raises(ValueError, match="unknown cooccurrence 'raw'"):
        cooccurrence.class_frequencies(Y, cooccurrence="raw")
    with pytest.raises(ValueError, match="0/1"):
        cooccurrence.class_frequencies(Y * 2)


# -- pairs ---------------------------------------------------------------------------------
CLASSES = ["A", "B", "C", "D"]
SPARS = [0.0, 0.5, 0.9]
CURVES = {
    "A": [0.0, -0.1, -0.5],
    "B": [0.0, -0.2, -0.6],
    "C": [0.0, 0.0, -0.9],
    "D": [0.0, -0.3, -0.3],
}


def curves_frame(curves=CURVES) -> pd.DataFrame:
    rows = [(c, s, v) for c, vals in curves.items() for s, v in zip(SPARS, vals)]
    df = pd.DataFrame(rows, columns=["class", "sparsity", "median_rel_ap_change"])
    df["n_seeds"] = 3
    return df


def labels_frame(y_test, y_train=None, classes=CLASSES) -> pd.DataFrame:
    y_train = np.ones((2, len(classes)), int) if y_train is None else y_train
    y = np.vstack([y_train, y_test])
    split = ["train"] * len(y_train) + ["test"] * len(y_test)
    df = pd.DataFrame(
        {"image_id": [f"i{j}" for j in range(len(y))], "patient_id": "p", "split": split}
    )
    for j, c in enumerate(classes):
        df[c] = y[:, j].astype(np.int8)
    return df


Y_TEST = np.array(
    [
        [1, 1, 0, 0],
        [1, 0, 0, 1],
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 0],
        [1, 0, 0, 0],
        [1, 1, 0, 0],
    ]
)


def test_pair_table_by_hand():
    pairs = cooccurrence.pair_table(curves_frame(), labels_frame(Y_TEST))
    assert list(pairs.columns) == cooccurrence.PAIR_COLUMNS
    assert len(pairs) == 6
    assert list(zip(pairs["class_a"], pairs["class_b"])) == list(itertools.combinations(CLASSES, 2))
    ab = pairs.iloc[0]
    # FCD over sparsities above 0: (−0.1 − −0.2, −0.5 − −0.6)
    assert ab["fcd"] == pytest.approx(np.sqrt(0.01 + 0.01))
    n = Y_TEST.sum(axis=0)  # 5, 4, 3, 1
    assert ab["abs_log_freq_diff"] == pytest.approx(abs(np.log(5) - np.log(4)))
    assert ab["iou"] == pytest.approx(jaccard_score(Y_TEST[:, 0], Y_TEST[:, 1]))
    assert ab["iou_quarter"] == pytest.approx(ab["iou"] ** 0.25)
    assert (pairs["fcd_definition"] == "euclidean").all() and (
        pairs["cooccurrence"] == "counts"
    ).all()
    mse = cooccurrence.pair_table(
        curves_frame(), labels_frame(Y_TEST), fcd="mse", cooccurrence="released_code"
    )
    assert mse["fcd"].iloc[0] == pytest.approx(0.01)
    assert (mse["fcd_definition"] == "mse").all() and (mse["cooccurrence"] == "released_code").all()
    assert n[3] == 1


def test_pair_table_uses_test_split_only_and_ignores_row_order():
    base = cooccurrence.pair_table(curves_frame(), labels_frame(Y_TEST))
    other_train = labels_frame(Y_TEST, y_train=np.zeros((5, 4), int))
    pd.testing.assert_frame_equal(cooccurrence.pair_table(curves_frame(), other_train), base)
    shuffled = cooccurrence.pair_table(
        curves_frame().sample(frac=1, random_state=2),
        labels_frame(Y_TEST).sample(frac=1, random_state=3),
    )
    pd.testing.assert_frame_equal(shuffled, base)


def test_pair_table_permuting_classes_permutes_results():
    base = cooccurrence.pair_table(curves_frame(), labels_frame(Y_TEST))
    perm = ["C", "A", "D", "B"]
    labels = labels_frame(Y_TEST)[["image_id", "patient_id", "split", *perm]]
    permuted = cooccurrence.pair_table(curves_frame(), labels)
    key = lambda df: {  # noqa: E731 (a one-use key function, read where it is used)
        frozenset((a, b)): (f, d, i)
        for a, b, f, d, i in zip(
            df["class_a"], df["class_b"], df["fcd"], df["abs_log_freq_diff"], df["iou"]
        )
    }
    assert key(permuted) == key(base)
    assert permuted["class_a"].iloc[0] == "C"  # canonical order follows the label columns


def test_pair_table_errors():
    with pytest.raises(ValueError, match="no test image"):
        cooccurrence.pair_table(curves_frame(), labels_frame(Y_TEST).assign(split="train"))
    with pytest.raises(ValueError, match="no sparsity above 0"):
        cooccurrence.pair_table(curves_frame()[lambda d: d["sparsity"] == 0], labels_frame(Y_TEST))
    with pytest.raises(ValueError, match=r"\['Z'\] of the curves are not columns"):
        cooccurrence.pair_table(
            pd.concat([curves_frame(), curves_frame({"Z": [0, 0, 0]})]), labels_frame(Y_TEST)
        )


# -- Eq. 2 and correlations ----------------------------------------------------------------
def random_pairs(n_classes=12, seed=0):
    rng = np.random.default_rng(seed)
    classes = [f"k{i}" for i in range(n_classes)]
    curves = {c: np.r_[0.0, np.sort(rng.uniform(-1, 0, 2))[::-1]] for c in classes}
    prev = np.geomspace(0.5, 0.02, n_classes)
    y = (rng.random((400, n_classes)) < prev).astype(int)
    rows = [(c, s, v) for c, vals in curves.items() for s, v in zip(SPARS, vals)]
    cf = pd.DataFrame(rows, columns=["class", "sparsity", "median_rel_ap_change"])
    return cf, labels_frame(y, classes=classes)


def test_fit_eq2_matches_statsmodels_design_matrix():
    cf, labels = random_pairs()
    pairs = cooccurrence.pair_table(cf, labels)
    fit = cooccurrence.fit_eq2(pairs)
    x1, x2 = pairs["abs_log_freq_diff"].to_numpy(), pairs["iou_quarter"].to_numpy()
    ref = sm.OLS(
        pairs["fcd"].to_numpy(), np.column_stack([np.ones_like(x1), x1, x2, x1 * x2])
    ).fit()
    np.testing.assert_allclose(fit.coefficients["coef"], ref.params, rtol=1e-9)
    np.testing.assert_allclose(fit.coefficients["p_value"], ref.pvalues, rtol=1e-6)
    assert fit.r_squared == pytest.approx(ref.rsquared)
    assert list(fit.coefficients["term"]) == list(cooccurrence.EQ2_TERMS)
    shown = cooccurrence.coefficient_display(fit)
    assert shown["P"].str.startswith("P ").all()
    assert cooccurrence.fit_summary(fit)["n_pairs"].iloc[0] == len(pairs)


def test_predictor_correlations_match_scipy():
    cf, labels = random_pairs(seed=1)
    pairs = cooccurrence.pair_table(cf, labels)
    corr = cooccurrence.predictor_correlations(pairs).set_index("x")
    ref = scipy.stats.spearmanr(pairs["abs_log_freq_diff"], pairs["fcd"])
    assert corr.loc["abs_log_freq_diff", "spearman_rho"] == pytest.approx(ref.statistic)
    assert corr.loc["iou", "spearman_rho"] == pytest.approx(corr.loc["iou_quarter", "spearman_rho"])
    ref = scipy.stats.pearsonr(pairs["iou_quarter"], pairs["fcd"])
    assert corr.loc["iou_quarter", "pearson_r"] == pytest.approx(ref.statistic)


def test_compare_definitions_has_every_combination():
    cf, labels = random_pairs(seed=2)
    table = cooccurrence.compare_definitions(cf, labels)
    assert set(zip(table["fcd_definition"], table["cooccurrence"])) == set(
        itertools.product(cooccurrence.FCD_DEFINITIONS, cooccurrence.COOCCURRENCE_DEFINITIONS)
    )
    assert table["r_squared"].between(0, 1).all()


# -- labelled pairs, stage and Fig. 4 ------------------------------------------------------
def test_labelled_pairs_paper_pairs_then_extremes():
    names = ["Emphysema", "Infiltration", "Hernia", "Mass"]
    cf = curves_frame(dict(zip(names, CURVES.values())))
    pairs = cooccurrence.pair_table(cf, labels_frame(Y_TEST, classes=names))
    auto = cooccurrence.labelled_pairs(pairs)
    assert auto[0] == ("Infiltration", "Hernia")  # the paper's pair present in this run
    assert len(auto) == cooccurrence.N_LABELLED_PAIRS
    assert cooccurrence.labelled_pairs(pairs, [["hernia", "emphysema"]]) == [
        ("Emphysema", "Hernia")
    ]
    with pytest.raises(ValueError, match="not a pair of classes"):
        cooccurrence.labelled_pairs(pairs, [["Emphysema", "Nope"]])
    with pytest.raises(ValueError, match="two class names"):
        cooccurrence.labelled_pairs(pairs, [["Emphysema"]])


def write_run(run: str) -> None:
    rp = paths.run_paths(run)
    cf, labels = random_pairs(seed=3)
    artifacts.write_parquet(rp.labels, labels)
    config.record_data(run, {"dataset": "nih-phantom", "synthetic": True})
    for method in ("global_l1", "random"):
        artifacts.write_json(
            rp.prune_meta(method),
            {
                "method": method,
                "seeds": [0],
                "sparsities": SPARS,
                "classes": sorted(set(cf["class"])),
            },
        )
        artifacts.write_parquet(rp.forgettability(method), cf)


def test_run_stage_writes_pairs_and_figure_4():
    write_run("c1")
    results = cooccurrence.run_stage("c1", fcd="euclidean", cooccurrence="counts")
    assert list(results) == ["global_l1", "random"]
    written = pd.read_parquet(paths.run_paths("c1").pairs("global_l1"))
    assert list(written.columns[:6]) == [
        "class_a",
        "class_b",
        "fcd",
        "abs_log_freq_diff",
        "iou",
        "iou_quarter",
    ]
    assert len(written) == 12 * 11 // 2
    again = cooccurrence.read_results("c1", "global_l1")
    assert again.eq2.coef("Intercept") == pytest.approx(results["global_l1"].eq2.coef("Intercept"))
    assert len(cooccurrence.overview(results)) == 2
    fig, data = cooccurrence.figure_4(results["global_l1"])
    assert data["labelled"].sum() == cooccurrence.N_LABELLED_PAIRS
    assert any("ρ = " in a.text for a in fig.layout.annotations)


def test_eq2_not_fitted_warns_instead_of_crashing():
    pairs = cooccurrence.pair_table(curves_frame(), labels_frame(Y_TEST)).iloc[:3]
    with pytest.warns(UserWarning, match="Eq. 2 not fitted"):
        res = cooccurrence.summarize("global_l1", pairs)
    assert res.eq2 is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(cooccurrence.overview({"global_l1": res})["r_squared"].iloc[0])
