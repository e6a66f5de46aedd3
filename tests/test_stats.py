"""prunecxr.stats: correlations, lines, OLS, row-wise Spearman and IoU against scipy / statsmodels / numpy."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prunecxr import stats

SETTINGS = settings(max_examples=60, deadline=None)


# -- correlation ---------------------------------------------------------------------------
def test_correlation_hand_computed():
    # y is a monotone but non-linear function of x: Spearman 1, Pearson below 1
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 2.0, 3.0, 5.0])
    c = stats.correlation(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    assert c.n == 4
    assert c.spearman_rho == pytest.approx(1.0)
    assert c.pearson_r == pytest.approx((dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum()))


def test_correlation_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    c = stats.correlation(x, y)
    pr, sr = scipy.stats.pearsonr(x, y), scipy.stats.spearmanr(x, y)
    assert (c.pearson_r, c.pearson_p) == pytest.approx((pr.statistic, pr.pvalue))
    assert (c.spearman_rho, c.spearman_p) == pytest.approx((sr.statistic, sr.pvalue))


def test_correlation_drops_non_finite_pairs():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 3.0, np.inf, 5.0, 7.0])
    c = stats.correlation(x, y)
    keep = [0, 1, 4, 5]
    assert c.n == 4
    assert c.spearman_rho == pytest.approx(scipy.stats.spearmanr(x[keep], y[keep]).statistic)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1.0, 2.0], [2.0, 1.0]),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
        ([np.nan] * 4, [1.0, 2.0, 3.0, 4.0]),
    ],
    ids=["two-pairs", "constant", "all-nan"],
)
def test_correlation_undefined_is_nan_without_warning(x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = stats.correlation(x, y)
    assert np.isnan([c.pearson_r, c.pearson_p, c.spearman_rho, c.spearman_p]).all()


def test_correlation_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal length"):
        stats.correlation([1, 2, 3], [1, 2])


def test_correlation_table_rows_and_missing_column():
    df = pd.DataFrame({"a": [1, 2, 3, 4], "b": [4, 3, 2, 1], "c": [1, 3, 2, 4]})
    t = stats.correlation_table(df, [("a", "b"), ("a", "c")])
    assert list(t.columns) == stats.CORRELATION_COLUMNS
    assert t["spearman_rho"].iloc[0] == pytest.approx(-1.0)
    with pytest.raises(KeyError, match="'z'"):
        stats.correlation_table(df, [("a", "z")])


@SETTINGS
@given(hnp.arrays(float, st.integers(3, 30), elements=st.floats(-1e3, 1e3)), st.randoms())
def test_correlation_symmetric_and_order_free(x, rnd):
    y = np.arange(x.size, dtype=float) ** 1.5
    perm = np.array(rnd.sample(range(x.size), x.size))
    a, b, c = stats.correlation(x, y), stats.correlation(y, x), stats.correlation(x[perm], y[perm])
    np.testing.assert_allclose(
        [a.pearson_r, a.spearman_rho], [b.pearson_r, b.spearman_rho], equal_nan=True
    )
    np.testing.assert_allclose(
        [a.pearson_r, a.spearman_rho], [c.pearson_r, c.spearman_rho], equal_nan=True, atol=1e-12
    )


# -- OLS -----------------------------------------------------------------------------------
def _eq2_data(n=60, seed=1):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.uniform(0, 4, n), "b": rng.uniform(0, 1, n)})
    df["y"] = 0.3 + 0.2 * df["a"] - 0.1 * df["b"] - 0.3 * df["a"] * df["b"] + rng.normal(0, 0.05, n)
    return df


def test_ols_matches_statsmodels_arrays_and_numpy():
    df = _eq2_data()
    fit = stats.ols(df, "y ~ a * b")
    X = np.column_stack([np.ones(len(df)), df["a"], df["b"], df["a"] * df["b"]])
    ref = sm.OLS(df["y"].to_numpy(), X).fit()
    assert list(fit.coefficients["term"]) == ["Intercept", "a", "b", "a:b"]
    np.testing.assert_allclose(fit.coefficients["coef"], ref.params, rtol=1e-10)
    np.testing.assert_allclose(fit.coefficients["std_err"], ref.bse, rtol=1e-8)
    np.testing.assert_allclose(fit.coefficients["p_value"], ref.pvalues, rtol=1e-6, atol=1e-300)
    assert fit.r_squared == pytest.approx(ref.rsquared)
    assert fit.adj_r_squared == pytest.approx(ref.rsquared_adj)
    lstsq = np.linalg.lstsq(X, df["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(fit.coefficients["coef"], lstsq, rtol=1e-8)
    assert fit.coef("a:b") == pytest.approx(lstsq[3])
    assert fit.n == len(df)


def test_ols_exact_fit_recovers_coefficients():
    a = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
    b = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    df = pd.DataFrame({"a": a, "b": b, "y": 1 + 2 * a + 3 * b})
    fit = stats.ols(df, "y ~ a + b")
    np.testing.assert_allclose(fit.coefficients["coef"], [1, 2, 3], atol=1e-10)
    assert fit.r_squared == pytest.approx(1.0)


def test_ols_drops_missing_rows_and_refuses_too_few():
    df = _eq2_data(n=12)
    df.loc[[0, 3], "a"] = np.nan
    assert stats.ols(df, "y ~ a * b").n == 10
    with pytest.raises(ValueError, match="complete rows for 4 coefficients"):
        stats.ols(df.iloc[:6], "y ~ a * b")
    with pytest.raises(KeyError, match="'nope'"):
        stats.ols(df, "y ~ a * b").coef("nope")


# -- row-wise Spearman ---------------------------------------------------------------------
def test_rowwise_spearman_hand_cases():
    a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [1.0, np.nan, 2.0]])
    b = np.array([[3.0, 2.0, 1.0], [10.0, 20.0, 30.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    rho = stats.rowwise_spearman(a, b)
    assert rho[0] == -1.0 and rho[1] == 1.0
    assert np.isnan(rho[2]) and np.isnan(rho[3])  # constant row; NaN input


def test_rowwise_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties
    b = rng.random((50, 7))
    rho = stats.rowwise_spearman(a, b)
    for i in range(50):
        ref = scipy.stats.spearmanr(a[i], b[i]).statistic if np.ptp(a[i]) > 0 else np.nan
        np.testing.assert_allclose(rho[i], ref, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_rowwise_spearman_matches_pandas_corrwith():
    # the authors' released code: DataFrame.corrwith(method="spearman", axis=1)
    rng = np.random.default_rng(4)
    a, b = rng.random((30, 9)), rng.random((30, 9))
    ref = pd.DataFrame(a).corrwith(pd.DataFrame(b), method="spearman", axis=1).to_numpy()
    np.testing.assert_allclose(stats.rowwise_spearman(a, b), ref, rtol=1e-12)


def test_rowwise_spearman_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        stats.rowwise_spearman(np.zeros((2, 3)), np.zeros((3, 2)))
    assert stats.rowwise_spearman(np.zeros((0, 3)), np.zeros((0, 3))).shape == (0,)
    assert np.isnan(stats.rowwise_spearman(np.ones((2, 1)), np.ones((2, 1)))).all()


@SETTINGS
@given(
    st.integers(1, 8).flatmap(
        lambda n: st.integers(2, 8).flatmap(
            lambda k: st.tuples(
                hnp.arrays(
                    float, (n, k), elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
                ),
                hnp.arrays(float, (n, k), elements=st.floats(0, 1)),
            )
        )
    ),
    st.randoms(),
)
def test_rowwise_spearman_permutation_invariant_and_bounded(ab, rnd):
    a, b = ab
    n, k = a.shape
    rho = stats.rowwise_spearman(a, b)
    cols = np.array(rnd.sample(range(k), k))
    rows = np.array(rnd.sample(range(n), n))
    # exact (bitwise) equality: the sums are over integers
    np.testing.assert_array_equal(stats.rowwise_spearman(a[:, cols], b[:, cols]), rho)
    np.testing.assert_array_equal(stats.rowwise_spearman(a[rows], b[rows]), rho[rows])
    np.testing.assert_array_equal(stats.rowwise_spearman(b, a), rho)
    finite = rho[np.isfinite(rho)]
    assert ((finite >= -1) & (finite <= 1)).all()
    np.testing.assert_array_equal(stats.rowwise_spearman(a, a)[np.ptp(a, axis=1) > 0], 1.0)


def test_correlation_display_formats_r_and_rho():
    table = stats.correlation_table(
        pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [1.0, 3, 2, 5]}), [("a", "b")]
    )
    shown = stats.correlation_display(table.assign(method="m"))
    assert list(shown.columns) == ["method", "x", "y", "n", "pearson", "spearman"]
    assert shown["pearson"].iloc[0].startswith("r = ") and shown["spearman"].iloc[0].startswith(
        "ρ = 0.80 (P = "
    )


# -- least-squares line --------------------------------------------------------------------
def test_fit_line_by_hand_and_against_scipy():
    # y = 1 + 2x exactly, plus pairs with a NaN or an infinity that are left out
    line = stats.fit_line([0.0, 1.0, 2.0, np.nan, 3.0, 5.0], [1.0, 3.0, 5.0, 4.0, np.inf, 11.0])
    assert (line.slope, line.intercept) == pytest.approx((2.0, 1.0))
    np.testing.assert_array_equal(line.x, [0.0, 5.0])  # the finite x range
    np.testing.assert_allclose(line.y, [1.0, 11.0])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    ref = scipy.stats.linregress(x, y)
    line = stats.fit_line(x, y)
    assert (line.slope, line.intercept) == pytest.approx((ref.slope, ref.intercept))


def test_fit_line_undefined_is_none():
    assert stats.fit_line([1.0, np.nan], [2.0, 3.0]) is None  # one finite pair
    assert stats.fit_line([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) is None  # vertical: no slope
    with pytest.raises(ValueError, match="equal length"):
        stats.fit_line([1.0, 2.0], [1.0])


# -- IoU of label columns ------------------------------------------------------------------
def test_label_iou_by_hand():
    y = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 0, 0],
            [1, 1, 1, 0],
            [0, 1, 1, 0],
        ],
        dtype=np.int8,
    )
    iou = stats.label_iou(y)
    # A = {0,1,2}, B = {0,2,3}, C = {2,3}, D = {}
    assert iou[0, 1] == pytest.approx(2 / 4)  # A ∩ B = {0,2}, A ∪ B = {0,1,2,3}
    assert iou[0, 2] == pytest.approx(1 / 4)  # {2} / {0,1,2,3}
    assert iou[1, 2] == pytest.approx(2 / 3)  # {2,3} / {0,2,3}
    assert iou[0, 3] == 0.0 and np.isnan(iou[3, 3])  # D has no positive: only D with D is undefined
    np.testing.assert_array_equal(np.diag(iou)[:3], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(iou, iou.T)


def test_label_iou_matches_jaccard_and_does_not_overflow():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(1)
    y = (rng.random((300, 5)) < 0.7).astype(
        np.int8
    )  # over 127 shared positives: int8 would overflow
    iou = stats.label_iou(y)
    for a in range(5):
        for b in range(5):
            assert iou[a, b] == pytest.approx(jaccard_score(y[:, a], y[:, b]))
    with pytest.raises(ValueError, match="0/1"):
        stats.label_iou(y * 2)
    with pytest.raises(ValueError, match="2-D"):
        stats.label_iou(y[:, 0])
