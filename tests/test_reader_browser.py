"""A packet in a real headless browser: answer everything, reload, export, analyse.

Uses Playwright's Python API with the system's Chromium (Debian's ``/usr/bin/chromium``, or
the one ``BROWSER_PATH`` names); never a browser downloaded by Playwright. Skipped, with the
reason, where either is missing (CI installs chromium, so it runs there).
"""

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from prunecxr import artifacts, paths
from prunecxr import reader_study as rs
from prunecxr.reader_study import answers as rs_answers
from prunecxr.reader_study import questions as rs_questions

pytestmark = pytest.mark.slow

RUN = "browser"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _chromium():
    for candidate in (
        os.environ.get("BROWSER_PATH"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the playwright package is not installed (pip install '.[test]')",
    )
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install -y chromium, or set BROWSER_PATH)")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        except Exception as err:  # an incompatible or broken browser
            pytest.skip(f"Chromium at {exe} could not be started by Playwright: {err}")
        yield b
        b.close()


def make_study(n_readers=2, images_per_reader=6):
    n = 40
    rng = np.random.default_rng(0)
    ids = [f"{i:08d}_000.png" for i in range(n)]
    labels = pd.DataFrame({"image_id": ids, "patient_id": ids, "split": "test"})
    labels["Effusion"] = (np.arange(n) % 2).astype("int8")
    labels["Nodule"] = (np.arange(n) % 3 == 0).astype("int8")
    rp = paths.run_paths(RUN)
    artifacts.write_parquet(rp.labels, labels)
    artifacts.write_json(
        rp.run_json,
        {
            "run": RUN,
            "parameters": {},
            "stages": {},
            "data": {"dataset": "nih-phantom", "synthetic": True},
        },
    )
    artifacts.write_parquet(
        rp.pies("global_l1"),
        pd.DataFrame({"image_id": ids, "spearman": 0.0, "is_pie": np.arange(n) % 4 == 0}),
    )
    split = SimpleNamespace(images=rng.integers(0, 256, (n, 32, 32), dtype=np.uint8), image_ids=ids)
    key = rs.assign_images(
        rs.load_pies(RUN),
        n_readers=n_readers,
        images_per_reader=images_per_reader,
        seed=3,
        study=RUN,
    )
    packets = rs.write_study(RUN, key, split=split)
    return rs.read_key(RUN), packets


def intended(is_pie):
    """What the test answers: PIEs yes/1/5, non-PIEs no/5/1 — recognisable after the join."""
    return (
        {"agree": "yes", "quality": "1", "difficulty": "5"}
        if is_pie
        else {"agree": "no", "quality": "5", "difficulty": "1"}
    )


def test_packet_round_trip_in_chromium(browser, tmp_path):
    key, packets = make_study()
    pie_of = key.set_index("code")["is_pie"]
    context = browser.new_context(accept_downloads=True)
    requests = []
    context.on("request", lambda req: requests.append(req.url))
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    url = packets["reader-1"].as_uri()
    page.goto(url)

    codes = page.eval_on_selector_all("section.item", "els => els.map(e => e.dataset.code)")
    mine = key[key["reader"] == "reader-1"].sort_values("position")
    assert codes == mine["code"].tolist()
    assert page.inner_text("#progress") == "0 of 6 images answered"

    # answer the first half, then reload: the answers must come back from localStorage
    half = len(codes) // 2
    for code in codes[:half]:
        for question, value in intended(pie_of[code]).items():
            page.check(f'input[name="{code}:{question}"][value="{value}"]')
    page.reload()
    for code in codes[:half]:
        for question, value in intended(pie_of[code]).items():
            assert page.is_checked(f'input[name="{code}:{question}"][value="{value}"]')
    assert page.inner_text("#progress") == f"{half} of 6 images answered"

    # a fresh tab of the same browser profile, as after closing the page: still there
    page.close()
    page = context.new_page()
    page.goto(url)
    assert page.inner_text("#progress") == f"{half} of 6 images answered"
    for code in codes[half:]:
        for question, value in intended(pie_of[code]).items():
            page.check(f'input[name="{code}:{question}"][value="{value}"]')
    assert page.inner_text("#progress") == "6 of 6 images answered"

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "reader-1_responses.csv"
    target = paths.run_paths(RUN).reader_responses / download.suggested_filename
    download.save_as(target)
    assert "all images answered" in page.inner_text("#status")

    # another reader's packet keeps its own answers (none yet)
    other = context.new_page()
    other.goto(packets["reader-2"].as_uri())
    assert other.inner_text("#progress") == "0 of 6 images answered"
    assert other.eval_on_selector_all("input:checked", "els => els.length") == 0
    context.close()

    assert not errors
    # nothing fetched from elsewhere: only the file itself and its embedded data
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests

    exported = pd.read_csv(target, dtype=str)
    assert list(exported.columns) == list(rs_answers.RESPONSE_COLUMNS)
    assert (exported["reader"] == "reader-1").all()
    assert (exported["packet_id"] == mine["packet_id"].iloc[0]).all()

    files = rs.collect_responses(RUN, key)
    assert not files.simulated and files.files == (target,)
    answers = rs.read_responses(files.files, key)
    assert len(answers) == 6 and answers[list(rs_questions.QUESTION_NAMES)].notna().all().all()
    pie = answers[answers["group"] == "PIE"]
    non = answers[answers["group"] == "non-PIE"]
    assert len(pie) == 3 and len(non) == 3
    assert (pie[["agree", "quality", "difficulty"]].to_numpy() == [1, 1, 5]).all()
    assert (non[["agree", "quality", "difficulty"]].to_numpy() == [0, 5, 1]).all()
    tests = rs.compare_groups(answers).set_index("question")
    assert tests.at["agree", "mean_pie"] == 1 and tests.at["agree", "mean_non_pie"] == 0
    assert tests.at["difficulty", "mean_pie"] == 5 and tests.at["quality", "mean_non_pie"] == 5


def test_partial_export_leaves_cells_empty(browser):
    key, packets = make_study(n_readers=1, images_per_reader=4)
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(packets["reader-1"].as_uri())
    first = key.sort_values("position")["code"].iloc[0]
    page.check(f'input[name="{first}:quality"][value="4"]')
    with page.expect_download() as info:
        page.click("#download")
    path = paths.run_paths(RUN).reader_responses / "partial.csv"
    info.value.save_as(path)
    assert "4 images still incomplete" in page.inner_text("#status")
    context.close()
    answers = rs.read_responses([path], key)
    assert answers["quality"].notna().sum() == 1 and answers["agree"].isna().all()
    assert answers.set_index("code").at[first, "quality"] == 4
