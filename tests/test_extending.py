"""docs/extending.md: your method (an installed package's entry point, module:function), your
architecture (timm's ViT and ConvNeXt), your predictions (the interchange layout, through
notebooks 04-07 to a report), and the page's own examples, executed."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import without_png
from prunecxr import artifacts, compress, data, paths, train
from prunecxr.analysis import forgetting

EXAMPLE = paths.project_root() / "examples" / "blockprune"
DOC = paths.project_root() / "docs" / "extending.md"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A phantom run of 32 px images with one trained small ResNet (seed 0)."""
    home = tmp_path_factory.mktemp("ext_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNECXR_HOME", str(home))
        mp.setenv("PRUNECXR_CACHE", str(home / "cache"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes without positives in so few patients
            data.prepare_run("ext", dataset="nih-phantom", resolution=32, max_patients=60)
        train.train_population(
            "ext",
            seeds=1,
            model="small_resnet",
            pretrained=False,
            max_epochs=1,
            patience=1,
            batch_size=64,
            lr=1e-3,
            device="cpu",
            population="sequential",
            progress=False,
        )
    return home


@pytest.fixture
def in_run(tiny_run, monkeypatch):
    monkeypatch.setenv("PRUNECXR_HOME", str(tiny_run))
    monkeypatch.setenv("PRUNECXR_CACHE", str(tiny_run / "cache"))
    return tiny_run


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """examples/blockprune installed by pip (offline, no build isolation) into a folder of its own,
    which then goes on sys.path: its entry point is found there, and the venv is left as it was."""
    work = tmp_path_factory.mktemp("blockprune")
    shutil.copytree(EXAMPLE, work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(work / "src"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("prunecxr_blockprune")]:
        del sys.modules[name]
    for name in [n for n in compress.ORIGINS]:
        compress.METHODS.pop(name, None)
        compress.ORIGINS.pop(name)


# -- your method ---------------------------------------------------------------------------
def test_the_example_package_is_discovered_swept_and_analysed(installed_example, in_run):
    assert (installed_example / "prunecxr_blockprune-0.1.0.dist-info" / "entry_points.txt").exists()
    assert "blockwise_l1" in compress.available_methods()
    out = compress.run_sweep(
        "ext",
        methods=["global_l1", "blockwise_l1"],
        sparsities=[0.0, 0.5, 0.9],
        device="cpu",
        batch_size=64,
        threads=1,
        progress=False,
    )
    assert set(out) == {"global_l1", "blockwise_l1"}
    probs, meta = artifacts.read_store("ext", "blockwise_l1")
    assert meta["origin"] == (
        "entry point prunecxr.methods: blockwise_l1 = prunecxr_blockprune:method "
        "(prunecxr-blockprune 0.1.0)"
    )
    assert "origin" not in artifacts.read_meta(
        "ext", "global_l1"
    )  # the built-in methods' meta is unchanged
    g, _ = artifacts.read_store("ext", "global_l1")
    np.testing.assert_array_equal(probs[:, 0], g[:, 0])  # the dense level is the dense model
    assert not np.array_equal(probs[:, 2], g[:, 2])  # whole blocks go, not single weights

    model = compress.prune_model(_dense("ext"), 0.5, method="blockwise_l1")
    weights = [p.detach().reshape(-1).numpy() for _, p in compress.prunable_parameters(model)]
    assert 0.5 <= compress.pruned_set_sparsity(model) < 0.52
    blocks = np.concatenate([np.pad(w, (0, -len(w) % 4)).reshape(-1, 4) for w in weights])
    zero = blocks == 0
    assert (zero.all(axis=1) | ~zero.any(axis=1)).mean() > 0.99  # zeros come in blocks of 4

    # deterministic: a second sweep into a fresh store gives the same bits
    shutil.rmtree(paths.run_paths("ext").prune_dir("blockwise_l1"))
    compress.run_sweep(
        "ext",
        methods=["blockwise_l1"],
        sparsities=[0.0, 0.5, 0.9],
        device="cpu",
        batch_size=64,
        threads=1,
        progress=False,
    )
    np.testing.assert_array_equal(artifacts.read_store("ext", "blockwise_l1")[0], probs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compress.write_all_metrics("ext", ["global_l1", "blockwise_l1"])
        results = forgetting.run_stage("ext")
    assert set(results) == {"global_l1", "blockwise_l1"}
    assert results["blockwise_l1"].curves["sparsity"].unique().tolist() == [0.0, 0.5, 0.9]
    assert (
        "prunecxr-blockprune"
        in compress.store_summary("ext", ["blockwise_l1"])["description"].item()
    )


def _dense(run):
    from prunecxr import inference

    return inference.load_model(run, 0)


def test_a_method_by_module_function_and_its_refusals(in_run, tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(
        textwrap.dedent("""
        from prunecxr.compress import PruningMethod, methods

        def smallest_first():
            return PruningMethod("mine_l1", methods.METHODS["global_l1"].plan, "global L1, under another name")

        def clash():
            return PruningMethod("random", methods.METHODS["global_l1"].plan, "takes a built-in name")

        not_a_method = 3
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        out = compress.run_sweep(
            "ext",
            methods=["my_methods:smallest_first"],
            sparsities=[0.0, 0.5],
            device="cpu",
            batch_size=64,
            threads=1,
            progress=False,
        )
        assert list(out) == ["mine_l1"]
        meta = artifacts.read_meta("ext", "mine_l1")
        assert meta["origin"] == "module:function my_methods:smallest_first"
        assert compress.store_name("my_methods:smallest_first") == "mine_l1"
        assert (
            compress.methods.portable_name("mine_l1") == "my_methods:smallest_first"
        )  # what a Ray task loads
        for spec, match in [
            ("my_methods:clash", "names its method 'random', a built-in method's name"),
            (
                "my_methods:not_a_method",
                "gave a int; a method is a prunecxr.compress.PruningMethod",
            ),
            ("my_methods:missing", "cannot import 'missing' from 'my_methods'"),
            (
                "no_such_method",
                r"unknown method 'no_such_method'; choose one of .*'module:function'",
            ),
        ]:
            with pytest.raises(ValueError, match=match):
                compress.check_method(spec)
    finally:
        compress.METHODS.pop("mine_l1", None)
        compress.ORIGINS.pop("mine_l1", None)


# -- your architecture ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", ["timm/test_vit", "timm/test_convnext"]
)  # timm's tiny configurations
def test_timm_models_train_a_smoke_seed_and_are_pruned(model, tmp_path, monkeypatch):
    pytest.importorskip("timm")
    home = tmp_path / "home"
    monkeypatch.setenv("PRUNECXR_HOME", str(home))
    monkeypatch.setenv("PRUNECXR_CACHE", str(home / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.prepare_run("arch", dataset="nih-phantom", resolution=32, max_patients=40)
    train.train_population(
        "arch",
        seeds=1,
        model=model,
        pretrained=False,
        max_epochs=1,
        patience=1,
        batch_size=64,
        lr=1e-3,
        device="cpu",
        population="sequential",
        progress=False,
    )
    assert artifacts.read_train_record("arch")["config"]["model"] == model
    compress.run_sweep(
        "arch",
        methods=["global_l1"],
        sparsities=[0.0, 0.5, 0.9],
        device="cpu",
        batch_size=64,
        threads=1,
        progress=False,
    )
    probs, meta = artifacts.read_store("arch", "global_l1")
    assert probs.shape[:2] == (1, 3) and np.isfinite(probs).all()
    pruned = compress.prune_model(_dense("arch"), 0.9)
    n = sum(p.numel() for _, p in compress.prunable_parameters(pruned))
    assert round(compress.pruned_set_sparsity(pruned) * n) == compress.n_to_prune(
        0.9, n
    )  # round(s·n) weights
    if "vit" in model:
        with pytest.raises(compress.UnsupportedModel) as err:
            compress.run_sweep(
                "arch",
                methods=["channel_l1"],
                channel_fractions=[0.0, 0.5],
                device="cpu",
                progress=False,
            )
        message = str(err.value)
        assert "\n" not in message and message.startswith(
            "channel pruning cannot prune VisionTransformer: it has "
        )
        with pytest.raises(
            compress.UnsupportedModel,
            match=r"^int8_ptq cannot quantize VisionTransformer: torch.fx",
        ):
            compress.run_sweep(
                "arch", methods=["int8_ptq"], bits=[32, 8], device="cpu", progress=False
            )


# -- the page's examples -------------------------------------------------------------------
def page_blocks(text):
    """The ``python`` and ``bash`` blocks of docs/extending.md, in order: (language, code)."""
    return re.findall(r"^```(python|bash)\n(.*?)^```", text, flags=re.M | re.S)


def test_page_blocks_are_found():
    blocks = page_blocks(
        "text\n```python\nx = 1\n```\n```console\nnot run\n```\n```bash\necho 2\n```\n"
    )
    assert blocks == [("python", "x = 1\n"), ("bash", "echo 2\n")]


def test_the_pages_examples_run(tmp_path):
    """Every python and bash block of docs/extending.md, in order, in one folder (consecutive
    python blocks in one interpreter, each in a fresh namespace)."""
    blocks = page_blocks(DOC.read_text())
    assert len(blocks) >= 8
    lib = str(paths.project_root() / "lib")
    env = dict(
        os.environ,
        PRUNECXR_HOME=str(tmp_path / "home"),
        PRUNECXR_CACHE=str(tmp_path / "home" / "cache"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), lib, os.environ.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
    )
    steps = []  # (language, [(block number, code)])
    for i, (language, code) in enumerate(blocks):
        first = code.splitlines()[0]
        if language == "python" and re.fullmatch(r"# [\w.]+\.py", first):
            (tmp_path / first[2:]).write_text(code)
        elif steps and language == "python" == steps[-1][0]:
            steps[-1][1].append((i, code))
        else:
            steps.append((language, [(i, code)]))
    for language, group in steps:
        if language == "python":
            runner = "".join(
                f"exec(compile({code!r}, 'docs/extending.md block {i}', 'exec'), {{'__name__': '__main__'}})\n"
                for i, code in group
            )
            command = [sys.executable, "-c", runner]
        else:
            command = ["bash", "-e", "-c", group[0][1]]
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        shown = "\n".join(code for _, code in group)
        assert proc.returncode == 0, (
            f"{language}:\n{shown}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    store = tmp_path / "home" / "runs" / "mine" / "prune" / "my_model"
    assert (store / "metrics.parquet").exists()
    assert artifacts.read_json(store / "meta.json")["seeds"] == [0, 1, 2]


# -- done when: predictions of a model the project did not train, through notebooks 04-07 ---
def logistic_regression_predictions(folder):
    """scikit-learn's logistic regression per class on flattened 16 px phantom images; three
    seeds (bootstrap resamples of the training images), each compressed by coefficient
    magnitude pruning at three levels of its own. Writes labels.csv and predictions.parquet."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes without positives among so few patients
        data.prepare_run("pixels", dataset="nih-phantom", resolution=16, max_patients=150)
    table = artifacts.read_labels("pixels")
    classes = artifacts.class_names(table)
    train_split, test_split = data.open_split("pixels", "train"), data.open_split("pixels", "test")
    x_train = np.asarray(train_split.images, dtype=np.float64).reshape(len(train_split), -1) / 255
    x_test = np.asarray(test_split.images, dtype=np.float64).reshape(len(test_split), -1) / 255
    y_train = np.asarray(train_split.labels)
    test_ids = table.loc[table["split"] == "test", "image_id"].to_numpy()
    frames = []
    for seed in range(3):
        rows = np.random.default_rng(seed).integers(0, len(x_train), len(x_train))
        fits = []
        for j in range(len(classes)):
            y = y_train[rows, j]
            fits.append(
                LogisticRegression(C=1.0, max_iter=300).fit(x_train[rows], y)
                if 0 < y.sum() < len(y)
                else float(y.mean())
            )
        for level in (0.0, 0.5, 0.9):  # the fraction of each class's coefficients set to 0
            probs = np.empty((len(x_test), len(classes)))
            for j, fit in enumerate(fits):
                if isinstance(fit, float):
                    probs[:, j] = fit
                    continue
                coef = fit.coef_[0].copy()
                coef[np.argsort(np.abs(coef), kind="stable")[: round(level * coef.size)]] = 0
                probs[:, j] = 1 / (1 + np.exp(-(x_test @ coef + fit.intercept_[0])))
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed,
                        "level": level,
                        "image_id": np.repeat(test_ids, len(classes)),
                        "class": np.tile(classes, len(test_ids)),
                        "prob": probs.reshape(-1),
                    }
                )
            )
    pd.concat(frames, ignore_index=True).to_parquet(folder / "predictions.parquet", index=False)
    table.drop(columns="patient_id").to_csv(folder / "labels.csv", index=False)
    return classes


@pytest.mark.slow
def test_predictions_of_a_model_we_did_not_train_go_through_notebooks_04_to_07(
    tmp_path, monkeypatch
):
    classes = logistic_regression_predictions(tmp_path)
    home = tmp_path / "home"
    env = without_png(dict(os.environ, PRUNECXR_HOME=str(home), PRUNECXR_CACHE=str(home / "cache")))

    def cli(*args):
        proc = subprocess.run(
            [sys.executable, "-m", "prunecxr", *args],
            cwd=paths.project_root(),
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc

    # notebook 03 imports them (its parameters predictions and labels_file; the command line
    # `python -m prunecxr import` is run by the page's examples and test_interchange.py)
    cli(
        "run",
        "--profile",
        "smoke",
        "--run",
        "logreg",
        "--notebooks",
        "03-07",
        "-p",
        "method=logreg_coef_l1",
        "-p",
        f"predictions={tmp_path / 'predictions.parquet'}",
        "-p",
        f"labels_file={tmp_path / 'labels.csv'}",
        "-p",
        "methods=['logreg_coef_l1']",
    )

    rp = paths.RunPaths("logreg", home)
    assert pd.read_parquet(rp.labels)[classes].shape[1] == len(classes)
    curves = pd.read_parquet(rp.forgettability("logreg_coef_l1"))
    assert curves["sparsity"].unique().tolist() == [0.0, 0.5, 0.9]
    assert pd.read_parquet(rp.class_summary("logreg_coef_l1"))["train_count"].sum() > 0
    assert pd.read_parquet(rp.pairs("logreg_coef_l1"))["fcd"].notna().any()
    assert pd.read_parquet(rp.pies("logreg_coef_l1"))["is_pie"].any()
    assert (rp.root / "reader_study" / "tests.parquet").exists()
    for name in (
        "fig1_overall",
        "fig2_forgettability",
        "fig3_frequency",
        "fig4_cooccurrence",
        "fig5_pies",
        "fig6_reader_study",
    ):
        assert (rp.figures / f"{name}.html").exists(), name
    index = (rp.reports / "index.html").read_text()
    assert "logreg" in index and all(
        (rp.reports / f"{nb}.html").exists()
        for nb in (
            "03_prune",
            "04_class_forgetting",
            "05_cooccurrence",
            "06_pies",
            "07_reader_study",
        )
    )
    meta = artifacts.read_json(rp.prune_meta("logreg_coef_l1"))
    assert meta["origin"].endswith("predictions.parquet") and meta["seeds"] == [0, 1, 2]


def test_the_methods_command_lists_installed_methods(installed_example, capsys):
    from prunecxr.__main__ import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "global_l1" in out and "built in" in out
    assert "blockwise_l1" in out and "(prunecxr-blockprune 0.1.0)" in out
    assert compress.methods.portable_name("blockwise_l1") == "blockwise_l1"
