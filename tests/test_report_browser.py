"""The report, opened in headless Chromium with the network off, shows every figure."""

import os
import shutil

import pytest

from prunecxr import report
from test_report import fabricate_run

CHROMIUM = os.environ.get("PRUNECXR_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")),
        reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def offline_page(browser):
    """A page that can read file:// URLs and nothing else; records what it tried to fetch."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    attempted, errors = [], []

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            attempted.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page, attempted, errors
    context.close()


def _wait_for_plots(page, n):
    page.wait_for_function(
        "n => document.querySelectorAll('.plotly-graph-div svg.main-svg').length >= n "
        "&& Array.from(document.querySelectorAll('.plotly-graph-div'))"
        "        .every(d => d.querySelector('svg.main-svg'))",
        arg=n,
        timeout=30_000,
    )


def test_index_shows_every_figure_offline(offline_page, tmp_path):
    page, attempted, errors = offline_page
    n_figures = 3
    rp = fabricate_run("browser", n_figures=n_figures, notebooks_dir=tmp_path / "nbs")
    index = report.build_report("browser", notebooks_dir=tmp_path / "nbs")

    page.goto(index.as_uri(), wait_until="load")
    _wait_for_plots(page, n_figures)
    blocks = page.locator("div.figure[data-figure]")
    assert blocks.count() == n_figures
    for i in range(n_figures):
        block = blocks.nth(i)
        assert block.locator("svg.main-svg").count() >= 1, block.get_attribute("data-figure")
        # the data were drawn, not only the axes
        assert block.locator("g.scatterlayer path.js-line").count() >= 1
        box = block.locator(".plotly-graph-div").bounding_box()
        assert box["width"] > 300 and box["height"] > 300
        line = block.locator("p.provenance")  # how the figure was made, under it
        assert line.is_visible() and line.inner_text().startswith("run browser · ")
        assert line.bounding_box()["y"] >= box["y"] + box["height"]
    assert "PHANTOM IMAGES" in page.locator("#provenance").inner_text()
    assert page.locator("tr[data-notebook]").count() == 7
    assert attempted == [] and errors == []

    shot = rp.reports / "index.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000  # a blank page compresses to a few kB


def test_notebook_export_shows_its_figures_and_hides_code_offline(offline_page, tmp_path):
    page, attempted, errors = offline_page
    fabricate_run("nbexport", n_figures=2, executed=("03_prune",))
    html = report.build_report("nbexport").parent / "03_prune.html"

    page.goto(html.as_uri(), wait_until="load")
    _wait_for_plots(page, 2)
    code = page.locator("details.prunecxr-code:not(.prunecxr-injected) .jp-InputArea").first
    assert not code.is_visible()
    page.get_by_role("button", name="Show all code").click()
    assert code.is_visible()
    assert attempted == [] and errors == []
    page.screenshot(path=str(html.with_suffix(".png")), full_page=True)
