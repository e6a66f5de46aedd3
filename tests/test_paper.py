"""prunecxr.paper: the published values as data, and this run's values computed from artifacts."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.formula.api as smf
from sklearn.metrics import average_precision_score

from prunecxr import artifacts, config, paper, paths, published, stages
from prunecxr.analysis import cooccurrence, forgetting, pies

CLASSES = [
    "No Finding",
    "Infiltration",
    "Effusion",
    "Mass",
    "Nodule",
    "Emphysema",
    "Fibrosis",
    "Hernia",
]
SPARSITIES = [0.0, 0.5, 0.9, 0.95]


def write_run(run: str, *, dataset: str = "nih-phantom", n_test: int = 80, seed: int = 0) -> None:
    """A small run with the artifacts of notebooks 01 and 03 (labels, probs, meta, metrics)."""
    rng = np.random.default_rng(seed)
    prev = np.array([0.3, 0.35, 0.3, 0.2, 0.15, 0.1, 0.08, 0.06])
    n = 200 + n_test
    y = (rng.random((n, len(CLASSES))) < prev).astype(np.int8)
    labels = pd.DataFrame(
        {
            "image_id": [f"im{i:04d}" for i in range(n)],
            "patient_id": "p",
            "split": ["train"] * 200 + ["test"] * n_test,
        }
    )
    for j, c in enumerate(CLASSES):
        labels[c] = y[:, j]
    rp = paths.run_paths(run)
    artifacts.write_parquet(rp.labels, labels)
    config.record_data(run, {"dataset": dataset, "synthetic": dataset == "nih-phantom"})
    yt = y[200:].astype(float)
    seeds = [0, 1, 2]
    probs = np.zeros((3, len(SPARSITIES), n_test, len(CLASSES)), np.float32)
    rows = []
    for i, s in enumerate(seeds):
        for k, sp in enumerate(SPARSITIES):
            signal = 3 * (1 - sp) * np.linspace(1.0, 0.3, len(CLASSES))
            logits = signal * (yt - 0.5) + rng.normal(size=yt.shape)
            probs[i, k] = 1 / (1 + np.exp(-logits))
            for j, c in enumerate(CLASSES):
                rows.append(
                    (
                        s,
                        sp,
                        c,
                        average_precision_score(yt[:, j], probs[i, k, :, j]),
                        0.5,
                        int(yt[:, j].sum()),
                    )
                )
    artifacts.save_npy(rp.probs("global_l1"), probs)
    artifacts.write_json(
        rp.prune_meta("global_l1"),
        {"method": "global_l1", "seeds": seeds, "sparsities": SPARSITIES, "classes": CLASSES},
    )
    artifacts.write_parquet(
        rp.metrics("global_l1"),
        pd.DataFrame(rows, columns=["seed", "sparsity", "class", "ap", "auroc", "n_pos"]),
    )


def run_analyses(run: str, **kw) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        forgetting.run_stage(run, drop_threshold=kw.get("drop_threshold", 0.2))
        cooccurrence.run_stage(run)
        pies.run_stage(run, fraction=0.1)


# -- the published values ------------------------------------------------------------------
BRIEF = [
    ("first_significant_drop", published.NIH, 0.65),
    ("first_significant_drop", published.MIMIC, 0.60),
    ("rho_freq_first_drop", published.NIH, 0.61),
    ("rho_freq_first_drop", published.MIMIC, 0.93),
    ("rho_freq_change_095", published.NIH, 0.75),
    ("rho_freq_change_095", published.MIMIC, 0.75),
    ("rho_fcd_freq_diff", published.NIH, 0.64),
    ("rho_fcd_iou", published.NIH, -0.47),
    ("eq2_intercept", published.NIH, 0.27),
    ("eq2_abs_log_freq_diff", published.NIH, 0.21),
    ("eq2_iou_quarter", published.NIH, -0.05),
    ("eq2_interaction", published.NIH, -0.31),
    ("eq2_interaction_p", published.NIH, 0.005),
    ("pie_rarest_ratio_min", published.NIH, 3.0),
    ("pie_rarest_ratio_max", published.NIH, 15.0),
    ("pie_4plus_ratio", published.NIH, 3.2),
]


@pytest.mark.parametrize("key, dataset, value", BRIEF)
def test_published_values_are_data_with_sources(key, dataset, value):
    assert paper.published_value(key, dataset) == value
    row = published.PUBLISHED[
        (published.PUBLISHED["key"] == key) & (published.PUBLISHED["dataset"] == dataset)
    ]
    assert row["source"].iloc[0].strip()
    assert row["kind"].iloc[0] in published.KINDS


def test_published_table_is_consistent():
    assert not published.PUBLISHED.duplicated(["key", "dataset"]).any()
    assert set(published.PUBLISHED["dataset"]) == {published.NIH, published.MIMIC}
    with pytest.raises(KeyError, match="published for"):
        paper.published_value("rho_fcd_iou", published.MIMIC)
    assert set(sum(paper.SECTIONS.values(), [])) == set(published.PUBLISHED["key"])


# -- this run's values ---------------------------------------------------------------------
def test_this_run_values_equal_direct_computations():
    write_run("full")
    run_analyses("full")
    values = paper.comparison_values("full").set_index("key")
    assert list(paper.comparison_values("full").columns) == paper.VALUE_COLUMNS
    from prunecxr.analysis import overall

    metrics = artifacts.read_metrics("full", "global_l1")
    assert values.loc["first_significant_drop", "this_run_value"] == pytest.approx(
        overall.first_significant_drop(overall.overall_table(metrics)), nan_ok=True
    )

    summary = pd.read_parquet(paths.run_paths("full").class_summary("global_l1"))
    logf = np.log(summary["train_count"].to_numpy(float))
    keep = summary["first_drop"].notna().to_numpy()
    assert keep.sum() >= 3  # the fixture's classes do drop 20%
    assert values.loc["rho_freq_first_drop", "this_run_value"] == pytest.approx(
        scipy.stats.spearmanr(logf[keep], summary["first_drop"][keep]).statistic
    )
    assert values.loc["r_freq_change_095", "this_run_value"] == pytest.approx(
        scipy.stats.pearsonr(logf, summary["rel_change_at_095"]).statistic
    )

    pairs = pd.read_parquet(paths.run_paths("full").pairs("global_l1"))
    fit = smf.ols("fcd ~ abs_log_freq_diff * iou_quarter", data=pairs).fit()
    assert values.loc["eq2_interaction", "this_run_value"] == pytest.approx(
        fit.params["abs_log_freq_diff:iou_quarter"]
    )
    assert values.loc["eq2_interaction_p", "this_run_value"] == pytest.approx(
        fit.pvalues["abs_log_freq_diff:iou_quarter"]
    )
    assert values.loc["rho_fcd_iou", "this_run_value"] == pytest.approx(
        scipy.stats.spearmanr(pairs["iou"], pairs["fcd"]).statistic
    )

    table = pd.read_parquet(paths.run_paths("full").pies("global_l1"))
    labels = pd.read_parquet(paths.run_paths("full").labels)
    test = labels[labels["split"] == "test"].merge(table, on="image_id")
    n_find = test[CLASSES[1:]].sum(axis=1)
    four = n_find >= 4
    share = lambda mask, grp: (mask & grp).sum() / grp.sum()  # noqa: E731
    expected = (
        share(four, test["is_pie"]) / share(four, ~test["is_pie"])
        if (four & ~test["is_pie"]).any()
        else np.nan
    )
    assert values.loc["pie_4plus_ratio", "this_run_value"] == pytest.approx(expected, nan_ok=True)
    counts = labels[labels["split"] == "train"][CLASSES].sum().sort_values(kind="mergesort")
    rare = list(counts.index[:5])
    ratios = [
        share(test[c] == 1, test["is_pie"]) / share(test[c] == 1, ~test["is_pie"])
        for c in rare
        if (test[c].astype(bool) & ~test["is_pie"]).any()
    ]
    assert values.loc["pie_rarest_ratio_max", "this_run_value"] == pytest.approx(max(ratios))

    assert values["this_run_data"].str.contains("PHANTOM").all()
    assert (values["published_dataset"] == published.NIH).all()
    assert "pie_fraction = 0.1 here, 0.05 in the paper" in values.loc["pie_4plus_ratio", "note"]
    assert "15 NIH ChestX-ray14" in paper.caption("full")


def test_missing_stages_give_nan_with_the_notebook_to_run():
    write_run("partial")
    values = paper.comparison_values("partial").set_index("key")
    assert (
        np.isfinite(values.loc["first_significant_drop", "this_run_value"])
        or "significant" in values.loc["first_significant_drop", "note"]
    )
    for key, nb in [
        ("rho_freq_first_drop", "04_class_forgetting"),
        ("eq2_intercept", "05_cooccurrence"),
        ("pie_4plus_ratio", "06_pies"),
    ]:
        assert np.isnan(values.loc[key, "this_run_value"])
        assert f"run notebook {nb}" in values.loc[key, "note"]
    with pytest.raises(FileNotFoundError, match="03_prune"):
        paper.comparison_values("no-such-run")


def test_mimic_run_compares_with_mimic_values_where_published():
    write_run("mimic", dataset="mimic-cxr-lt", seed=1)
    run_analyses("mimic", drop_threshold=0.3)
    values = paper.comparison_values("mimic").set_index("key")
    assert values.loc["first_significant_drop", "published_value"] == 0.60
    assert values.loc["rho_freq_first_drop", "published_dataset"] == published.MIMIC
    assert values.loc["eq2_intercept", "published_dataset"] == published.NIH
    assert "published for NIH-CXR-LT only" in values.loc["eq2_intercept", "note"]
    assert (
        "drop_threshold = 0.3 here, 0.2 in the paper" in values.loc["rho_freq_first_drop", "note"]
    )
    assert not values["this_run_data"].str.contains("PHANTOM").any()
    assert paper.caption("mimic").startswith("Published values (MIMIC-CXR-LT")


def test_comparison_table_is_formatted_text():
    write_run("fmt")
    run_analyses("fmt")
    table = paper.comparison_table("fmt")
    assert list(table.columns) == [
        "quantity",
        "published",
        "published_dataset",
        "this_run",
        "this_run_interval",
        "verdict",
        "this_run_data",
        "source",
        "note",
    ]
    pub = dict(zip(paper.comparison_values("fmt")["key"], table["published"]))
    assert pub["first_significant_drop"] == "65%"
    assert pub["rho_fcd_iou"] == "-0.47"
    assert pub["eq2_interaction_p"] == "0.005"
    assert pub["pie_4plus_ratio"] == "3.2×"
    assert all(isinstance(v, str) for v in table["this_run"])
    part = paper.comparison_table("fmt", keys=paper.SECTIONS["06_pies"])
    assert len(part) == 3
    with pytest.raises(KeyError, match="unknown keys"):
        paper.comparison_table("fmt", keys=["nope"])
    assert paper.format_value(0.0004, "p") == "P < 0.001"
    with pytest.raises(ValueError, match="unknown kind"):
        paper.format_value(1.0, "percent")


def test_report_shows_the_table():
    from prunecxr import report

    write_run("rep")
    run_analyses("rep")
    df, why = report.paper_table("rep")
    assert why == "" and len(df) == published.PUBLISHED["key"].nunique()


# -- the notebooks of this part (static: executing them is the runner's end-to-end test) -----
NOTEBOOKS = ["04_class_forgetting", "05_cooccurrence", "06_pies"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_follows_the_conventions(name):
    import ast
    import io as _io
    import re
    import tokenize

    import nbformat

    path = paths.notebooks_dir() / f"{name}.ipynb"
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    assert book.nbformat == 4 and book.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs are stored"
    # parameters: literals, defaults equal to the default profile, every key in every profile
    nb = stages.read_notebook(path)
    profiles = config.profiles()
    for key, param in nb.parameters.items():
        for profile, values in profiles.items():
            assert key in values, f"{key!r} of {name} is missing from profile {profile!r}"
        if key != "run":
            assert param.default == profiles["default"][key], key
    assert nb.parameters["run"].default == "default"
    # the second cell starts the stage; the last finishes it
    setup = code[1].source
    for needle in (
        "import prunecxr as px",
        "px.figures.setup_notebook()",
        f'px.start_stage("{name}", globals())',
        "display(px.figures.banner(run))",
    ):
        assert needle in setup
    assert code[-1].source.strip() == f'px.finish_stage("{name}", run=run)'
    assert sum("px.figures.png_status()" in c.source for c in code) == 1
    # thin: no def/class/loops, and no number typed by hand in code or prose
    for cell in code[1:]:
        tree = ast.parse(cell.source)
        banned = (
            ast.FunctionDef,
            ast.ClassDef,
            ast.For,
            ast.While,
            ast.Lambda,
            ast.ListComp,
            ast.DictComp,
        )
        assert not [n for n in ast.walk(tree) if isinstance(n, banned)], cell.source
        numbers = [
            t.string
            for t in tokenize.generate_tokens(_io.StringIO(cell.source).readline)
            if t.type == tokenize.NUMBER
        ]
        assert not numbers, f"number typed into {name}: {numbers} in {cell.source!r}"
    for cell in book.cells:
        if cell.cell_type == "markdown":
            assert not re.search(r"\d+\.\d+|\d\s*%|[=<>]\s*-?\d", cell.source), cell.source
    # every markdown step comes before its code (no two code cells without prose between, but short runs ok)
    kinds = [c.cell_type for c in book.cells]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 5


def test_verdict_from_the_interval():
    assert paper.verdict(0.6, 0.4, 0.8, "corr") == paper.INSIDE
    assert paper.verdict(0.9, 0.4, 0.8, "corr") == paper.SAME_SIDE  # same direction, another size
    assert paper.verdict(0.6, -0.2, 0.5, "corr") == paper.NEITHER  # the interval reaches 0
    assert paper.verdict(-0.3, 0.1, 0.5, "coef") == paper.NEITHER  # opposite sign
    assert paper.verdict(15.0, 2.0, 9.0, "ratio") == paper.SAME_SIDE  # both above 1
    assert paper.verdict(0.65, 0.7, 0.9, "sparsity") == paper.NEITHER  # no sign for a sparsity
    assert paper.verdict(0.005, np.nan, np.nan, "p") == paper.NO_INTERVAL
    assert paper.format_interval(0.9, np.inf, "sparsity", "seeds") == "[90%, none] (seeds)"
    assert paper.format_interval(np.nan, np.nan, "corr") == "—"


def test_comparison_table_shows_the_widest_interval_and_its_verdict(tmp_path):
    run = "verdicts"
    write_run(run)
    method = "global_l1"
    intervals = pd.DataFrame(
        {
            "quantity": ["rho_fcd_iou", "rho_fcd_iou", "rho_fcd_iou"],
            "subset": ["all", "all", "learned"],
            "estimate": [-0.2] * 3,
            "resampling": ["seeds", "classes", "classes"],
            "interval": ["BCa"] * 3,
            "n_resamples": [100] * 3,
            "confidence": [0.95] * 3,
            "ci_low": [-0.3, -0.6, -0.9],
            "ci_high": [-0.1, 0.2, 0.9],
            "n": [10] * 3,
            "note": [""] * 3,
        }
    )
    artifacts.write_intervals(run, method, "cooccurrence", intervals)
    values = paper.comparison_values(run, method=method).set_index("key")
    row = values.loc["rho_fcd_iou"]
    assert (row["ci_low"], row["ci_high"]) == (-0.6, 0.2)  # the widest of subset "all"
    assert row["verdict"] == paper.INSIDE and "classes" in row["interval"]
    assert values.loc["rho_fcd_freq_diff", "verdict"] == paper.NO_INTERVAL
    table = paper.comparison_table(run, method=method)
    assert {"this_run_interval", "verdict"} <= set(table.columns)
