"""Failure paths of notebook 01 and ``check-data`` (issue 15, items 2, 6 and 8).

Each test reproduced its defect before the fix; every error it asserts names its culprit
(the file, line, column and value, or the image).

- item 2: with classes inferred from a table, a ``2``, ``0.5`` or ``yes`` in a class column
  made the column silently stop being a class, and an all-zero column vanished the same way;
- item 8: ``check-data`` said OK where notebook 01 then failed (a truncated or zero-byte
  image, a table without val or test rows);
- item 6: the image cache's temporary files survived a killed build, even after successful
  reruns.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import prunecxr
from prunecxr import data, paths
from prunecxr.__main__ import main
from prunecxr.data import images
from test_data import (
    BAD_INPUTS,
    RES,
    make_csv,
    make_nih,
    nothing_written,
    rewrite_label_file,
    write_image,
)

pytestmark = pytest.mark.filterwarnings("ignore::prunecxr.data.EmptyClassWarning")

CSV = {"dataset": "csv", "labels_csv": "labels.csv"}


def _edit_csv(root, change) -> None:
    path = root / "labels.csv"
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


def _set(df, row, col, value):
    df.loc[row, col] = value
    return df


def _check_data(capsys, *argv) -> tuple[int, str]:
    code = main(["check-data", *map(str, argv)])
    return code, capsys.readouterr().out


# -- item 2: inferred classes never lose a column silently -------------------------------------


@pytest.mark.parametrize("value", ["2", "0.5", "yes"])
def test_bad_value_in_an_inferred_class_column_is_an_error(value, tmp_path, capsys):
    make_csv(tmp_path)
    _edit_csv(tmp_path, lambda df: _set(df, 6, "Beta", value))  # line 8: images/case3-0.png
    message = (
        rf"label file .*labels\.csv, line 8 \(image 'images/case3-0\.png'\), column 'Beta': "
        rf"value '{re.escape(value)}'; labels must be 0 or 1 \(the column is taken as a class"
    )
    with pytest.raises(ValueError, match=message):
        data.prepare_run("bad", data_root=str(tmp_path), resolution=RES, **CSV)
    assert nothing_written("bad")

    problems = data.check_layout("csv", str(tmp_path), labels_csv="labels.csv")
    assert len(problems) == 1 and re.search(message, problems[0])
    code, out = _check_data(capsys, "--dataset", "csv", "--data-root", tmp_path)
    assert code == 1 and re.search(message, out) and "OK" not in out


def test_all_zero_inferred_column_stays_a_class_and_warns(tmp_path, capsys):
    make_csv(tmp_path)
    _edit_csv(tmp_path, lambda df: df.assign(Delta="0"))
    with pytest.warns(
        data.EmptyClassWarning,
        match=r"split 'train' has no positive image of class\(es\) \['Delta'\]",
    ):
        table = data.prepare_run("zero", data_root=str(tmp_path), resolution=RES, **CSV)
    assert data.class_names(table) == ["Alpha", "Beta", "Gamma", "Delta"]
    assert (table["Delta"] == 0).all()

    code, out = _check_data(capsys, "--dataset", "csv", "--data-root", tmp_path)
    assert code == 0 and out.startswith(
        "warning: split 'train' has no positive image of class(es) ['Delta']"
    )
    assert "OK: dataset 'csv'" in out


def test_columns_of_other_values_are_not_classes(tmp_path):
    """The other side of the rule: an age column with a few ages of 0 or 1 is no class."""
    make_csv(tmp_path)
    _edit_csv(tmp_path, lambda df: _set(_set(df, 0, "age", "0"), 1, "age", "1"))
    ds = data.create_dataset("csv", data_root=str(tmp_path), labels_csv="labels.csv")
    assert ds.classes == ("Alpha", "Beta", "Gamma")


# -- item 8: check-data finds everything notebook 01 refuses -------------------------------------

JPEG = "00000003_000.jpg"  # the fixture's first JPEG (patient 3, image 0: train)
PNG = "00000002_001.png"  # a train PNG


def _truncate(path: Path, keep) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: keep(len(raw))])


BAD_IMAGES = {
    "zero-byte png": (PNG, lambda p: p.write_bytes(b"")),
    "truncated png": (PNG, lambda p: _truncate(p, lambda n: n // 2)),
    "truncated jpeg": (JPEG, lambda p: _truncate(p, lambda n: n // 2)),
    "zero-byte jpeg": (JPEG, lambda p: p.write_bytes(b"")),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_unreadable_image_is_found_by_check_data(case, tmp_path, capsys):
    name, damage = BAD_IMAGES[case]
    make_nih(tmp_path)
    path = tmp_path / "nih-cxr-lt" / "images" / name
    # noise, so that the pixel data is far larger than the header: half a file keeps its header
    noise = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    Image.fromarray(noise, "L").save(path, format="JPEG" if name.endswith(".jpg") else "PNG")
    damage(path)

    culprit = rf"cannot read image {re.escape(str(path))}: "
    with pytest.raises(images.ImageReadError, match=culprit):
        data.prepare_run("bad", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    assert nothing_written("bad")

    problems = data.check_layout("nih-cxr-lt", str(tmp_path))
    assert len(problems) == 1 and re.match(
        rf"1 of 24 images cannot be read, e\.g\. {culprit}", problems[0]
    )
    code, out = _check_data(capsys, "--dataset", "nih-cxr-lt", "--data-root", tmp_path)
    assert code == 1 and str(path) in out


def test_png_that_notebook_01_reads_is_not_reported(tmp_path):
    """A PNG without its end marker fails Pillow's verify() but decodes: both accept it."""
    make_nih(tmp_path)
    _truncate(tmp_path / "nih-cxr-lt" / "images" / PNG, lambda n: n - 5)
    assert data.check_layout("nih-cxr-lt", str(tmp_path)) == []
    data.prepare_run("ok", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)


EMPTY_SPLITS = {
    "csv without test rows": (
        lambda root: (
            make_csv(root, split_column=True),
            _edit_csv(root, lambda df: df.assign(split=df["split"].replace({"test": "train"}))),
        ),
        CSV,
        r"split\(s\) \['test'\] have no image in label file .*labels\.csv \(column 'split'\)",
    ),
    "csv without val rows": (
        lambda root: (
            make_csv(root, split_column=True),
            _edit_csv(root, lambda df: df.assign(split=df["split"].replace({"val": "test"}))),
        ),
        CSV,
        r"split\(s\) \['val'\] have no image in label file .*labels\.csv \(column 'split'\)",
    ),
    "csv of too few patients for a generated split": (
        lambda root: (make_csv(root), _edit_csv(root, lambda df: df.head(4))),
        CSV,
        r"split\(s\) \['val'\] have no image in label file .*labels\.csv "
        r"\(a 70/10/20 split of its 2 patient\(s\)\)",
    ),
    "nih val file without rows": (
        lambda root: (make_nih(root), rewrite_label_file(root, "val", lambda df: df.head(0))),
        {"dataset": "nih-cxr-lt"},
        r"label file .*miccai2023_nih-cxr-lt_labels_val\.csv has no rows: split 'val' has no image",
    ),
}


@pytest.mark.parametrize("case", sorted(EMPTY_SPLITS))
def test_split_without_images_is_found_by_check_data(case, tmp_path):
    make, options, message = EMPTY_SPLITS[case]
    options = dict(options)
    make(tmp_path)
    with pytest.raises(ValueError, match=message):
        data.prepare_run("bad", data_root=str(tmp_path), resolution=RES, **options)
    assert nothing_written("bad")
    dataset = options.pop("dataset")
    problems = data.check_layout(dataset, str(tmp_path), **options)
    assert len(problems) == 1 and re.search(message, problems[0])


#: the culprit each bad input of test_data names
CULPRITS = {
    "missing image": "00000002_001.png",
    "unreadable image": "00000002_001.png",
    "missing class column": "['Hernia']",
    "missing path column": "labels_test.csv",
    "blank label": "column 'Edema'",
    "uncertain label": "column 'Mass'",
    "label 2": "column 'Mass'",
    "duplicate image id": "'00000001_000.png'",
    "patient in two splits": "patient '1'",
    "path escapes the image root": "'../00000009_001.png'",
    "absolute path": "'/etc/passwd'",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_check_data_refuses_what_notebook_01_refuses(case, tmp_path):
    damage, error, _ = BAD_INPUTS[case]
    make_nih(tmp_path)
    if case == "patient in two splits":
        write_image(tmp_path / "nih-cxr-lt/images/00000001_007.png", "gray8")
    damage(tmp_path)
    with pytest.raises(error):
        data.prepare_run("bad", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    problems = data.check_layout("nih-cxr-lt", str(tmp_path))
    assert len(problems) == 1 and CULPRITS[case] in problems[0], problems


# -- item 6: temporaries of a killed cache build ---------------------------------------------------

#: a notebook-01 build that blocks while decoding, to be killed there
_BLOCKED_BUILD = """
import sys, threading, time
from prunecxr import data
from prunecxr.data import images

first = threading.Lock()

def blocked(path, resolution):
    if first.acquire(blocking=False):  # the decoding threads all block; one says so
        print("decoding", flush=True)
    time.sleep(600)

images.load_image = blocked
data.prepare_run("killed", dataset="nih-cxr-lt", data_root=sys.argv[1], resolution=8)
"""


def _temporaries() -> list[Path]:
    return sorted(paths.cache_root().rglob(".*.tmp"))


def _wait_for_line(child: subprocess.Popen, line: str, *, seconds: float) -> None:
    """Read ``child``'s output until ``line``; else kill it and fail with what it printed (never
    block on a live child's stderr: it would hold the test until the child ends)."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        got = child.stdout.readline()
        if got == line:
            return
        if not got:  # the child closed its output: it ended
            break
        seen.append(got)
    child.kill()
    out, err = child.communicate()
    pytest.fail(f"no {line!r} from the child; it printed {''.join(seen) + out!r}, stderr:\n{err}")


def test_killed_cache_build_leaves_no_temporary_after_a_rerun(tmp_path):
    make_nih(tmp_path)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(Path(prunecxr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    child = subprocess.Popen(
        [sys.executable, "-c", _BLOCKED_BUILD, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(child, "decoding\n", seconds=120)
        writing = _temporaries()
        assert [t.name.startswith(".train-") and ".npy." in t.name for t in writing] == [True]

        # another build meanwhile must not delete a temporary that is being written
        data.prepare_run("other", dataset="nih-phantom", resolution=RES, max_patients=30)
        assert all(t.exists() for t in writing)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert writing[0].exists()  # what kill -9 leaves behind

    data.prepare_run("rerun", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    assert _temporaries() == []
    assert len(data.open_split("rerun", "train")) == 16
