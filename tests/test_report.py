"""The run report: offline notebook exports and the index page."""

import re
from pathlib import Path

import nbformat
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from prunecxr import artifacts, config, figures, paths, report

NOTEBOOKS = [
    "01_data",
    "02_train",
    "03_prune",
    "04_class_forgetting",
    "05_cooccurrence",
    "06_pies",
    "07_reader_study",
]
#: the header comment of the plotly.js bundle: counts how many copies a page carries
PLOTLYJS_MARK = "plotly.js v"


def executed_notebook(path, *, run, figures_=(), title="A stage"):
    """An executed notebook as papermill + the plotly notebook renderer leave it: the
    parameters cell, the injected cell, and figure outputs; plotly.js in the first one, and
    plotly's MathJax-from-a-CDN script tag in every figure output."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell('run: str = "default"  # the run', execution_count=1)
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell(f'# Parameters\nrun = "{run}"\n', execution_count=2)
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\nWhy this step."), params, injected]
    for i, fig in enumerate(figures_):
        html = pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), include_mathjax="cdn")
        out = nbformat.v4.new_output("display_data", data={"text/html": html})
        nb.cells.append(
            nbformat.v4.new_code_cell(
                f"fig{i}.show()  # secret_code_{i}", execution_count=3 + i, outputs=[out]
            )
        )
    nbformat.write(nb, path)
    return Path(path)


def fabricate_run(
    run="fab",
    *,
    dataset="nih-phantom",
    n_figures=3,
    executed=("01_data", "03_prune"),
    notebooks_dir=None,
):
    """A run directory with run.json, figures saved by the figure helper, executed notebooks
    and timings — what the report reads, without running the pipeline."""
    config.init_run(run, profile="smoke")
    config.record_data(run, {"dataset": dataset, "synthetic": dataset == "nih-phantom"})
    record = artifacts.read_run(run)
    record["parameters"] = {
        "dataset": dataset,
        "n_seeds": 3,
        "lr": 0.001,
        "methods": ["global_l1", "random"],
        "sparsities": [0.0, 0.5, 0.9],
    }
    artifacts.write_json(paths.run_paths(run).run_json, record)
    figs = []
    for i in range(n_figures):
        fig = go.Figure(go.Scatter(x=[0, 0.5, 0.9], y=[1, 0.8 - i / 10, 0.3], name=f"curve {i}"))
        fig.update_layout(title=f"Figure {i + 1}")
        figures.save_figure(
            fig,
            f"fig{i + 1}_test",
            run=run,
            data=pd.DataFrame({"x": [0, 0.5, 0.9], "y": [1, 0.8, 0.3]}),
        )
        figs.append(fig)
    reports = paths.run_paths(run).reports
    reports.mkdir(parents=True, exist_ok=True)
    timings = {}
    for name in executed:
        executed_notebook(reports / f"{name}.ipynb", run=run, figures_=figs[:2], title=name)
        timings[name] = {"status": "ok", "seconds": 12.5, "finished": "2026-01-01T00:00:00+00:00"}
    artifacts.write_json(reports / "timings.json", timings)
    if notebooks_dir is not None:
        from test_runner import write_notebook

        for name in NOTEBOOKS:
            write_notebook(Path(notebooks_dir) / f"{name}.ipynb", 'run: str = "default"  # run')
    return paths.run_paths(run)


# ---------------------------------------------------------------------------------------------
# Offline checks
# ---------------------------------------------------------------------------------------------


def test_external_resources_finds_fetches_not_links_or_script_text():
    page = """<html><head>
    <script src="https://cdn.example/x.js"></script>
    <script src="local.js"></script>
    <link rel="stylesheet" href="//fonts.example/css">
    <script>var s = '<script src="https://in.js.text/">';</script>
    </head><body><a href="https://paper.example">paper</a>
    <img src="http://img.example/a.png"><img src="data:image/png;base64,AAAA"></body></html>"""
    found = report.external_resources(page)
    assert found == [
        "<script src=https://cdn.example/x.js>",
        "<link href=//fonts.example/css>",
        "<img src=http://img.example/a.png>",
    ]


def test_strip_external_scripts_keeps_inline_and_local_scripts():
    page = (
        '<div><script src="https://cdnjs.cloudflare.com/mathjax.js"></script>'
        '<script>var t = "<script src=https://x/>";</script>'
        "<script src='plotly.min.js'></script><script SRC=//cdn/x.js></script></div>"
    )
    out = report.strip_external_scripts(page)
    assert "cdnjs" not in out and "//cdn/x.js" not in out
    assert 'var t = "<script src=https://x/>";' in out
    assert "plotly.min.js" in out
    assert report.external_resources(out) == []


# ---------------------------------------------------------------------------------------------
# Notebook exports
# ---------------------------------------------------------------------------------------------


def test_export_notebook_is_offline_with_code_folded(tmp_path):
    figs = [go.Figure(go.Bar(y=[1, 2])), go.Figure(go.Bar(y=[3, 1]))]
    ipynb = executed_notebook(tmp_path / "03_prune.ipynb", run="r", figures_=figs)
    html, external = report.export_notebook(ipynb)
    text = html.read_text(encoding="utf-8")
    assert html == tmp_path / "03_prune.html" and external == []
    assert report.external_resources(text) == []
    assert "cdnjs" not in text and "require.min.js" not in text
    assert text.count(PLOTLYJS_MARK) == 1  # the notebook's one embedded copy
    assert text.count("Plotly.newPlot") >= 2
    # code hidden by default, but there to read
    assert len(re.findall(r'<details class="prunecxr-code">', text)) >= 3
    assert "secret_code_1" in text
    assert "Show all code" in text
    assert re.search(r'<details class="prunecxr-code prunecxr-injected" open(="")?>', text)


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------


def test_build_report_index(tmp_path):
    rp = fabricate_run("fab", notebooks_dir=tmp_path / "nbs")
    index = report.build_report("fab", notebooks_dir=tmp_path / "nbs")
    assert index == rp.reports / "index.html"
    text = index.read_text(encoding="utf-8")
    # run, profile, provenance
    assert "prunecxr run <code>fab</code>" in text and "profile <b>smoke</b>" in text
    assert config.PHANTOM_NOTICE in text
    # every notebook is named; the executed ones link their export, which was written
    for name in NOTEBOOKS:
        assert f'data-notebook="{name}"' in text
    for name in ["01_data", "03_prune"]:
        assert f'href="{name}.html"' in text and (rp.reports / f"{name}.html").exists()
    assert 'href="02_train.html"' not in text and "not run" in text
    assert "12.5 s" in text
    # every figure embedded interactively, sharing one plotly.js
    for i in (1, 2, 3):
        assert f'data-figure="fig{i}_test"' in text
        assert f'href="../../figures/fab/fig{i}_test.csv"' in text
    assert text.count(PLOTLYJS_MARK) == 1
    assert text.count('class="plotly-graph-div"') == 3
    assert 'src="plotly.min.js"' not in text
    # parameters
    assert "<code>n_seeds</code>" in text and "global_l1, random" in text
    # offline, and no images
    assert report.external_resources(text) == []
    assert "<img" not in text


def test_report_says_real_data_for_a_real_dataset():
    fabricate_run("real", dataset="nih-cxr-lt", n_figures=1, executed=())
    text = report.build_report("real").read_text(encoding="utf-8")
    assert "Real data: nih-cxr-lt" in text
    assert config.PHANTOM_NOTICE not in text


def test_figure_without_plotly_html_falls_back_to_png(monkeypatch):
    rp = fabricate_run("png", n_figures=1, executed=())
    html = rp.figures / "fig1_test.html"
    html.write_text("<html><body><p>not a plotly figure</p></body></html>")
    png = rp.figures / "fig1_test.png"
    if not png.exists():  # no Chrome here: a tiny valid PNG stands in
        png.write_bytes(
            bytes.fromhex(
                "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
            )
        )
    text = report.build_report("png").read_text(encoding="utf-8")
    assert 'class="figure-png"' in text and "data:image/png;base64," in text
    assert PLOTLYJS_MARK not in text  # nothing interactive: no plotly.js at all


def test_paper_table_rendered_or_absence_noted(monkeypatch):
    fabricate_run("paper", n_figures=0, executed=())
    monkeypatch.setattr(report, "paper_table", lambda run: (None, "no table: reason X"))
    text = report.build_report("paper").read_text(encoding="utf-8")
    assert "Paper versus this run" in text and "no table: reason X" in text

    table = pd.DataFrame(
        {"quantity": ["rho(FCD, |log freq diff|)"], "paper": [0.61], "run": [float("nan")]}
    )
    monkeypatch.setattr(report, "paper_table", lambda run: (table, ""))
    text = report.build_report("paper").read_text(encoding="utf-8")
    assert "rho(FCD, |log freq diff|)" in text and "0.610" in text and "—" in text
    assert "No figures in" in text


def test_paper_table_of_a_run_without_artifacts_is_a_note_not_a_crash():
    fabricate_run("bare", n_figures=0, executed=())
    df, why = report.paper_table("bare")
    assert df is None and why


def test_only_the_papers_figures_are_embedded_others_linked():
    rp = fabricate_run("linked", n_figures=1, executed=())
    fig = go.Figure(go.Heatmap(z=[[0, 255], [255, 0]], colorscale="gray", name="SECRET_PIXELS"))
    figures.save_figure(fig, "data_examples", run="linked", data=pd.DataFrame({"a": [1]}))
    text = report.build_report("linked").read_text(encoding="utf-8")
    assert 'data-figure="fig1_test"' in text
    assert 'data-figure="data_examples"' not in text and "SECRET_PIXELS" not in text
    assert 'data-other-figure="data_examples"' in text
    assert 'href="../../figures/linked/data_examples.html"' in text
    assert text.count('class="plotly-graph-div"') == 1
    assert rp.figures.joinpath("data_examples.html").exists()


def test_build_report_without_run_json():
    reports = paths.run_paths("empty").reports
    reports.mkdir(parents=True)
    text = report.build_report("empty").read_text(encoding="utf-8")
    assert "data provenance unknown" in text and "no parameters recorded" in text
