"""The HTML report of a run, readable offline: ``reports/<run>/index.html``.

* :func:`export_notebook` turns an executed notebook into ``<nb>.html`` with JupyterLab's
  look, each cell's code folded in a ``<details>`` (one button opens them all), and nothing
  fetched from a CDN: the template drops require.js, MathJax, Mermaid and the widget manager,
  and ``<script src="http…">`` tags inside outputs (plotly's MathJax loader) are removed. The
  notebooks embed plotly.js once, in their first figure's output.
* :func:`build_report` writes the index: the run's name, profile and data provenance (the
  phantom notice, or the real dataset's name), the paper-versus-run table, the key figures
  (the paper's, ``fig<N>_*``) as interactive plotly divs sharing ONE inline plotly.js (a PNG
  when a figure's HTML cannot be embedded), links to the other figures, the resolved
  parameters, each notebook's status and wall time, and links to the notebook exports.
  No X-ray image is embedded: the report embeds the paper's figures, which hold no images;
  figures that may (``data_examples``) are only linked.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import importlib
import importlib.util
import os
import re
import warnings
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from . import artifacts, config, fmt, paths, provenance

TEMPLATES_DIR = Path(__file__).with_name("templates")
TEMPLATE_NAME = "prunecxr"
INDEX_FILE = "index.html"
#: the paper's figures (``fig1_overall`` ... ``fig6_reader_study``, and per-method variants)
#: are embedded in the index; the others are linked, since some show images
KEY_FIGURE = re.compile(r"^fig\d+_")

_NOTEBOOK_FILE = re.compile(r"^(\d{2})_[A-Za-z0-9_]+$")
_SCRIPT_ELEMENT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I)
_EXTERNAL_SRC = re.compile(r"""\bsrc\s*=\s*["']?\s*(?:https?:)?//""", re.I)
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)
_EXTERNAL_URL = re.compile(r"^\s*(?:https?:)?//", re.I)

#: (tag, attribute) pairs that make a browser fetch something to show the page
_FETCHING = {
    ("script", "src"),
    ("link", "href"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("video", "src"),
    ("audio", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("input", "src"),
}


# ---------------------------------------------------------------------------------------------
# Offline checks
# ---------------------------------------------------------------------------------------------


class _ResourceFinder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if (tag, name) in _FETCHING and value and _EXTERNAL_URL.match(value):
                if tag == "link" and dict(attrs).get("rel", "") in {"canonical", "author"}:
                    continue
                self.found.append(f"<{tag} {name}={value}>")

    handle_startendtag = handle_starttag


def external_resources(page: str) -> list[str]:
    """Every resource of ``page`` that a browser would fetch from the network.

    Script, stylesheet, image, frame and media sources with an ``http(s)://`` or ``//`` URL;
    plain links (``<a href>``) are not resources. Script bodies are not searched (a URL in
    JavaScript text is not a fetch by the page).
    """
    finder = _ResourceFinder()
    finder.feed(page)
    finder.close()
    return finder.found


def strip_external_scripts(page: str) -> str:
    """``page`` without ``<script src="http…"></script>`` elements.

    Script bodies are skipped whole (HTML ends a script at the first ``</script``), so text
    inside an inline script is never touched.
    """

    def keep(match: re.Match) -> str:
        return "" if _EXTERNAL_SRC.search(match.group(1)) else match.group(0)

    return _SCRIPT_ELEMENT.sub(keep, page)


# ---------------------------------------------------------------------------------------------
# Notebook exports
# ---------------------------------------------------------------------------------------------


def _exporter():
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name=TEMPLATE_NAME,
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        embed_images=True,
    )


def export_notebook(
    ipynb: str | os.PathLike, html: str | os.PathLike | None = None
) -> tuple[Path, list[str]]:
    """Export an executed notebook to HTML that reads offline, code folded.

    Parameters
    ----------
    ipynb : the executed notebook.
    html : where to write; default beside it with the ``.html`` suffix.

    Returns
    -------
    (path, external) : the HTML file and any external resources it still refers to (those
        that are not scripts, e.g. an image linked by URL in a markdown cell), for a warning.
    """
    ipynb = Path(ipynb)
    html = Path(html) if html is not None else ipynb.with_suffix(".html")
    body, _ = _exporter().from_filename(str(ipynb))
    body = strip_external_scripts(body)
    artifacts.write_text(html, body)
    return html, external_resources(body)


def _stale(target: Path, source: Path) -> bool:
    return not target.exists() or target.stat().st_mtime < source.stat().st_mtime


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureFiles:
    name: str
    html: Path | None
    png: Path | None
    csv: Path | None


def figure_files(run: str) -> list[FigureFiles]:
    """The figures of ``run`` in ``figures/<run>/``, by name."""
    folder = paths.run_paths(run).figures
    if not folder.is_dir():
        return []
    stems = sorted(
        {
            p.stem
            for p in folder.iterdir()
            if p.suffix in {".html", ".png"} and not p.name.startswith(".")
        }
    )

    def get(stem, suffix):
        p = folder / f"{stem}{suffix}"
        return p if p.exists() else None

    return [FigureFiles(s, get(s, ".html"), get(s, ".png"), get(s, ".csv")) for s in stems]


def figure_fragment(path: str | os.PathLike) -> str | None:
    """The plotly div and script of a figure saved by :func:`prunecxr.figures.save_figure`.

    Script tags that load plotly.js (``src=...``) are removed: the report loads it once.
    None when the file holds no plotly figure.
    """
    text = Path(path).read_text(encoding="utf-8")
    match = _BODY.search(text)
    if not match or "plotly-graph-div" not in match.group(1) or "Plotly.newPlot" not in text:
        return None

    def keep(m: re.Match) -> str:
        return "" if re.search(r"\bsrc\s*=", m.group(1), re.I) else m.group(0)

    body = provenance.HTML_BLOCK.sub("", match.group(1))  # the report shows its own line
    return _SCRIPT_ELEMENT.sub(keep, body).strip()


def provenance_line(f: FigureFiles) -> str:
    """The short provenance line of a figure (:func:`prunecxr.provenance.short_line`) as HTML,
    or a note that the figure carries none (saved before figures carried provenance)."""
    for p in (f.html, f.png, f.csv):
        if p is None:
            continue
        try:
            record = provenance.read(p)
        except (FileNotFoundError, ValueError):
            continue
        return (
            f'<p class="provenance" title="python -m prunecxr provenance {_esc(p.name)}">'
            f"{_esc(provenance.short_line(record))}</p>"
        )
    return '<p class="provenance">No provenance recorded for this figure.</p>'


# ---------------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------------


def _esc(x: Any) -> str:
    return _html.escape(str(x), quote=True)


def _value(x: Any) -> str:
    if isinstance(x, float):
        return repr(x) if x == x else "—"
    if isinstance(x, (list, tuple)):
        return ", ".join(_value(v) for v in x) or "(none)"
    if isinstance(x, str):
        return x if x else '""'
    return str(x)


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def notebook_names(notebooks_dir: str | os.PathLike | None = None, run: str | None = None):
    """The pipeline's notebook names (``01_data`` ...): the notebooks folder's, plus any
    executed notebook of ``run`` (so a report names what ran even from another checkout)."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.notebooks_dir()
    names = {p.stem for p in folder.glob("*.ipynb") if _NOTEBOOK_FILE.match(p.stem)}
    if run is not None:
        reports = paths.run_paths(run).reports
        names |= {p.stem for p in reports.glob("*.ipynb") if _NOTEBOOK_FILE.match(p.stem)}
    return sorted(names)


def paper_table(run: str) -> tuple[pd.DataFrame | None, str]:
    """The paper-versus-run table from :mod:`prunecxr.paper`, or None with the reason."""
    if importlib.util.find_spec(f"{__package__}.paper") is None:
        return None, "prunecxr.paper is not available in this checkout: no paper-versus-run table."
    paper = importlib.import_module(f"{__package__}.paper")
    build = getattr(paper, "comparison_table", None)
    if build is None:
        return None, "prunecxr.paper has no comparison_table(run); no table."
    from .metrics import MissingPositivesWarning

    try:
        with warnings.catch_warnings():
            # the notebooks show it where the numbers are made; in the runner's console it
            # asks nothing of the user (a class without a positive test image is the data's)
            warnings.simplefilter("ignore", MissingPositivesWarning)
            return build(run), ""
    except FileNotFoundError as err:  # a partial run: the artifacts are not there yet
        return None, f"Not available for this run yet: {err}"
    except Exception as err:  # the report still shows everything else; the reason is shown
        return None, f"The table could not be built: {type(err).__name__}: {err}"


def _table(df: pd.DataFrame) -> str:
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: fmt.num(v, 3))
    return shown.to_html(index=False, escape=True, na_rep="—", border=0, classes="table")


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 0 24px 48px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
.meta { color: #555; }
.phantom { border: 2px solid #b00020; color: #b00020; padding: 8px 12px; font-weight: bold; }
.real { border: 2px solid #1b5e20; color: #1b5e20; padding: 8px 12px; font-weight: bold; }
table.table { border-collapse: collapse; font-size: 0.92em; }
table.table th, table.table td { border-bottom: 1px solid #e2e2e2; padding: 4px 10px; text-align: left; }
table.table th { background: #f5f5f5; }
.figure { margin: 24px 0 8px; }
.figure h3 { margin-bottom: 2px; }
.files { font-size: 0.85em; color: #555; }
.note { color: #8a6d3b; background: #fcf8e3; padding: 6px 10px; border-radius: 3px; }
.status-ok { color: #1b5e20; } .status-failed { color: #b00020; font-weight: bold; }
.status-not { color: #888; }
img.figure-png { max-width: 100%; border: 1px solid #eee; }
.provenance { font-size: 11px; color: #666; margin: 2px 0 0; }
"""


def _provenance(run: str, record: dict[str, Any]) -> str:
    data = record.get("data") or {}
    dataset = data.get("dataset")
    if dataset is None:
        return '<p class="note">No data record in run.json (notebook 01_data has not run): data provenance unknown.</p>'
    if data.get("synthetic"):
        return f'<p class="phantom" id="provenance">{_esc(config.PHANTOM_NOTICE)}</p>'
    return (
        f'<p class="real" id="provenance">Real data: {_esc(dataset)} '
        "(figures and tables below are computed from real chest X-rays).</p>"
    )


def _notebooks_section(run: str, names: list[str], timings: dict[str, Any], reports: Path) -> str:
    rows = []
    for name in names:
        t = timings.get(name, {})
        html = reports / f"{name}.html"
        ipynb = reports / f"{name}.ipynb"
        failed = reports / f"{name}.failed.ipynb"
        links = []
        if html.exists():
            links.append(f'<a href="{_esc(_rel(html, reports))}">{_esc(name)}.html</a>')
        if ipynb.exists():
            links.append(f'<a href="{_esc(_rel(ipynb, reports))}">.ipynb</a>')
        status = t.get("status")
        if status == "failed" and failed.exists():
            links.append(f'<a href="{_esc(_rel(failed, reports))}">failed .ipynb</a>')
        if status is None:
            status = "ok" if ipynb.exists() else "not run"
        css = {"ok": "status-ok", "failed": "status-failed"}.get(status, "status-not")
        secs = t.get("seconds")
        rows.append(
            f'<tr data-notebook="{_esc(name)}"><td>{_esc(name)}</td>'
            f'<td class="{css}">{_esc(status)}</td>'
            f"<td>{_esc(fmt.num(secs, 1) + ' s' if secs is not None else '—')}</td>"
            f"<td>{_esc(t.get('finished', '—'))}</td><td>{' · '.join(links) or '—'}</td></tr>"
        )
    total = sum(t.get("seconds", 0) for t in timings.values() if t.get("status") == "ok")
    return (
        '<h2 id="notebooks">Notebooks</h2>'
        "<p>Each notebook's HTML export shows its outputs with the code folded "
        "(click “Code” or “Show all code”).</p>"
        '<table class="table"><thead><tr><th>notebook</th><th>status</th><th>wall time</th>'
        f"<th>finished (UTC)</th><th>files</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="meta">Total wall time of the notebooks that finished: {fmt.num(total, 1)} s.</p>'
    )


def _file_links(f: FigureFiles, reports: Path) -> str:
    return " · ".join(
        f'<a href="{_esc(_rel(p, reports))}">{p.suffix[1:].upper()}</a>'
        for p in (f.html, f.png, f.csv)
        if p is not None
    )


def _figures_section(run: str, reports: Path) -> tuple[str, bool]:
    figs = figure_files(run)
    head = '<h2 id="figures">Key figures</h2>'
    if not figs:
        return (
            head + f'<p class="note">No figures in {_esc(paths.run_paths(run).figures)} yet.</p>',
            False,
        )
    key = [f for f in figs if KEY_FIGURE.match(f.name)]
    other = [f for f in figs if not KEY_FIGURE.match(f.name)]
    parts = [
        head,
        "<p>The paper's figures as this run draws them (interactive: hover, zoom, "
        "click the legend). Each links its HTML, PNG and the plotted data as CSV.</p>",
    ]
    if not key:
        parts.append(
            '<p class="note">None of the paper\'s figures (fig1_… fig6_…) exists '
            "for this run yet.</p>"
        )
    interactive = False
    for f in key:
        fragment = figure_fragment(f.html) if f.html else None
        if fragment is not None:
            body, interactive = fragment, True
        elif f.png is not None:
            data = base64.b64encode(f.png.read_bytes()).decode("ascii")
            body = (
                f'<img class="figure-png" alt="{_esc(f.name)}" src="data:image/png;base64,{data}">'
            )
        else:
            body = '<p class="note">This figure could not be embedded; open its file.</p>'
        parts.append(
            f'<div class="figure" data-figure="{_esc(f.name)}"><h3>{_esc(f.name)}</h3>'
            f'<div class="files">files: {_file_links(f, reports)}</div>{body}{provenance_line(f)}</div>'
        )
    if other:
        items = "".join(
            f'<li data-other-figure="{_esc(f.name)}"><b>{_esc(f.name)}</b>: '
            f"{_file_links(f, reports)}{provenance_line(f)}</li>"
            for f in other
        )
        parts.append(
            '<h3 id="other-figures">Other figures</h3><p>Figures of the notebooks beyond the '
            "paper's (data overview, ...), not embedded here — some show images, which the "
            f"report never embeds. Open their files:</p><ul>{items}</ul>"
        )
    return "".join(parts), interactive


def _parameters_section(record: dict[str, Any]) -> str:
    params = record.get("parameters", {})
    head = '<h2 id="parameters">Parameters</h2>'
    if not params:
        body = '<p class="note">No stage of this run has finished: no parameters recorded.</p>'
    else:
        rows = "".join(
            f"<tr><td><code>{_esc(k)}</code></td><td><code>{_esc(_value(v))}</code></td></tr>"
            for k, v in params.items()
        )
        body = (
            "<p>The parameters the run's files were made with: those of each notebook's last "
            "successful execution, as recorded in <code>runs/&lt;run&gt;/run.json</code>.</p>"
            f'<table class="table"><thead><tr><th>parameter</th><th>value</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    failed = record.get("failed") or {}
    if failed:
        rows = "".join(
            f"<tr><td>{_esc(stage)}</td><td><code>{_esc(_value(a.get('parameters', {})))}</code></td>"
            f"<td>{_esc(a.get('error', ''))}</td></tr>"
            for stage, a in sorted(failed.items())
        )
        body += (
            '<p class="note" id="failed-attempts">Failed attempts (their parameters made none of '
            "the files above):</p>"
            '<table class="table"><thead><tr><th>notebook</th><th>parameters (failed)</th>'
            f"<th>error</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return head + body


def _paper_section(run: str) -> str:
    df, why = paper_table(run)
    head = '<h2 id="paper">Paper versus this run</h2>'
    if df is None:
        return head + f'<p class="note">{_esc(why)}</p>'
    notice = config.PHANTOM_NOTICE if config.is_synthetic(run) else ""
    caption = f'<p class="phantom">{_esc(notice)}</p>' if notice else ""
    return head + caption + _table(df) + _class_count_section(run)


def _class_count_section(run: str) -> str:
    """Images per class and split: the paper's supplementary Table 2 beside the run's."""
    head = '<h3 id="class-counts">Images per class: supplementary Table 2 beside this run</h3>'
    try:
        paper = importlib.import_module(f"{__package__}.paper")
        return head + _table(paper.class_count_display(run))
    except Exception as err:  # the report still shows everything else; the reason is shown
        return (
            head
            + f'<p class="note">{_esc(f"The table could not be built: {type(err).__name__}: {err}")}</p>'
        )


def _controlled_section(run: str, record: dict[str, Any]) -> str:
    """Notebook 10's comparison of the two difficulty conditions, when the run has it."""
    stage = record.get("stages", {}).get("10_controlled")
    if not stage:
        return ""
    head = '<h2 id="controlled">Two difficulty conditions: does frequency alone predict forgetting?</h2>'
    try:
        controlled = importlib.import_module(f"{__package__}.controlled")
        baseline = (
            stage.get("parameters", {}).get("baseline_run") or record["parameters"]["baseline_run"]
        )
        method = stage.get("parameters", {}).get("method")
        from .metrics import MissingPositivesWarning

        with warnings.catch_warnings():  # as for the paper's table: notebook 10 shows it
            warnings.simplefilter("ignore", MissingPositivesWarning)
            table = controlled.findings_display(
                controlled.findings_table(run, baseline, method=method)
            )
            answer = controlled.answer(run, baseline, method=method)
        return head + _table(table) + f"<p>{_esc(answer)}</p>"
    except Exception as err:  # the report still shows everything else; the reason is shown
        return (
            head
            + f'<p class="note">{_esc(f"The comparison could not be built: {type(err).__name__}: {err}")}</p>'
        )


def _attend_section(record: dict[str, Any], run: str) -> str:
    """Notebook 09's results, when the run has them: the HTL identifications, the paired
    differences of the aggregates (AP; localization where scored) and Fig. 3's correlations per
    arm. Every number is read from ``attend/*.parquet``."""
    if not record.get("stages", {}).get("09_attend"):
        return ""
    head = '<h2 id="attend">Attend who is weak: the hard-to-learn images attended in training</h2>'
    try:
        attend = importlib.import_module(f"{__package__}.attend")
        s, ev = attend.summaries, attend.evaluate
        htl = s.htl_summary(s.read_table(run, "htl"))
        by_source = (
            htl.groupby("source", sort=False)
            .agg(
                identifications=("htl", "size"),
                images=("images", "max"),
                htl_per_identification=("htl", "median"),
                jaccard_with_posthoc=("jaccard_with_posthoc", "median"),
            )
            .reset_index()
        )
        by_source["jaccard_with_posthoc"] = [
            fmt.num(v, 3) for v in by_source["jaccard_with_posthoc"]
        ]
        for column in ("images", "htl_per_identification"):
            by_source[column] = [fmt.count(v) for v in by_source[column]]
        diff = s.read_table(run, "differences")
        shown = s.differences_display(diff[diff["class"].isin([ev.ALL_CLASSES, ev.RAREST])])
        corr = s.correlations_display(ev.forgetting_correlations(s.read_table(run, "forgetting")))
        return (
            head
            + "<h3>The hard-to-learn (HTL) training images</h3>"
            + _table(by_source)
            + "<h3>Each arm minus the dense models, paired by seed (95% bootstrap CI, Wilcoxon)</h3>"
            + _table(shown)
            + "<h3>Forgetting under pruning: Fig. 3's correlations with log training frequency, per arm</h3>"
            + _table(corr)
            + '<p class="note">Per class, the figures <code>attend_differences</code>, '
            "<code>attend_localization</code> and <code>attend_forgetting</code> (linked below) "
            "and notebook 09's export.</p>"
        )
    except Exception as err:  # the report still shows everything else; the reason is shown
        return (
            head
            + f'<p class="note">{_esc(f"The results could not be read: {type(err).__name__}: {err}")}</p>'
        )


def build_report(
    run: str,
    *,
    notebooks_dir: str | os.PathLike | None = None,
    export: bool = True,
) -> Path:
    """Write ``reports/<run>/index.html`` (and missing or stale notebook exports).

    Parameters
    ----------
    run : the run.
    notebooks_dir : where the pipeline's notebooks are (to name those not run yet).
    export : (re-)export executed notebooks whose HTML is missing or older.

    Returns
    -------
    Path of the index.
    """
    rp = paths.run_paths(run)
    reports = rp.reports
    reports.mkdir(parents=True, exist_ok=True)
    if export:
        for ipynb in sorted(reports.glob("*.ipynb")):
            if _NOTEBOOK_FILE.match(ipynb.stem) and _stale(ipynb.with_suffix(".html"), ipynb):
                export_notebook(ipynb)

    record = artifacts.read_json(rp.run_json) if rp.run_json.exists() else {}
    timings = artifacts.read_timings(run)
    names = notebook_names(notebooks_dir, run)

    figures_html, interactive = _figures_section(run, reports)
    plotly_js = ""
    if interactive:
        from plotly.offline import get_plotlyjs

        plotly_js = f'<script type="text/javascript">{get_plotlyjs()}</script>'

    meta = [
        f"profile <b>{_esc(record.get('profile', '—'))}</b>",
        f"package {_esc(record.get('package_version', '—'))}",
        f"commit <code>{_esc(record.get('git_commit', '—'))}</code>",
        f"created {_esc(record.get('created', '—'))}",
        f"updated {_esc(record.get('updated', '—'))}",
    ]
    generated = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>prunecxr run {_esc(run)}</title>
<style>{_CSS}</style>
{plotly_js}
</head>
<body>
<h1>prunecxr run <code>{_esc(run)}</code></h1>
<p class="meta">Holste et al., MICCAI 2023, “How Does Pruning Impact Long-Tailed Multi-label
Medical Image Classifiers?” — reproduced. {" · ".join(meta)}</p>
{_provenance(run, record)}
<p>Contents: <a href="#paper">paper versus run</a> · <a href="#figures">key figures</a> ·
<a href="#notebooks">notebooks</a> · <a href="#parameters">parameters</a></p>
{_paper_section(run)}
{_controlled_section(run, record)}
{_attend_section(record, run)}
{figures_html}
{_notebooks_section(run, names, timings, reports)}
{_parameters_section(record)}
<p class="meta">Generated {generated}. This page and the notebook exports read offline:
nothing is fetched from the network.</p>
</body>
</html>
"""
    return artifacts.write_text(reports / INDEX_FILE, page)
