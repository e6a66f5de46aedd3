"""prunecxr.analysis.pies: seed averaging, Spearman, PIE selection, Fig. 5 ratios and the gallery."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prunecxr import artifacts, config, figures, paths
from prunecxr.analysis import pies

SETTINGS = settings(max_examples=50, deadline=None)


# -- averaging and selection ---------------------------------------------------------------
def test_mean_probs_by_hand_and_errors():
    probs = np.zeros((2, 3, 1, 2), np.float32)
    probs[0, 2] = [[0.2, 0.4]]
    probs[1, 2] = [[0.4, 0.8]]
    np.testing.assert_allclose(
        pies.mean_probs(probs, [0.0, 0.5, 0.9], 0.9), [[0.3, 0.6]], rtol=1e-6
    )
    with pytest.raises(
        ValueError, match=r"pie_sparsity=0.8 is not among the run's sparsities \[0.0, 0.5, 0.9\]"
    ):
        pies.mean_probs(probs, [0.0, 0.5, 0.9], 0.8, name="pie_sparsity")
    with pytest.raises(ValueError, match="meta.json lists 2"):
        pies.mean_probs(probs, [0.0, 0.9], 0.9)


def test_select_pies_lowest_ties_by_id_nan_last():
    rho = [0.9, 0.1, np.nan, 0.1, 0.5, -0.2, 0.7, 0.8, 0.95, 0.99]
    ids = [f"im{i}" for i in range(10)]
    flags = pies.select_pies(rho, ids, fraction=0.3)  # int(0.3 * 10) = 3
    assert [ids[i] for i in np.flatnonzero(flags)] == ["im1", "im3", "im5"]
    flags = pies.select_pies(rho, ids, fraction=0.2)  # -0.2, then the tie 0.1/0.1 goes to "im1"
    assert [ids[i] for i in np.flatnonzero(flags)] == ["im1", "im5"]
    # NaN only when fewer finite correlations than PIEs
    flags = pies.select_pies([np.nan, 0.5, np.nan], ["b", "a", "c"], fraction=1.0)
    assert flags.all()
    flags = pies.select_pies([np.nan, 0.5, np.nan], ["b", "a", "c"], fraction=0.67)  # int(2.01) = 2
    assert list(flags) == [True, True, False]  # 0.5 first, then the NaN with the smaller id "b"
    with pytest.raises(ValueError, match="not unique"):
        pies.select_pies([0.1, 0.2], ["a", "a"], fraction=0.5)
    with pytest.raises(ValueError, match="pie_fraction"):
        pies.select_pies([0.1, 0.2], ["a", "b"], fraction=1.5)


@SETTINGS
@given(
    hnp.arrays(
        float,
        st.integers(0, 60),
        elements=st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 1.0, np.nan]), st.floats(-1, 1)),
    ),
    st.floats(0, 1),
    st.randoms(),
)
def test_select_pies_count_and_row_order(rho, fraction, rnd):
    ids = np.array([f"id{i:03d}" for i in range(rho.size)])
    flags = pies.select_pies(rho, ids, fraction=fraction)
    assert flags.sum() == int(fraction * rho.size)
    perm = np.array(rnd.sample(range(rho.size), rho.size), dtype=int)
    np.testing.assert_array_equal(
        pies.select_pies(rho[perm], ids[perm], fraction=fraction), flags[perm]
    )
    # every PIE ranks at or below every non-PIE (NaN counted as +inf)
    key = np.where(np.isnan(rho), np.inf, rho)
    if flags.any() and (~flags).any():
        assert key[flags].max() <= key[~flags].min()


def test_pie_table_matches_scipy_and_released_code():
    rng = np.random.default_rng(0)
    dense, pruned = rng.random((40, 6)), rng.random((40, 6))
    pruned[3] = 0.5  # constant: undefined
    with pytest.warns(UserWarning, match="1 test images have constant predictions"):
        table = pies.pie_table(dense, pruned, [f"x{i}" for i in range(40)], fraction=0.05)
    for i in (0, 7, 39):
        assert table["spearman"][i] == pytest.approx(
            scipy.stats.spearmanr(dense[i], pruned[i]).statistic
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        ref = pd.DataFrame(dense).corrwith(pd.DataFrame(pruned), method="spearman", axis=1)
    np.testing.assert_allclose(table["spearman"], ref, rtol=1e-12, equal_nan=True)
    assert table["is_pie"].sum() == 2 and not table["is_pie"][3]
    assert set(table.loc[table["is_pie"], "image_id"]) == set(
        table.assign(s=ref).dropna().nsmallest(2, "s")["image_id"]
    )


@SETTINGS
@given(st.integers(2, 7), st.integers(5, 30), st.randoms())
def test_pie_table_class_and_image_permutations(k, n, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**31))
    dense, pruned = rng.random((n, k)).round(1), rng.random((n, k)).round(1)  # ties
    ids = np.array([f"z{i}" for i in range(n)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        base = pies.pie_table(dense, pruned, ids, fraction=0.2)
        cols = np.array(rnd.sample(range(k), k))
        by_class = pies.pie_table(dense[:, cols], pruned[:, cols], ids, fraction=0.2)
        rows = np.array(rnd.sample(range(n), n))
        by_image = pies.pie_table(dense[rows], pruned[rows], ids[rows], fraction=0.2)
    pd.testing.assert_frame_equal(by_class, base)
    pd.testing.assert_frame_equal(by_image, base.iloc[rows].reset_index(drop=True))


# -- Fig. 5 ratios ---------------------------------------------------------------------------
CLASSES = ["No Finding", "A", "B", "C", "D", "E"]
TEST = pd.DataFrame(
    [
        # NF A  B  C  D  E
        [0, 1, 1, 1, 1, 0],  # 4 findings, PIE
        [0, 1, 0, 0, 0, 1],  # 2, PIE
        [1, 0, 0, 0, 0, 0],  # 0
        [0, 1, 0, 0, 0, 0],  # 1
        [0, 1, 1, 0, 0, 0],  # 2
        [1, 0, 0, 0, 0, 0],  # 0
        [0, 0, 1, 0, 0, 0],  # 1
        [0, 1, 0, 0, 0, 0],  # 1
    ],
    columns=CLASSES,
)
IS_PIE = np.array([True, True, False, False, False, False, False, False])


def test_class_ratios_by_hand():
    r = pies.class_ratios(TEST, IS_PIE, CLASSES, train_counts=[50, 40, 30, 20, 10, 5]).set_index(
        "class"
    )
    # A: 2/2 PIEs vs 3/6 non-PIEs -> 2.0 ; B: 1/2 vs 2/6 -> 1.5 ; C: 1/2 vs 0/6 -> undefined
    assert r.loc["A", "ratio"] == pytest.approx(2.0)
    assert r.loc["B", "ratio"] == pytest.approx(1.5)
    assert np.isnan(r.loc["C", "ratio"]) and np.isnan(r.loc["E", "ratio"])
    assert r.loc["No Finding", "ratio"] == 0.0
    assert list(r.index) == CLASSES  # commonest first
    lo, hi, rare = pies.rarest_ratio_range(r.reset_index(), n=3)
    assert rare == ["E", "D", "C"] and np.isnan(lo) and np.isnan(hi)
    lo, hi, rare = pies.rarest_ratio_range(r.reset_index(), n=5)
    assert (lo, hi) == (pytest.approx(1.5), pytest.approx(2.0))


def test_findings_ratios_by_hand_no_finding_not_counted_empty_bin():
    b = pies.findings_ratios(TEST, IS_PIE, CLASSES).set_index("n_findings")
    assert list(b.index) == list(pies.FINDING_BINS)
    np.testing.assert_array_equal(b["n_pie"], [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(b["n_non_pie"], [2, 3, 1, 0, 0])
    assert b.loc["2", "ratio"] == pytest.approx((1 / 2) / (1 / 6))
    assert np.isnan(b.loc["3", "ratio"])  # empty bin: NaN, shown empty
    assert np.isnan(b.loc["4+", "ratio"])  # no non-PIE with 4+: undefined
    np.testing.assert_array_equal(pies.n_findings(TEST, CLASSES), [4, 2, 0, 1, 2, 0, 1, 1])


def test_no_pie_gives_nan_ratios_and_figure_still_draws():
    none = np.zeros(len(TEST), bool)
    assert pies.class_ratios(TEST, none, CLASSES)["ratio"].isna().all()
    assert pies.findings_ratios(TEST, none, CLASSES)["ratio"].isna().all()
    with pytest.raises(ValueError, match="is_pie has shape"):
        pies.class_ratios(TEST, none[:3], CLASSES)


@pytest.mark.parametrize(
    "name, expected", [("No Finding", True), ("no_finding", True), ("Nodule", False)]
)
def test_is_no_finding(name, expected):
    assert pies.is_no_finding(name) is expected


# -- on a run directory --------------------------------------------------------------------
def write_run(run: str, *, dataset="nih-phantom", n_test=40, methods=("global_l1", "random")):
    rng = np.random.default_rng(1)
    classes = ["No Finding", "A", "B", "C", "D", "E", "F"]
    n = n_test + 30
    y = (rng.random((n, len(classes))) < [0.3, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05]).astype(np.int8)
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
    config.record_data(run, {"dataset": dataset, "synthetic": dataset == "nih-phantom"})
    sparsities = [0.0, 0.5, 0.9]
    for method in methods:
        probs = rng.random((3, 3, n_test, len(classes))).astype(np.float32)
        artifacts.save_npy(rp.probs(method), probs)
        artifacts.write_json(
            rp.prune_meta(method),
            {"method": method, "seeds": [0, 1, 2], "sparsities": sparsities, "classes": classes},
        )
    return labels


def test_run_stage_writes_pies_for_every_method():
    labels = write_run("p1")
    results = pies.run_stage("p1", dense_sparsity=0.0, pie_sparsity=0.9, fraction=0.1)
    assert list(results) == ["global_l1", "random"]
    table = pd.read_parquet(paths.run_paths("p1").pies("global_l1"))
    assert list(table.columns) == pies.PIE_COLUMNS
    assert list(table["image_id"]) == list(labels.loc[labels["split"] == "test", "image_id"])
    assert table["is_pie"].sum() == 4
    probs = artifacts.load_npy(paths.run_paths("p1").probs("global_l1"))
    rho = scipy.stats.spearmanr(probs[:, 0, 5].mean(0), probs[:, 2, 5].mean(0)).statistic
    assert table["spearman"][5] == pytest.approx(rho)
    ov = pies.overview(results)
    assert list(ov["n_pies"]) == [4, 4]
    fig, data = pies.figure_5(results["global_l1"])
    assert set(data["panel"]) == {"class", "n_findings"} and len(fig.data) == 2
    with pytest.raises(ValueError, match="both 0.9"):
        pies.analyze("p1", "global_l1", dense_sparsity=0.9, pie_sparsity=0.9)


def test_gallery_embeds_images_only_when_asked():
    write_run("p2")
    res = pies.analyze("p2", "global_l1", fraction=0.1)
    gallery = pies.gallery_table(res, size=3)
    assert len(gallery) == 3
    assert list(gallery["spearman"]) == sorted(gallery["spearman"])
    assert gallery["dense_top"].str.count(";").eq(pies.GALLERY_TOP - 1).all()
    images = [np.full((8, 8), 10 * k, np.uint8) for k in range(len(gallery))]
    with_img = pies.gallery_html(gallery, run="p2", images=images, pie_sparsity=0.9)
    assert with_img.count("data:image/png;base64,") == 3
    without = pies.gallery_html(gallery, run="p2", images=None, pie_sparsity=0.9)
    assert "<img" not in without and "not embedded" in without
    assert "PHANTOM" in without
    with pytest.raises(ValueError, match="gallery_size"):
        pies.gallery_table(res, size=-1)
    with pytest.raises(ValueError, match="2 images for 3 gallery rows"):
        pies.gallery_html(gallery, run="p2", images=images[:2], pie_sparsity=0.9)
    assert figures.png_base64(images[1]).startswith("iVBORw0KGgo")  # the PNG signature


def test_resolve_embed():
    write_run("p3")
    write_run("p4", dataset="nih-cxr-lt")
    assert config.resolve_embed("auto", run="p3") is True  # phantom: on
    assert config.resolve_embed("auto", run="p4") is False  # real data: off (data use agreement)
    assert config.resolve_embed("yes", run="p4") is True
    assert config.resolve_embed("no", run="p3") is False
    with pytest.raises(ValueError, match="unknown embed_images 'maybe'"):
        config.resolve_embed("maybe", run="p3")


def test_probs_and_labels_disagree():
    write_run("p5")
    rp = paths.run_paths("p5")
    artifacts.save_npy(rp.probs("global_l1"), np.zeros((3, 3, 39, 7), np.float32))
    with pytest.raises(ValueError, match="holds 39 test images; labels.parquet has 40"):
        pies.analyze("p5", "global_l1")


def test_analysis_imports_neither_torch_nor_compress():
    """The analysis notebooks read the sweep through prunecxr.artifacts, without a deep-learning stack."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, prunecxr.analysis, prunecxr.reader_study; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('prunecxr.compress')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "[]"
