"""prunecxr.analysis.paired: Fig. 1's paired and sign-flip tests, multiplicity, first-drop stability."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from prunecxr.analysis import overall, paired


def metrics_from(mean_ap: np.ndarray, sparsities) -> pd.DataFrame:
    """A metrics table whose class-mean AP per (seed, sparsity) is ``mean_ap`` (two classes)."""
    rows = []
    for i in range(mean_ap.shape[0]):
        for k, s in enumerate(sparsities):
            for c, shift in (("a", -0.01), ("b", 0.01)):
                rows.append(
                    {
                        "seed": i,
                        "sparsity": s,
                        "class": c,
                        "ap": mean_ap[i, k] + shift,
                        "auroc": 0.8,
                        "n_pos": 5,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    sp = [0.0, 0.3, 0.6, 0.9]
    seed_effect = rng.normal(0.6, 0.05, (10, 1))  # large between-seed spread: the pairing matters
    drop = np.array([0.0, 0.002, 0.01, 0.1])
    mean_ap = seed_effect - drop + rng.normal(0, 0.001, (10, 4))
    return mean_ap, sp, metrics_from(mean_ap, sp)


def test_paired_table_equals_scipy_and_statsmodels(data):
    mean_ap, sp, metrics = data
    table = paired.paired_table(metrics, n_permutations=2000).set_index("sparsity")
    for k, s in enumerate(sp[1:], start=1):
        res = scipy.stats.ttest_rel(mean_ap[:, k], mean_ap[:, 0])
        ci = res.confidence_interval(0.95)
        d = mean_ap[:, k] - mean_ap[:, 0]
        row = table.loc[s]
        assert row["paired_p"] == pytest.approx(res.pvalue, rel=1e-9)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert row["mean_diff"] == pytest.approx(d.mean())
        assert row["effect_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
        exact = scipy.stats.permutation_test(
            (d,), np.mean, permutation_type="samples", n_resamples=np.inf
        )
        assert row["signflip_p"] == pytest.approx(exact.pvalue)
        assert bool(row["signflip_exact"])
        welch = scipy.stats.ttest_ind(mean_ap[:, k], mean_ap[:, 0], equal_var=False)
        assert row["welch_p"] == pytest.approx(welch.pvalue, rel=1e-9)
    for test in ("paired", "signflip", "welch"):
        p = table[f"{test}_p"].to_numpy()[1:]
        np.testing.assert_allclose(
            table[f"{test}_p_holm"].to_numpy()[1:], multipletests(p, method="holm")[1]
        )
        np.testing.assert_allclose(
            table[f"{test}_p_bh"].to_numpy()[1:], multipletests(p, method="fdr_bh")[1]
        )
    assert np.isnan(table.loc[0.0, "paired_p"])


def test_pairing_finds_what_welch_misses(data):
    _, _, metrics = data
    table = paired.paired_table(metrics)
    # a drop of 0.002 AP under a between-seed SD of 0.05: hidden to Welch even at a drop of 0.1,
    # plain to the paired test
    assert paired.first_significant(table, "paired") == 0.3
    assert np.isnan(paired.first_significant(table, "welch"))


def test_sign_flip_cannot_reach_the_papers_alpha_with_ten_seeds(data):
    _, _, metrics = data
    table = paired.paired_table(metrics)
    assert paired.min_signflip_p(10, 2000) == pytest.approx(2 / 1024)
    # every difference negative: the smallest possible P, which is above 0.001
    assert table["signflip_p"].iloc[-1] == pytest.approx(2 / 1024)
    assert np.isnan(paired.first_significant(table, "signflip"))
    assert paired.min_signflip_p(30, 999) == pytest.approx(1 / 1000)


def test_holm_rows_equals_statsmodels():
    p = np.random.default_rng(0).random((3, 7)) ** 4
    expected = np.stack([multipletests(row, method="holm")[1] for row in p])
    np.testing.assert_allclose(paired.holm_rows(p), expected)
    np.testing.assert_allclose(overall.holm(p[0]), expected[0])
    with_nan = np.array([np.nan, *p[1]])
    np.testing.assert_allclose(paired.adjust(with_nan, "holm")[1:], expected[1])
    assert np.isnan(paired.adjust(with_nan, "holm")[0])


def test_first_drop_stability_is_a_distribution(data):
    _, _, metrics = data
    stab = paired.first_drop_stability(metrics, n_resamples=300, seed=1)
    sums = stab.groupby(["test", "correction"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    # the paired test finds a drop in every draw; Welch, blind to the pairing, mostly none
    assert set(stab["sparsity"].dropna()) <= {0.3, 0.6, 0.9}
    assert stab[(stab["test"] == "paired") & stab["sparsity"].isna()].empty
    welch_none = stab[
        (stab["test"] == "welch") & (stab["correction"] == "none") & stab["sparsity"].isna()
    ]
    assert welch_none["share"].iloc[0] > 0.5
    again = paired.first_drop_stability(metrics, n_resamples=300, seed=1)
    pd.testing.assert_frame_equal(stab, again)
    lo, hi = paired.stability_interval(stab, test="paired")
    assert lo <= hi
    rows = paired.stability_rows(stab)
    assert set(rows["quantity"]) == {
        f"first_significant_drop[{t}, {c}]" for t in paired.TESTS for c in paired.CORRECTIONS
    }


def test_bad_options_are_named(data):
    _, _, metrics = data
    with pytest.raises(ValueError, match="confidence"):
        paired.paired_table(metrics, confidence=1.5)
    with pytest.raises(ValueError, match="unknown test"):
        paired.first_significant(paired.paired_table(metrics), "wilcoxon")
    with pytest.raises(ValueError, match="n_resamples"):
        paired.first_drop_stability(metrics, n_resamples=0)


def test_floor_sentence_tells_the_user(data):
    _, _, metrics = data
    text = paired.floor_sentence(paired.paired_table(metrics))
    assert "0.00195" in text and "never" in text
    assert "can reach" in paired.floor_sentence(paired.paired_table(metrics), alpha=0.05)
