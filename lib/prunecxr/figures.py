"""One helper saves every figure: interactive HTML, static PNG and the plotted data as CSV.

It also holds the one PNG encoder of an image array for HTML (:func:`png_base64`: the PIE
gallery of notebook 06, the reader packets of notebook 07).

Files go to ``figures/<run>/<name>.{html,png,csv}``. The HTML files share one
``plotly.min.js`` written beside them, so they open offline. PNGs are rendered by kaleido
with a Chrome (``BROWSER_PATH``, else Debian's ``chromium`` on the PATH); one browser is
started per process and reused for every figure. Without a Chrome, the HTML and CSV are
still written and :func:`png_status` says that the PNGs were skipped and how to enable them.

Figures of a run on synthetic pixels (the phantom) carry :data:`config.PHANTOM_NOTICE`.

Every figure carries its provenance (:mod:`prunecxr.provenance`): the run, package version,
commit, notebook cell, parameters and input files with their hashes, in the PNG's text
chunks, the HTML's footer and metadata, and ``<name>.provenance.json`` beside the CSV. In a
notebook, :func:`publish` saves a figure and shows it in one call.
"""

from __future__ import annotations

import atexit
import base64
import html as _html
import io
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from PIL import Image

from . import artifacts, config, paths, provenance

log = logging.getLogger(__name__)

#: the renderer that makes figures survive papermill and show in nbconvert's HTML offline
NOTEBOOK_RENDERER = "plotly_mimetype+notebook"
TEMPLATE = "plotly_white"

_CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_server = {"state": "unstarted", "reason": ""}


def setup_notebook() -> None:
    """Plotly defaults for notebooks executed by papermill and exported by nbconvert."""
    pio.renderers.default = NOTEBOOK_RENDERER
    pio.templates.default = TEMPLATE


def chrome_path() -> str | None:
    """The Chrome that static export would use, or None."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in _CHROME_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _ensure_server() -> bool:
    """Start kaleido's browser once per process; False (with a reason) when impossible."""
    if _server["state"] == "running":
        return True
    if _server["state"] == "failed":
        return False
    chrome = chrome_path()
    if chrome is None:
        _server.update(state="failed", reason="no Chrome/Chromium found")
        return False
    os.environ.setdefault("BROWSER_PATH", chrome)
    try:
        import kaleido

        # mathjax=False: never reach for a CDN; plotly.js comes from the installed package
        kaleido.start_sync_server(mathjax=False, silence_warnings=True)
    except Exception as err:  # kaleido raises several types when a browser cannot start
        _server.update(state="failed", reason=f"kaleido could not start {chrome}: {err}")
        return False
    atexit.register(_stop_server)
    _server["state"] = "running"
    return True


def _stop_server() -> None:
    if _server["state"] == "running":
        try:
            import kaleido

            kaleido.stop_sync_server(silence_warnings=True)
        finally:
            _server["state"] = "unstarted"


def png_status() -> str:
    """A sentence for the notebook: were PNGs written, and if not, how to get them."""
    if _server["state"] == "running":
        return f"Static PNGs written with {os.environ.get('BROWSER_PATH', 'Chrome')}."
    if _server["state"] == "failed":
        return (
            f"PNGs were skipped ({_server['reason']}); interactive HTML and CSV were written. "
            "To enable PNGs install a Chrome (Debian/Ubuntu: `apt-get install -y chromium`) "
            "or set BROWSER_PATH to one, then re-run."
        )
    return "No figure has been saved yet."


def notice(run: str) -> str:
    """The data-provenance line for figures and tables of ``run`` ('' for real data)."""
    return config.PHANTOM_NOTICE if config.is_synthetic(run) else ""


def _stamp(fig: go.Figure, run: str) -> go.Figure:
    text = notice(run)
    if text:
        title = fig.layout.title.text or ""
        fig.update_layout(
            title=dict(text=title, subtitle=dict(text=text, font=dict(color="#b00020", size=12))),
            margin=dict(t=max(fig.layout.margin.t or 0, 90)),
        )
    return fig


@dataclass(frozen=True)
class SavedFigure:
    """The files of a saved figure and its provenance record."""

    html: Path
    png: Path | None
    csv: Path | None
    provenance: Path | None = None
    record: dict | None = None


def _context(run: str) -> provenance.StageContext:
    """The running stage of ``run``; outside one, a context with this checkout's version and commit."""
    ctx = provenance.current()
    if ctx is not None and ctx.run == run:
        return ctx
    return provenance.StageContext("", run, {}, config.package_version(), config.git_commit())


def save_figure(
    fig: go.Figure,
    name: str,
    *,
    run: str,
    data: pd.DataFrame | None = None,
    width: int = 1000,
    height: int = 560,
    inputs=None,
) -> SavedFigure:
    """Write ``fig`` as ``figures/<run>/<name>.html`` (+ ``.png``, + ``.csv`` of ``data``).

    Parameters
    ----------
    fig : the figure; a phantom notice is added to its title for synthetic runs.
    name : file stem, named after the paper's figure (``fig1_overall``, ...).
    run : the run whose figure this is.
    data : the values the figure plots, saved as CSV beside it.
    width, height : static export size in pixels.
    inputs : the files the figure was drawn from; default those the stage has read so far
        (:func:`prunecxr.artifacts.files_read`).

    Every file carries the figure's provenance record (:func:`prunecxr.provenance.collect`),
    also written to ``<name>.provenance.json``.
    """
    out = paths.run_paths(run).figures
    out.mkdir(parents=True, exist_ok=True)
    _stamp(fig, run)
    fig.update_layout(width=None, height=height)
    record = provenance.collect(name, run=run, inputs=inputs, context=_context(run))

    html = out / f"{name}.html"
    with artifacts.atomic_path(html) as tmp:
        fig.write_html(tmp, include_plotlyjs="directory", full_html=True)
        tmp.write_text(
            provenance.html_with_provenance(tmp.read_text(encoding="utf-8"), record),
            encoding="utf-8",
        )
    csv = None
    if data is not None:
        csv = artifacts.write_csv(out / f"{name}.csv", data)
    png = None
    if _ensure_server():
        png = out / f"{name}.png"
        with warnings.catch_warnings():
            # plotly warns that per-call browser options are ignored with a shared server
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            image = fig.to_image(format="png", width=width, height=height, scale=1.5)
        artifacts.write_bytes(png, provenance.png_with_provenance(image, record))
    files = [p.name for p in (html, png, csv) if p is not None]
    side = provenance.write_sidecar(html, record | {"files": files})
    return SavedFigure(html=html, png=png, csv=csv, provenance=side, record=record)


def publish(
    fig: go.Figure,
    name: str,
    *,
    run: str,
    data: pd.DataFrame | None = None,
    width: int = 1000,
    height: int = 560,
    inputs=None,
) -> None:
    """Save ``fig`` (:func:`save_figure`, same parameters) and show it in the notebook, with
    its provenance line under it: the one call a notebook makes for a figure. Returns
    nothing, so that a cell ending in it shows only the figure."""
    from IPython.display import HTML, display

    saved = save_figure(fig, name, run=run, data=data, width=width, height=height, inputs=inputs)
    fig.show()
    display(
        HTML(
            f'<p class="prunecxr-provenance" style="font-size:11px;color:#666">'
            f"{_html.escape(provenance.short_line(saved.record))}</p>"
        )
    )


def png_base64(image: np.ndarray) -> str:
    """An image as a base64 PNG string, for an HTML ``<img src="data:image/png;base64,...">``.

    Parameters
    ----------
    image : ndarray of uint8, shape ``[H, W]`` (grey), ``[H, W, 1]`` or ``[H, W, 3]`` (RGB)

    Returns
    -------
    str
        The lossless PNG (no metadata) in base64 ASCII; decoding it gives back ``image``.
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(
            f"an image must be uint8 [H, W] or [H, W, 3]; got {arr.dtype} {list(arr.shape)}"
        )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def styled_table(df: pd.DataFrame, *, run: str, caption: str, precision: int = 3):
    """A pandas Styler for display in a notebook, captioned with the phantom notice if any."""
    text = notice(run)
    full = caption + (f" — {text}" if text else "")
    return df.style.set_caption(full).format(precision=precision, na_rep="—").hide(axis="index")


def banner(run: str):
    """An HTML banner for the top of a notebook: the run's data provenance."""
    from IPython.display import HTML

    text = notice(run)
    if not text:
        dataset = config.run_dataset(run)
        return HTML(f"<p><b>Run {run!r}</b>: real data ({dataset}).</p>")
    return HTML(
        f'<div style="border:2px solid #b00020;padding:6px 10px;color:#b00020">'
        f"<b>Run {run!r}: {text}</b> Results show what the pipeline does with a real long-tailed "
        "label structure; pixel-level findings (which images are hard, what a radiologist would "
        "see) do not transfer to real X-rays.</div>"
    )
