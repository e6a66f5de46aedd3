"""Provenance on every figure: what the files carry, what the CLI prints, when a figure is stale."""

import io
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from prunecxr import __main__ as cli
from prunecxr import artifacts, config, figures, paths, provenance, report

RUN = "prov"


@pytest.fixture
def stage_figure(prunecxr_home):
    """A figure saved by a stage that read two run files (and run.json)."""
    config.init_run(RUN, profile="smoke")
    rp = paths.run_paths(RUN)
    provenance.begin_stage(
        "04_class_forgetting",
        run=RUN,
        parameters={"method": "global_l1", "drop_threshold": 0.2},
        package_version="0.1.0",
        git_commit="0123456789abcdef-dirty",
    )
    artifacts.write_parquet(rp.root / "table.parquet", pd.DataFrame({"x": [1, 2, 3]}))
    artifacts.save_npy(rp.root / "probs.npy", np.arange(6, dtype=np.float32))
    artifacts.read_parquet(rp.root / "table.parquet")
    artifacts.load_npy(rp.root / "probs.npy", mmap=True)
    artifacts.read_run(RUN)  # run.json is not an input: every stage rewrites it
    saved = figures.save_figure(
        go.Figure(go.Bar(x=["a", "b"], y=[1, 2])),
        "fig3_frequency",
        run=RUN,
        data=pd.DataFrame({"x": ["a", "b"], "y": [1, 2]}),
    )
    return saved


def test_the_files_carry_the_record(stage_figure):
    saved = stage_figure
    record = provenance.read(saved.html)
    assert record == saved.record
    assert record["run"] == RUN and record["notebook"] == "04_class_forgetting"
    assert record["git_commit"] == "0123456789abcdef" and record["git_clean"] is False
    assert record["package_version"] == "0.1.0"
    assert record["parameters"] == {"method": "global_l1", "drop_threshold": 0.2}
    assert record["parameters_sha256"] == provenance.parameters_sha256(
        {"drop_threshold": 0.2, "method": "global_l1"}
    )
    assert [i["path"] for i in record["inputs"]] == [
        f"runs/{RUN}/table.parquet",
        f"runs/{RUN}/probs.npy",
    ]
    rp = paths.run_paths(RUN)
    assert record["inputs"][1]["sha256"] == provenance.file_sha256(rp.root / "probs.npy")
    html = saved.html.read_text(encoding="utf-8")
    assert '<footer class="prunecxr-provenance"' in html and provenance.short_line(record) in html
    # the CSV keeps its plain table; its record is the sidecar, which names the files
    assert pd.read_csv(saved.csv).columns.tolist() == ["x", "y"]
    side = provenance.read(saved.csv)
    png = ["fig3_frequency.png"] if saved.png is not None else []  # where a Chrome draws PNGs
    assert side["files"] == ["fig3_frequency.html", *png, "fig3_frequency.csv"]
    assert {k: v for k, v in side.items() if k != "files"} == record
    line = provenance.short_line(record)
    assert "04_class_forgetting" in line and "0123456789" in line and "uncommitted" in line
    assert "2 input files" in line


def test_png_text_chunks_carry_the_record_and_keep_the_pixels(stage_figure):
    pixels = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    png = provenance.png_with_provenance(buf.getvalue(), stage_figure.record)
    path = paths.run_paths(RUN).figures / "fig3_frequency.png"
    path.write_bytes(png)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), pixels)
        assert json.loads(im.text[provenance.PNG_KEY]) == stage_figure.record
        assert im.text["Description"] == provenance.short_line(stage_figure.record)
    assert provenance.read(path) == stage_figure.record
    with pytest.raises(ValueError, match="not a PNG"):
        provenance.png_with_provenance(b"GIF89a", stage_figure.record)


def test_cli_prints_the_record_and_names_a_stale_figure(stage_figure, capsys):
    figure = stage_figure.html
    assert cli.main(["provenance", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "0123456789abcdef (with uncommitted changes)" in out
    assert "04_class_forgetting" in out and "drop_threshold = 0.2" in out
    assert f"ok      runs/{RUN}/table.parquet" in out and "up to date" in out

    rp = paths.run_paths(RUN)
    artifacts.write_parquet(
        rp.root / "table.parquet", pd.DataFrame({"x": [1, 2, 4]})
    )  # an input changed
    assert cli.main(["provenance", str(stage_figure.csv)]) == 1
    out = capsys.readouterr().out
    assert f"CHANGED runs/{RUN}/table.parquet" in out and f"ok      runs/{RUN}/probs.npy" in out
    assert "STALE: 1 input(s)" in out and "run notebook 04_class_forgetting again" in out

    (rp.root / "probs.npy").unlink()
    assert cli.main(["provenance", str(figure)]) == 1
    assert f"MISSING runs/{RUN}/probs.npy" in capsys.readouterr().out


def test_cli_refuses_a_file_without_provenance(tmp_path, capsys):
    plain = tmp_path / "plain.html"
    plain.write_text("<html><body>no record</body></html>")
    assert cli.main(["provenance", str(plain)]) == 2
    assert "carries no prunecxr provenance record" in capsys.readouterr().err
    assert cli.main(["provenance", str(tmp_path / "absent.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_moved_home_is_checked_where_the_figure_lies(stage_figure, tmp_path, monkeypatch, capsys):
    import shutil

    home = paths.home()
    moved = tmp_path / "moved"
    shutil.copytree(home, moved)
    monkeypatch.setenv("PRUNECXR_HOME", str(tmp_path / "elsewhere"))
    assert cli.main(["provenance", str(moved / "figures" / RUN / "fig3_frequency.html")]) == 0
    assert "up to date" in capsys.readouterr().out


def test_reads_are_noted_per_stage_and_a_cache_by_its_manifest(prunecxr_home):
    cache = paths.cache_root() / "phantom" / "32px"
    artifacts.save_npy(cache / "train-abc.npy", np.zeros((2, 2, 2), np.uint8))
    artifacts.write_json(cache / "train-abc.json", {"image_ids": ["a", "b"]})
    artifacts.start_reading()
    artifacts.load_npy(cache / "train-abc.npy", mmap=True)
    assert artifacts.files_read() == [(cache / "train-abc.json").resolve()]
    assert (
        provenance.location(cache / "train-abc.json")
        == "$PRUNECXR_CACHE/phantom/32px/train-abc.json"
    )
    artifacts.start_reading()
    assert artifacts.files_read() == []


def test_report_shows_a_provenance_line_under_every_figure(stage_figure):
    figures.save_figure(go.Figure(go.Bar(x=["a"], y=[1])), "data_counts", run=RUN)
    page = report.build_report(RUN, export=False).read_text(encoding="utf-8")
    lines = page.count('<p class="provenance"')
    assert lines == 2  # the key figure and the other one
    assert provenance.short_line(stage_figure.record) in page
    # the figure's own footer is not repeated inside the embedded fragment
    assert 'class="prunecxr-provenance"' not in page
