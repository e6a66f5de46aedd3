"""The whole pipeline: every notebook through the runner's CLI on the smoke profile.

Checks every artifact of docs/artifacts.md for the smoke run, the figures (HTML + CSV, and PNG
where a Chrome exists), the executed notebooks and their offline HTML exports, the run
record, the timings and the report index. The wall time is printed, never asserted (machines
are noisy); benchmarks and the README report it. The run itself is the session fixture
``smoke_run`` of conftest.py (test_reproducible.py compares its own run with it); the check of
every file against docs/artifacts.md uses test_artifacts_contract.py's checker.
"""

import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from conftest import without_png
from prunecxr import artifacts, config, console, figures, fmt, paths, provenance, report

NOTEBOOKS = [
    "01_data",
    "02_train",
    "03_prune",
    "04_class_forgetting",
    "05_cooccurrence",
    "06_pies",
    "07_reader_study",
    "08_compression",
    "09_attend",
    "10_controlled",
]
PROFILE = config.load_profile("smoke")
RUN = PROFILE["run"]


@pytest.fixture
def rp(smoke_run, monkeypatch):
    monkeypatch.setenv("PRUNECXR_HOME", str(smoke_run["home"]))
    return paths.run_paths(RUN)


pytestmark = pytest.mark.slow


def test_every_notebook_timed(smoke_run, rp):
    timings = artifacts.read_json(rp.reports / "timings.json")
    assert {k: v["status"] for k, v in timings.items()} == dict.fromkeys(NOTEBOOKS, "ok")
    total = sum(v["seconds"] for v in timings.values())
    per_notebook = {k: v["seconds"] for k, v in timings.items()}
    print(
        f"\nsmoke run: {smoke_run['elapsed']:.1f} s wall, notebooks {total:.1f} s: {per_notebook}"
    )
    assert all(seconds > 0 for seconds in per_notebook.values())


def test_console_is_quiet_and_shows_progress(smoke_run, rp):
    """No kernel transport warning, no library warning; a progress line every 10 s of a long
    notebook (the captured output is not a terminal)."""
    out, err = smoke_run["stdout"], smoke_run["stderr"]
    assert "without encryption" not in out + err
    assert "warning" not in (out + err).lower(), out + err
    assert err.strip() == "", err
    timings = artifacts.read_json(rp.reports / "timings.json")
    for i, name in enumerate(NOTEBOOKS, 1):
        lines = [
            line
            for line in out.splitlines()
            if line.startswith(f"[{i}/{len(NOTEBOOKS)}] {name} · ")
        ]
        if timings[name]["seconds"] > console.LOG_INTERVAL + 2:
            assert lines and all(" elapsed" in line for line in lines), (name, out)


def test_figures_carry_provenance(rp):
    for html in rp.figures.glob("*.html"):
        record = provenance.read(html)
        assert record["run"] == RUN and record["notebook"] in NOTEBOOKS, html.name
        assert record["cell"] is not None and record["inputs"], html.name
        assert (
            record["parameters"] == config.read_run(RUN)["stages"][record["notebook"]]["parameters"]
        )
        assert (
            provenance.read(rp.figures / f"{html.stem}.csv")["parameters_sha256"]
            == record["parameters_sha256"]
        )
    record = provenance.read(rp.figures / "fig3_frequency.html")
    cells = nbformat.read(paths.notebooks_dir() / "04_class_forgetting.ipynb", as_version=4).cells
    assert '"fig3_frequency"' in cells[record["cell"]].source
    assert any(i["path"] == f"runs/{RUN}/prune/global_l1/metrics.parquet" for i in record["inputs"])
    text, stale = provenance.describe(rp.figures / "fig3_frequency.html")
    assert not stale and "up to date" in text
    index = (rp.reports / "index.html").read_text(encoding="utf-8")
    assert index.count('<p class="provenance"') == len(list(rp.figures.glob("*.html")))


def test_run_record(rp):
    record = config.read_run(RUN)
    assert record["profile"] == "smoke"
    for (
        key,
        value,
    ) in PROFILE.items():  # every stage's parameters, the run name and the runner's key aside
        if key not in ("run", config.NOTEBOOKS_KEY):
            assert record["parameters"][key] == value, key
    assert record["data"]["dataset"] == PROFILE["dataset"] and record["data"]["synthetic"] is True
    assert "running" not in record and "failed" not in record
    for name in NOTEBOOKS:
        stage = record["stages"][name]
        assert stage["finished"] and stage["finished"] >= stage["started"], name


def test_data_and_models(rp):
    labels = pd.read_parquet(rp.labels)
    assert list(labels.columns[:3]) == ["image_id", "patient_id", "split"]
    assert set(labels["split"]) == {"train", "val", "test"}
    classes = list(labels.columns[3:])
    assert classes and all(labels[c].dtype == np.int8 for c in classes)
    seeds = sorted(p.name for p in rp.models.glob("seed-*"))
    assert len(seeds) == PROFILE["n_seeds"], seeds
    for seed_dir in rp.models.glob("seed-*"):
        seed = int(seed_dir.name.split("-")[1])
        assert rp.checkpoint(seed).exists()
        history = pd.read_csv(rp.history(seed))
        assert list(history.columns[:5]) == [
            "epoch",
            "train_loss",
            "val_loss",
            "val_mean_ap",
            "seconds",
        ]
        assert 1 <= len(history) <= PROFILE["max_epochs"]


@pytest.mark.parametrize("method", PROFILE["methods"])
def test_pruning_artifacts(rp, method):
    labels = pd.read_parquet(rp.labels)
    n_test = int((labels["split"] == "test").sum())
    meta = artifacts.read_json(rp.prune_meta(method))
    assert meta["method"] == method
    assert len(meta["seeds"]) == PROFILE["n_seeds"]
    assert meta["sparsities"] == PROFILE["sparsities"]
    assert meta["classes"] == list(labels.columns[3:])
    probs = artifacts.load_npy(rp.probs(method), mmap=True)
    assert probs.shape == (
        PROFILE["n_seeds"],
        len(PROFILE["sparsities"]),
        n_test,
        len(meta["classes"]),
    )
    assert probs.dtype in (np.float32, np.float16)
    metrics = pd.read_parquet(rp.metrics(method))
    assert {"seed", "sparsity", "class", "ap", "auroc", "n_pos"} <= set(metrics.columns)
    assert len(metrics) == PROFILE["n_seeds"] * len(PROFILE["sparsities"]) * len(meta["classes"])


@pytest.mark.parametrize("method", PROFILE["methods"])
def test_analysis_artifacts(rp, method):
    expected = {
        rp.forgettability(method): {"class", "sparsity", "median_rel_ap_change"},
        rp.class_summary(method): {
            "class",
            "train_count",
            "test_count",
            "first_drop",
            "rel_change_at_095",
        },
        rp.pairs(method): {"class_a", "class_b", "fcd", "abs_log_freq_diff", "iou", "iou_quarter"},
        rp.pies(method): {"image_id", "spearman", "is_pie"},
    }
    for path, columns in expected.items():
        assert path.exists(), f"{path.relative_to(rp.root)} missing"
        df = pd.read_parquet(path)
        assert columns <= set(df.columns), f"{path.name}: lacks {columns - set(df.columns)}"
        assert len(df) > 0, path


def test_reader_study(rp):
    files = [p for p in rp.reader_study.rglob("*") if p.is_file()]
    assert files, "reader_study/ is empty"


def test_figures(rp):
    saved = sorted(p.stem for p in rp.figures.glob("*.html"))
    for n in range(1, 7):
        assert any(name.startswith(f"fig{n}_") for name in saved), f"no fig{n}_* in {saved}"
    png = figures.chrome_path() is not None
    for name in saved:
        assert (rp.figures / f"{name}.csv").exists(), f"{name}.csv missing"
        if png:
            assert (rp.figures / f"{name}.png").stat().st_size > 0, f"{name}.png missing"
    assert (rp.figures / "plotly.min.js").exists()  # the figures' HTML opens offline


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_executed_notebook_and_export(rp, name):
    executed = nbformat.read(rp.reports / f"{name}.ipynb", as_version=4)
    errors = [
        o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    assert executed.metadata["papermill"]["parameters"]["run"] == RUN
    assert not (rp.reports / f"{name}.failed.ipynb").exists()
    html = (rp.reports / f"{name}.html").read_text(encoding="utf-8")
    assert report.external_resources(html) == [], f"{name}.html fetches from the network"
    assert 'class="prunecxr-code' in html


def test_report_index(rp):
    text = (rp.reports / "index.html").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f'data-notebook="{name}"' in text and f'href="{name}.html"' in text
    assert config.PHANTOM_NOTICE in text
    assert "profile <b>smoke</b>" in text
    section = text[text.index('id="paper"') : text.index('id="figures"')]
    assert "<table" in section, f"no paper-versus-run table: {re.sub('<[^>]+>', ' ', section)}"
    key = [p.stem for p in rp.figures.glob("fig*.html")]
    for name in key:
        assert f'data-figure="{name}"' in text, name
    assert text.count("plotly.js v") == 1
    assert report.external_resources(text) == []
    assert "<img" not in text or all(
        m.startswith('<img class="figure-png"') for m in re.findall(r"<img[^>]*>", text)
    )


@pytest.mark.parametrize("method", PROFILE["compression_methods"])
def test_compression_artifacts(rp, method):
    """Notebook 08: every method beyond pruning has a store on its own level axis, its scores
    and its forgettability tables."""
    from prunecxr import compress

    entry = compress.METHODS[method]
    meta = artifacts.read_meta(RUN, method)
    axis_levels = {"bits": PROFILE["bits"], "channel_fraction": PROFILE["channel_fractions"]}
    assert meta["level_name"] == entry.level_name
    assert meta["levels"] == entry.levels(axis_levels[entry.level_name])
    assert meta["recover"] == PROFILE["recover"]
    probs = artifacts.load_npy(rp.probs(method), mmap=True)
    assert probs.shape[:2] == (PROFILE["n_seeds"], len(meta["levels"]))
    metrics = artifacts.read_metrics(RUN, method)
    assert entry.level_name in metrics.columns and "sparsity" not in metrics.columns
    curves = artifacts.read_forgettability(RUN, method)
    assert sorted(curves[entry.level_name].unique()) == sorted(meta["levels"])


def test_deployment_table(rp):
    table = artifacts.read_deployment(RUN)
    methods = [*PROFILE["methods"], *PROFILE["compression_methods"]]
    assert set(table["method"]) == set(methods)
    n_levels = sum(len(artifacts.read_meta(RUN, m)["levels"]) for m in methods)
    assert len(table) == n_levels
    assert (table["latency_b1_ms"] > 0).all() and (table["size_bytes"] > 0).all()
    dense = table.groupby("method").head(1)
    assert (dense["rel_size_bytes"] == 0).all() and (dense["rel_tail_ap"].fillna(0) == 0).all()
    channel = table[table["method"] == "channel_l1"]
    assert (
        channel["parameters"].is_monotonic_decreasing
        and channel["macs"].iloc[-1] < channel["macs"].iloc[0]
    )
    pruned = table[table["method"] == "global_l1"]
    assert pruned["macs"].nunique() == 1  # unstructured zeros are still multiplied
    assert (rp.figures / "compression_tradeoff.html").exists() and (
        rp.figures / "compression_tradeoff.csv"
    ).exists()


def test_notebooks_04_to_06_on_a_weight_quant_store(smoke_run, tmp_path):
    """The analysis notebooks on a run whose only store is weight_quant's (levels in bits),
    drawn as the paper's figures: curves, FCD and compression-identified exemplars."""
    import os
    import shutil
    import subprocess
    import sys

    home = tmp_path / "home"
    shutil.copytree(smoke_run["home"] / "runs" / RUN, home / "runs" / RUN)
    shutil.copytree(smoke_run["home"] / "cache", home / "cache")
    for folder in (home / "runs" / RUN / "prune").iterdir():
        if folder.name != "weight_quant":
            shutil.rmtree(folder)
    shutil.rmtree(home / "runs" / RUN / "analysis")
    env = without_png(dict(os.environ, PRUNECXR_HOME=str(home), PRUNECXR_CACHE=str(home / "cache")))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prunecxr",
            "run",
            "--profile",
            "smoke",
            "--notebooks",
            "04-06",
            "--no-report",
            "-p",
            "method=weight_quant",
        ],
        cwd=paths.project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    rq = paths.RunPaths(RUN, home)
    assert "bits" in pd.read_parquet(rq.forgettability("weight_quant")).columns
    assert "rel_change_at_extreme" in pd.read_parquet(rq.class_summary("weight_quant")).columns
    assert pd.read_parquet(rq.pairs("weight_quant"))["fcd"].notna().any()
    pies_table = pd.read_parquet(rq.pies("weight_quant"))
    assert {"dense_bits", "pie_bits"} <= set(pies_table.columns) and pies_table["is_pie"].any()
    for name in ("fig2_forgettability", "fig3_frequency", "fig4_cooccurrence", "fig5_pies"):
        assert (rq.figures / f"{name}.html").exists(), name


def test_class_counts_beside_table_2(rp):
    """Notebook 01's and the report's class-count table: the paper's Table 2 beside the run."""
    from prunecxr import paper
    from prunecxr.data import reference

    table = paper.class_count_table(RUN).set_index("class")
    labels = pd.read_parquet(rp.labels)
    table2 = reference.class_counts("nih-cxr-lt")
    assert list(table.index[:-1]) == list(table2.index) and table.index[-1] == "all images"
    for split in ("train", "val", "test"):
        assert (table.loc[table2.index, f"paper_{split}"] == table2[split]).all()
        assert (
            table.loc["Hernia", f"run_{split}"]
            == labels.loc[labels["split"] == split, "Hernia"].sum()
        )
        assert table.loc["all images", f"run_{split}"] == (labels["split"] == split).sum()
    for added in paper.NIH_ADDED_FINDINGS:
        assert (
            np.isnan(table.loc[added, "run_train"])
            and table.loc[added, "note"] == "not a class of this run"
        )
    assert "clears No Finding" in table.loc["No Finding", "note"]
    assert table.loc["all images", "note"].startswith("a subsample of")  # smoke keeps 200 patients
    shown = paper.class_count_display(RUN)
    assert shown.loc[shown["class"] == "all images", "paper train"].item() == "78,506"
    assert "Images per class" in (rp.reports / "index.html").read_text()


def test_controlled_experiment_answers_from_both_runs(smoke_run, tmp_path, monkeypatch):
    """Notebook 10's comparison on two phantom runs of different conditions: the smoke run and
    a copy of it relabelled ``equal`` (same artifacts, so every value is the same on both
    sides); the answer quotes the correlations of forgetting.read_results."""
    import shutil

    from prunecxr import controlled
    from prunecxr.analysis import forgetting

    home = tmp_path / "home"
    shutil.copytree(smoke_run["home"] / "runs" / RUN, home / "runs" / RUN)
    shutil.copytree(smoke_run["home"] / "runs" / RUN, home / "runs" / "equal")
    monkeypatch.setenv("PRUNECXR_HOME", str(home))
    record = artifacts.read_json(paths.run_paths("equal").run_json)
    record["data"]["phantom_difficulty"]["condition"] = "equal"
    artifacts.write_json(paths.run_paths("equal").run_json, record)
    assert controlled.condition("equal") == "equal" and controlled.condition(RUN) == "calibrated"

    table = controlled.findings_table("equal", RUN)
    assert list(table["key"]) == list(controlled.FINDING_KEYS)
    same = table[f"calibrated ({RUN})"].fillna(-9) == table["equal (equal)"].fillna(-9)
    assert same.all()
    auroc = controlled.dense_auroc("equal", RUN)
    assert list(auroc["class"]) == artifacts.class_names(artifacts.read_labels(RUN))

    text = controlled.answer("equal", RUN)
    res = forgetting.read_results(RUN, "global_l1")
    change = res.correlations.set_index("y").loc[forgetting.change_column(res.summary)]
    assert fmt.num(change["spearman_rho"]) in text
    verdict = change["spearman_rho"] > 0 and change["spearman_p"] < controlled.ALPHA
    assert ("frequency alone predicts forgetting" in text) == bool(verdict)
    assert "Neither run is of condition 'equal'" in controlled.answer(RUN, RUN)
    page = report.build_report("equal", export=False).read_text()  # the report's section
    assert "Two difficulty conditions" in page and fmt.num(change["spearman_rho"]) in page

    other = home / "runs" / "other"
    shutil.copytree(home / "runs" / RUN, other)
    labels = artifacts.read_labels("other")
    artifacts.write_labels("other", labels.iloc[1:])
    with pytest.raises(ValueError, match="different labels or splits"):
        controlled.check_runs("other", RUN)
    with pytest.raises(FileNotFoundError, match="run 'missing' does not exist"):
        controlled.check_runs("missing", RUN)


def test_attend_artifacts(rp):
    """Notebook 09: HTL sets of the documented size, every arm a run of its own, paired tables."""
    from prunecxr.analysis.pies import n_pies
    from prunecxr.attend import arm_run

    arms, n_seeds, fraction = (
        PROFILE["attend_arms"],
        PROFILE["attend_seeds"],
        PROFILE["htl_fraction"],
    )
    labels = pd.read_parquet(rp.labels)
    n_train = int((labels["split"] == "train").sum())
    htl = pd.read_parquet(rp.attend_table("htl"))
    posthoc = htl[htl["source"] == "posthoc"]
    assert len(posthoc) == n_train and int(posthoc["htl"].sum()) == n_pies(n_train, fraction)
    weighed = htl[htl["source"] != "posthoc"].groupby(["source", "seed", "epoch"])["htl"]
    assert set(weighed.sum()) == {n_pies(n_train, fraction)} and set(weighed.size()) == {n_train}
    for arm in arms:
        arm_rp = paths.run_paths(arm_run(RUN, arm))
        assert artifacts.trained_seeds(arm_run(RUN, arm)) == list(range(n_seeds))
        assert arm_rp.metrics(PROFILE["method"]).exists()
        assert artifacts.read_json(arm_rp.run_json)["attend"] == {"parent": RUN, "arm": arm}
    diff = pd.read_parquet(rp.attend_table("differences"))
    assert set(diff["arm"]) == set(arms) and set(diff["quantity"]) == {"ap", "pointing", "iou"}
    assert (diff["n_seeds"] == n_seeds).all()
    assert np.isfinite(
        diff.loc[(diff["class"] == "(all classes)") & (diff["quantity"] == "ap"), "p_value"]
    ).all()
    for name in ("attend_differences", "attend_localization", "attend_forgetting"):
        assert (rp.figures / f"{name}.csv").exists(), name
    loc = pd.read_parquet(rp.attend_table("localization"))
    assert set(loc["map"]) == {"cam"} and set(loc["boxes"]) == {"drawn"}  # small ResNets: exact CAM
    drawn = pd.read_parquet(rp.locations)
    drawn = drawn[(drawn["split"] == "test") & (drawn["pixels"] > 0)]
    side = PROFILE["resolution"]
    share = ((drawn["x1"] - drawn["x0"]) * (drawn["y1"] - drawn["y0"]) / side**2).mean()
    overall = loc[loc["class"] == "(all classes)"]
    assert np.allclose(overall["box_share"], share) and (overall["n_boxes"] == len(drawn)).all()
    # the report's section, from these files
    index = (rp.reports / "index.html").read_text(encoding="utf-8")
    section = index[index.index('id="attend"') :]
    assert "Each arm minus the dense models" in section and "(5 rarest)" in section
    assert "Fig. 3&#x27;s correlations" in section or "Fig. 3's correlations" in section
    assert "could not be read" not in section


# -- the contract of docs/artifacts.md, on this run (the checker: test_artifacts_contract.py) --
@pytest.mark.slow
def test_smoke_run_writes_only_documented_files_and_columns(smoke_run):
    from test_artifacts_contract import check_tree, read_contract, run_classes

    home = Path(smoke_run["home"])
    for top in ("runs", "figures", "reports", "cache"):
        assert any(p.is_file() for p in (home / top).rglob("*")), f"the smoke run wrote no {top}/"
    classes = run_classes(home)
    assert classes, "run.json records no classes"
    problems = check_tree(home, read_contract(), classes=classes)
    assert not problems, (
        "files, columns or keys of a smoke run that docs/artifacts.md does not document "
        "(document them, or stop writing them):\n  " + "\n  ".join(problems)
    )
