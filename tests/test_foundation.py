"""paths, io, config, fmt and figures: the cross-cutting modules every stage relies on."""

import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from prunecxr import artifacts, config, figures, fmt, paths


# -- paths ------------------------------------------------------------------------------
def test_run_paths_follow_the_artifact_contract(prunecxr_home):
    rp = paths.run_paths("demo")
    root = prunecxr_home / "runs" / "demo"
    assert rp.run_json == root / "run.json"
    assert rp.labels == root / "labels.parquet"
    assert rp.checkpoint(3) == root / "models" / "seed-3" / "model.pt"
    assert rp.history(3) == root / "models" / "seed-3" / "history.csv"
    assert rp.probs("global_l1") == root / "prune" / "global_l1" / "probs.npy"
    assert rp.prune_meta("global_l1") == root / "prune" / "global_l1" / "meta.json"
    assert rp.metrics("random") == root / "prune" / "random" / "metrics.parquet"
    for name in ("forgettability", "class_summary", "pairs", "pies"):
        assert getattr(rp, name)("global_l1") == root / "analysis" / "global_l1" / f"{name}.parquet"
    assert rp.reader_study == root / "reader_study"
    assert rp.figures == prunecxr_home / "figures" / "demo"
    assert rp.reports == prunecxr_home / "reports" / "demo"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "a b"])
def test_bad_run_names_are_refused(bad):
    with pytest.raises(ValueError, match="invalid run name"):
        paths.run_paths(bad)


def test_bad_method_name_is_refused():
    with pytest.raises(ValueError, match="invalid method name"):
        paths.run_paths("r").probs("../etc")


# -- io ---------------------------------------------------------------------------------
def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    artifacts.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError
    assert target.read_text() == "old"


def test_round_trips(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    pd.testing.assert_frame_equal(
        artifacts.read_parquet(artifacts.write_parquet(tmp_path / "d.parquet", df)), df
    )
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(
        artifacts.load_npy(artifacts.save_npy(tmp_path / "a.npy", arr)), arr
    )
    obj = {"x": np.float32(0.5), "y": np.arange(2), "nan": float("nan")}
    back = artifacts.read_json(artifacts.write_json(tmp_path / "o.json", obj))
    assert back["x"] == 0.5 and back["y"] == [0, 1] and np.isnan(back["nan"])


def test_npy_never_unpickles(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        artifacts.load_npy(path)


def test_missing_artifact_names_its_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="written by 03_prune"):
        artifacts.read_parquet(tmp_path / "nope.parquet", "03_prune")


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="run.json is not valid JSON"):
        artifacts.read_json(path)


# -- config -----------------------------------------------------------------------------
def test_profiles_exist_and_unknown_profile_is_refused():
    assert {"default", "smoke", "nih-cxr-lt", "mimic-cxr-lt"} <= set(config.profiles())
    with pytest.raises(ValueError, match="unknown profile 'nope'; choose one of"):
        config.load_profile("nope")


def test_profiles_share_one_set_of_keys():
    table = config.profiles()
    keys = set(table["default"])
    for name, values in table.items():
        assert set(values) == keys, (
            f"profile {name!r} differs from 'default' in {set(values) ^ keys}"
        )


# -- fmt --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda: fmt.pvalue(0.0004), "P < 0.001"),
        (lambda: fmt.pvalue(0.0351), "P = 0.035"),
        (lambda: fmt.pvalue(float("nan")), "P = —"),
        (lambda: fmt.num(0.6149), "0.61"),
        (lambda: fmt.pct(0.65), "65%"),
        (lambda: fmt.ratio(3.21), "3.2×"),
        (lambda: fmt.corr("ρ", 0.61, 0.004), "ρ = 0.61 (P = 0.004)"),
        (lambda: fmt.num(None), "—"),
    ],
)
def test_formatting(call, expected):
    assert call() == expected


# -- figures ----------------------------------------------------------------------------
def _fig():
    return go.Figure(go.Scatter(x=[0, 1], y=[1, 2])).update_layout(title="t")


def test_save_figure_writes_html_csv_and_stamps_the_phantom(monkeypatch):
    config.record_data("r", {"dataset": "nih-phantom", "synthetic": True})
    monkeypatch.setattr(
        figures, "_server", {"state": "failed", "reason": "no Chrome/Chromium found"}
    )
    saved = figures.save_figure(_fig(), "fig0", run="r", data=pd.DataFrame({"x": [0, 1]}))
    assert saved.png is None
    html = saved.html.read_text()
    assert "PHANTOM IMAGES" in html
    assert 'src="plotly.min.js"' in html and (saved.html.parent / "plotly.min.js").exists()
    assert "cdn.plot.ly" not in html
    assert pd.read_csv(saved.csv)["x"].tolist() == [0, 1]
    assert (
        "PNGs were skipped" in figures.png_status()
        and "apt-get install -y chromium" in figures.png_status()
    )


def test_real_data_figures_carry_no_phantom_notice(monkeypatch):
    config.record_data("real", {"dataset": "nih-cxr-lt", "synthetic": False})
    monkeypatch.setattr(figures, "_server", {"state": "failed", "reason": "test"})
    saved = figures.save_figure(_fig(), "fig0", run="real")
    assert "PHANTOM" not in saved.html.read_text()
    assert saved.csv is None


def test_missing_chrome_is_reported(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", os.devnull + "-nonexistent")
    monkeypatch.setattr(figures, "_server", {"state": "unstarted", "reason": ""})
    assert figures.chrome_path() is None
    assert figures._ensure_server() is False
    assert "no Chrome/Chromium found" in figures.png_status()


@pytest.mark.skipif(figures.chrome_path() is None, reason="no Chrome/Chromium for static export")
def test_png_export_with_chrome():
    config.record_data("r", {"dataset": "nih-phantom", "synthetic": True})
    saved = figures.save_figure(_fig(), "fig0", run="r")
    assert saved.png is not None and saved.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3)])
def test_png_base64_round_trip(shape):
    import base64
    import io

    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    text = figures.png_base64(image)
    assert text.startswith("iVBORw0KGgo")  # base64 of the PNG signature
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))
    np.testing.assert_array_equal(back, image.reshape(shape[:2]) if shape[-1] == 1 else image)
    assert figures.png_base64(image) == text  # lossless and deterministic


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4)), np.zeros((4, 4, 2), np.uint8), np.zeros(4, np.uint8)]
)
def test_png_base64_refuses_what_is_not_a_uint8_image(bad):
    with pytest.raises(ValueError, match=r"uint8 \[H, W\] or \[H, W, 3\]"):
        figures.png_base64(bad)


def test_styled_table_caption_names_the_phantom():
    config.record_data("r", {"dataset": "nih-phantom", "synthetic": True})
    html = figures.styled_table(pd.DataFrame({"a": [1.23456]}), run="r", caption="T").to_html()
    assert "PHANTOM IMAGES" in html and "1.235" in html


def test_atomic_writes_respect_the_umask(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = artifacts.write_text(tmp_path / "f.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_run_in_the_checkout_modifies_no_tracked_file():
    """With PRUNECXR_HOME unset a run writes runs/, figures/, reports/ and cache/ of the
    checkout: all ignored by git, so `git status` stays clean after `make reproduce` (the
    README's figures are docs/figures/, refreshed only by `make readme-figures`)."""
    import shutil
    import subprocess

    root = paths.project_root()
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    written = [
        "runs/default/run.json",
        "runs/default/.lock",
        "figures/default/fig1_overall.png",
        "figures/default/fig1_overall.csv",
        "reports/default/index.html",
        "cache/nih-phantom/64px/train-0123456789abcdef.npy",
        "cache/.build.lock",
    ]
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", *written], cwd=root, capture_output=True, text=True
    )
    assert proc.stdout.split() == written
    tracked = subprocess.run(
        ["git", "ls-files", "runs", "figures", "reports", "cache"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == ["figures/README.md"]
