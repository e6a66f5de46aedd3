"""prunecxr.data: dataset specs, label tables, splits, images, the image cache, summaries.

Every dataset of the registry loads fixture label files with tiny generated images of
every kind (8-bit gray, RGB, RGBA, 16-bit PNG, JPEG); every bad input raises an error that
names what is wrong and leaves nothing written.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from prunecxr import artifacts, config, data, paths
from prunecxr.data import cache, images, phantom, specs, splits, summaries, tables

pytestmark = pytest.mark.filterwarnings("ignore::prunecxr.data.EmptyClassWarning")

SIZE = 32  # side of the generated image files
RES = 8  # cache resolution in these tests
LOW, HIGH = 40, 200  # the top half of every generated image is LOW, the bottom half HIGH
KINDS = ("gray8", "rgb", "rgba", "gray16", "jpeg")
N_PATIENTS = 12  # 2 images each; patients 0-7 train, 8-9 val, 10-11 test in the given splits


# -- fixtures: tiny generated datasets -----------------------------------------------------


def write_image(path, kind: str) -> None:
    """A SIZE×SIZE image of ``kind``: top half LOW, bottom half HIGH (16-bit: 1000 / 4000)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((SIZE, SIZE), LOW, np.uint8)
    arr[SIZE // 2 :] = HIGH
    if kind == "gray8":
        Image.fromarray(arr, "L").save(path, format="PNG")
    elif kind == "rgb":
        Image.fromarray(np.stack([arr] * 3, -1), "RGB").save(path, format="PNG")
    elif kind == "rgba":
        alpha = np.full_like(arr, 128)  # alpha is ignored
        Image.fromarray(np.stack([arr] * 3 + [alpha], -1), "RGBA").save(path, format="PNG")
    elif kind == "gray16":
        wide = np.where(arr == LOW, 1000, 4000).astype(np.uint16)  # 12-bit range in 16 bits
        Image.fromarray(wide).save(path, format="PNG")
    elif kind == "jpeg":
        Image.fromarray(arr, "L").save(path, format="JPEG", quality=95)
    else:  # pragma: no cover
        raise ValueError(kind)


def expected_halves(kind: str) -> tuple[int, int]:
    return (0, 255) if kind == "gray16" else (LOW, HIGH)


def _split_of(patient: int) -> str:
    return "train" if patient < 8 else "val" if patient < 10 else "test"


def _labels(n: int, classes) -> np.ndarray:
    """0/1 labels where every class has a positive among any 3 consecutive images."""
    i = np.arange(n)[:, None]
    c = np.arange(len(classes))[None, :]
    return ((i + c) % 3 == 0).astype(int)


def _ext(kind: str) -> str:
    return "jpg" if kind == "jpeg" else "png"


def make_nih(root, *, subj_id: bool = False) -> list[dict]:
    """``root/nih-cxr-lt/`` with images/ and the three NIH-CXR-LT label files."""
    folder = root / "nih-cxr-lt"
    rows = []
    for p in range(N_PATIENTS):
        for k in range(2):
            kind = KINDS[(2 * p + k) % len(KINDS)]
            name = f"{p + 1:08d}_{k:03d}.{_ext(kind)}"
            write_image(folder / "images" / name, kind)
            rows.append({"id": name, "kind": kind, "patient": p, "split": _split_of(p)})
    df = pd.DataFrame(rows)
    y = _labels(len(df), specs.NIH_CXR_LT_CLASSES)
    for j, c in enumerate(specs.NIH_CXR_LT_CLASSES):
        df[c] = y[:, j]
    if subj_id:
        df["subj_id"] = df["patient"] + 1
    for split, name in zip(data.SPLITS, data.DATASETS["nih-cxr-lt"].label_files):
        part = df[df["split"] == split].drop(columns=["kind", "patient", "split"])
        part.to_csv(folder / name, index=False)
    return rows


def make_mimic(root, *, subject_id: bool = True) -> list[dict]:
    """``root/mimic-cxr-lt/`` with mimic-cxr-jpg/files/... and the MIMIC-CXR-LT label files."""
    folder = root / "mimic-cxr-lt"
    rows = []
    for p in range(N_PATIENTS):
        sid = 10000000 + p
        for k in range(2):
            kind = KINDS[(2 * p + k + 1) % len(KINDS)]
            rel = f"files/p{str(sid)[:2]}/p{sid}/s{50000000 + 2 * p + k}/dicom{p}-{k}.{_ext(kind)}"
            write_image(folder / "mimic-cxr-jpg" / rel, kind)
            rows.append(
                {"path": rel, "kind": kind, "patient": p, "split": _split_of(p), "subject_id": sid}
            )
    df = pd.DataFrame(rows)
    y = _labels(len(df), specs.MIMIC_CXR_LT_CLASSES)
    for j, c in enumerate(specs.MIMIC_CXR_LT_CLASSES):
        df[c] = y[:, j]
    if not subject_id:
        df = df.drop(columns=["subject_id"])
    for split, name in zip(data.SPLITS, data.DATASETS["mimic-cxr-lt"].label_files):
        part = df[df["split"] == split].drop(columns=["kind", "patient", "split"])
        part.to_csv(folder / name, index=False)
    return rows


CSV_CLASSES = ("Alpha", "Beta", "Gamma")


def make_csv(root, *, split_column: bool = False) -> list[dict]:
    """``root/labels.csv`` (path, patient_id, Alpha, Beta, Gamma, age[, split]) and images/."""
    rows = []
    for p in range(20):
        for k in range(2):
            kind = KINDS[(2 * p + k) % len(KINDS)]
            rel = f"images/case{p}-{k}.{_ext(kind)}"
            write_image(root / rel, kind)
            rows.append({"path": rel, "kind": kind, "patient": p, "split": _split_of(p % 12)})
    df = pd.DataFrame(rows)
    y = _labels(len(df), CSV_CLASSES)
    out = pd.DataFrame({"path": df["path"], "patient_id": [f"P{p}" for p in df["patient"]]})
    for j, c in enumerate(CSV_CLASSES):
        out[c] = y[:, j]
    out["age"] = 30 + df["patient"]  # numeric but not 0/1: never inferred as a class
    if split_column:
        out["split"] = df["split"]
    out.to_csv(root / "labels.csv", index=False)
    return rows


def make_dataset(name: str, root) -> tuple[dict, list[dict]]:
    """Fixture files for dataset ``name``: (prepare_run options, rows with their kinds)."""
    if name == "nih-cxr-lt":
        return {"data_root": str(root)}, make_nih(root)
    if name == "mimic-cxr-lt":
        return {"data_root": str(root)}, make_mimic(root)
    if name == "csv":
        return {"data_root": str(root), "labels_csv": "labels.csv"}, make_csv(root)
    if name == "nih-phantom":
        return {"max_patients": 40}, []
    raise AssertionError(f"no fixture for dataset {name!r}: add one")  # pragma: no cover


def nothing_written(run: str) -> bool:
    rp = paths.run_paths(run)
    cache = list(paths.cache_root().rglob("*.npy")) if paths.cache_root().exists() else []
    return not rp.labels.exists() and not cache


# -- every dataset of the registry ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_every_dataset_prepares_a_run(name, tmp_path):
    options, rows = make_dataset(name, tmp_path)
    table = data.prepare_run("r", dataset=name, resolution=RES, **options)

    written = pd.read_parquet(paths.run_paths("r").labels)
    classes = list(
        data.create_dataset(
            name, **{k: v for k, v in options.items() if k != "max_patients"}
        ).classes
    )
    assert list(written.columns) == ["image_id", "patient_id", "split", *classes]
    assert all(written[c].dtype == np.int8 for c in classes)
    assert set(written["split"]) == set(data.SPLITS)
    assert written["image_id"].is_unique
    assert written.groupby("patient_id")["split"].nunique().max() == 1
    pd.testing.assert_frame_equal(written, table, check_dtype=False)
    if rows:
        assert len(written) == len(rows)

    kinds = {r.get("id", r.get("path")): r["kind"] for r in rows}
    for split in data.SPLITS:
        s = data.open_split("r", split)
        part = written[written["split"] == split]
        assert s.images.dtype == np.uint8 and s.images.shape == (len(part), RES, RES)
        assert isinstance(s.images, np.memmap)
        assert s.labels.dtype == np.uint8 and s.labels.shape == (len(part), len(classes))
        assert list(s.image_ids) == part["image_id"].tolist()
        assert s.classes == classes
        np.testing.assert_array_equal(s.labels, part[classes].to_numpy())
        for img, image_id in zip(s.images, s.image_ids):
            if image_id not in kinds:
                continue
            low, high = expected_halves(kinds[image_id])
            tol = 3 if kinds[image_id] == "jpeg" else 0
            assert np.abs(img[:2].astype(int) - low).max() <= tol, (image_id, kinds[image_id])
            assert np.abs(img[-2:].astype(int) - high).max() <= tol, (image_id, kinds[image_id])

    info = config.run_data("r")
    assert info["dataset"] == name and info["classes"] == classes
    assert config.run_dataset("r") == name
    assert config.is_synthetic("r") == data.DATASETS[name].synthetic


def test_phantom_run_records_difficulty_and_drawn_locations():
    """A phantom run writes locations.parquet (one row per positive finding, boxes inside the
    image, reused with the cache) and records its difficulty condition; the conditions are
    different caches."""
    data.prepare_run("p", dataset="nih-phantom", resolution=RES, max_patients=40)
    labels = artifacts.read_labels("p")
    loc = artifacts.read_locations("p")
    assert list(loc.columns) == list(artifacts.LOCATIONS_COLUMNS)
    findings = [c for c in phantom.FINDINGS]
    assert len(loc) == int(labels[findings].to_numpy().sum())
    merged = loc.merge(labels[["image_id", "split"]], on="image_id", suffixes=("", "_labels"))
    assert (merged["split"] == merged["split_labels"]).all()
    drawn = loc[loc["pixels"] > 0]
    assert ((drawn["x0"] >= 0) & (drawn["x0"] < drawn["x1"]) & (drawn["x1"] <= RES)).all()
    assert ((drawn["y0"] >= 0) & (drawn["y0"] < drawn["y1"]) & (drawn["y1"] <= RES)).all()
    record = config.run_data("p")["phantom_difficulty"]
    assert record == {"condition": "calibrated", "strength": phantom.strengths("calibrated")}
    summary = data.difficulty_table("p")
    assert list(summary["finding"]) == list(phantom.FINDINGS)

    data.prepare_run("q", dataset="nih-phantom", resolution=RES, max_patients=40)
    assert config.run_data("q")["cache_reused"] == {s: True for s in data.SPLITS}
    pd.testing.assert_frame_equal(artifacts.read_locations("q"), loc)

    data.prepare_run(
        "e", dataset="nih-phantom", resolution=RES, max_patients=40, phantom_difficulty="equal"
    )
    assert config.run_data("e")["phantom_difficulty"]["condition"] == "equal"
    if phantom.strengths("equal") != phantom.strengths("calibrated"):
        assert (
            config.run_data("e")["cache"]["test"]["key"]
            != config.run_data("p")["cache"]["test"]["key"]
        )


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_every_dataset_layout_checks_clean(name, tmp_path):
    options, _ = make_dataset(name, tmp_path)
    options.pop("max_patients", None)
    data_root = options.pop("data_root", "")
    assert data.check_layout(name, data_root, **options) == []
    assert data.format_layout_report(name, data_root, [], **options).startswith("OK")


def test_nih_patient_from_image_name_or_subj_id(tmp_path):
    make_nih(tmp_path)
    by_name = data.create_dataset("nih-cxr-lt", data_root=str(tmp_path)).table()
    assert by_name["patient_id"].iloc[0] == "1"  # 00000001_000.png
    make_nih(tmp_path / "b", subj_id=True)
    by_col = data.create_dataset("nih-cxr-lt", data_root=str(tmp_path / "b")).table()
    assert by_col["patient_id"].tolist() == by_name["patient_id"].tolist()


def test_mimic_patient_from_subject_id_or_path(tmp_path):
    make_mimic(tmp_path)
    a = data.create_dataset("mimic-cxr-lt", data_root=str(tmp_path)).table()
    make_mimic(tmp_path / "b", subject_id=False)
    b = data.create_dataset("mimic-cxr-lt", data_root=str(tmp_path / "b")).table()
    assert a["patient_id"].iloc[0] == "10000000"
    assert a["patient_id"].tolist() == b["patient_id"].tolist()


def test_data_root_may_be_the_dataset_folder_or_its_parent(tmp_path):
    make_nih(tmp_path)
    parent = data.create_dataset("nih-cxr-lt", data_root=str(tmp_path)).table()
    itself = data.create_dataset("nih-cxr-lt", data_root=str(tmp_path / "nih-cxr-lt")).table()
    pd.testing.assert_frame_equal(parent, itself)


def test_data_root_from_environment(tmp_path, monkeypatch):
    make_nih(tmp_path)
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert len(data.create_dataset("nih-cxr-lt").table()) == 2 * N_PATIENTS


def test_csv_infers_columns_and_splits_by_patient(tmp_path):
    make_csv(tmp_path)
    ds = data.create_dataset("csv", data_root=str(tmp_path), labels_csv="labels.csv", split_seed=3)
    assert ds.classes == CSV_CLASSES  # "age" is numeric but not 0/1
    table = ds.table()
    patients = table.groupby("split")["patient_id"].nunique()
    assert patients.to_dict() == {"train": 14, "val": 2, "test": 4}  # 70/10/20 of 20
    assert table.groupby("patient_id")["split"].nunique().max() == 1


def test_csv_split_column_and_named_columns(tmp_path):
    make_csv(tmp_path, split_column=True)
    ds = data.create_dataset(
        "csv",
        data_root=str(tmp_path),
        labels_csv="labels.csv",
        class_columns=["Gamma", "Alpha"],
        image_column="path",
        patient_column="patient_id",
        split_column="split",
    )
    table = ds.table()
    assert list(table.columns[3:]) == ["Gamma", "Alpha"]
    expected = pd.read_csv(tmp_path / "labels.csv")["split"].tolist()
    assert table["split"].tolist() == expected


def test_csv_without_patient_column_uses_one_patient_per_image(tmp_path):
    make_csv(tmp_path)
    df = pd.read_csv(tmp_path / "labels.csv").drop(columns=["patient_id"])
    df.to_csv(tmp_path / "nopat.csv", index=False)
    table = data.create_dataset("csv", data_root=str(tmp_path), labels_csv="nopat.csv").table()
    assert table["patient_id"].tolist() == table["image_id"].tolist()


# -- image decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_load_image_every_kind(kind, tmp_path):
    path = tmp_path / f"x.{_ext(kind)}"
    write_image(path, kind)
    img = images.load_image(path, RES)
    assert img.dtype == np.uint8 and img.shape == (RES, RES)
    low, high = expected_halves(kind)
    tol = 3 if kind == "jpeg" else 0
    assert np.abs(img[:2].astype(int) - low).max() <= tol
    assert np.abs(img[-2:].astype(int) - high).max() <= tol


def test_load_image_resizes_without_cropping(tmp_path):
    """A wide image is squeezed, not cropped: its right-most column survives the resize."""
    arr = np.zeros((SIZE, 4 * SIZE), np.uint8)
    arr[:, -SIZE // 2 :] = 255  # the right eighth is white
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img = images.load_image(tmp_path / "wide.png", 16)
    assert img.shape == (16, 16)
    assert (img[:, -1] == 255).all() and (img[:, 0] == 0).all()
    assert (img[:, :13] == 0).all()  # 7/8 of the width stays black


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image .*nope\.png does not exist"):
        images.load_image(tmp_path / "nope.png", RES)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(images.ImageReadError, match=r"cannot read image .*bad\.png"):
        images.load_image(tmp_path / "bad.png", RES)


def test_resolution_is_validated():
    for bad in (4, 4096, 64.0, "64", True):
        with pytest.raises(ValueError, match="resolution"):
            images.check_resolution(bad)


# -- the image cache ---------------------------------------------------------------------------


def test_cache_is_reused_and_keyed_by_its_inputs(tmp_path):
    make_nih(tmp_path)
    opts = dict(dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    data.prepare_run("a", **opts)
    first = config.run_data("a")
    assert not any(first["cache_reused"].values())
    data.prepare_run("b", **opts)  # another run, same inputs: same files, reused
    second = config.run_data("b")
    assert all(second["cache_reused"].values())
    assert second["cache"] == first["cache"]

    # a changed image file changes the key of its split only
    img = tmp_path / "nih-cxr-lt" / "images" / "00000001_000.png"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    data.prepare_run("c", **opts)
    third = config.run_data("c")
    assert third["cache"]["train"]["key"] != first["cache"]["train"]["key"]
    assert third["cache"]["test"] == first["cache"]["test"]

    # another resolution is another cache
    data.prepare_run("d", **{**opts, "resolution": 16})
    assert config.run_data("d")["cache"]["val"]["path"].startswith("nih-cxr-lt/16px/")


def test_cache_manifest_lists_the_inputs(tmp_path):
    make_nih(tmp_path)
    data.prepare_run("a", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    entry = config.run_data("a")["cache"]["val"]
    manifest = json.loads((paths.cache_root() / entry["path"]).with_suffix(".json").read_text())
    assert (
        manifest["key"]
        == entry["key"]
        == cache.manifest_key({k: v for k, v in manifest.items() if k not in ("key", "image_ids")})
    )
    assert manifest["image_ids"] == data.open_split("a", "val").image_ids.tolist()
    assert manifest["resolution"] == RES and manifest["source"]["kind"] == "files"


def test_open_split_refuses_a_missing_or_foreign_cache(tmp_path):
    make_nih(tmp_path)
    data.prepare_run("a", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    entry = config.run_data("a")["cache"]["test"]
    npy = paths.cache_root() / entry["path"]
    manifest = json.loads(npy.with_suffix(".json").read_text())
    manifest["image_ids"] = manifest["image_ids"][::-1]
    npy.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="built for other images"):
        data.open_split("a", "test")
    npy.unlink()
    with pytest.raises(FileNotFoundError, match="re-run notebook 01_data"):
        data.open_split("a", "test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.open_split("a", "dev")


def test_open_split_before_notebook_01():
    with pytest.raises(FileNotFoundError, match="notebook 01_data"):
        data.open_split("never", "train")


# -- bad inputs: each raises its error and writes nothing ------------------------------------------


def rewrite_label_file(root, split: str, change) -> None:
    """Apply ``change`` (DataFrame → DataFrame) to a split's NIH-CXR-LT label file."""
    path = root / "nih-cxr-lt" / f"miccai2023_nih-cxr-lt_labels_{split}.csv"
    df = pd.read_csv(path, dtype=str)
    change(df).to_csv(path, index=False)


def set_value(df, row, col, value):
    """``df`` with ``df.loc[row, col] = value``."""
    df.loc[row, col] = value
    return df


BAD_INPUTS = {
    "missing image": (
        lambda root: (root / "nih-cxr-lt/images/00000002_001.png").unlink(),
        FileNotFoundError,
        r"1 of 16 images are missing, e\.g\. .*00000002_001\.png.*data_access\.md",
    ),
    "unreadable image": (
        lambda root: (root / "nih-cxr-lt/images/00000002_001.png").write_bytes(b"garbage"),
        images.ImageReadError,
        r"cannot read image .*00000002_001\.png",
    ),
    "missing class column": (
        lambda root: rewrite_label_file(root, "val", lambda df: df.drop(columns=["Hernia"])),
        ValueError,
        r"labels_val\.csv is missing the class column\(s\) \['Hernia'\]",
    ),
    "missing path column": (
        lambda root: rewrite_label_file(
            root, "test", lambda df: df.rename(columns={"id": "image"})
        ),
        ValueError,
        r"labels_test\.csv is missing the image path column\(s\) \['id'\]",
    ),
    "blank label": (
        lambda root: rewrite_label_file(root, "train", lambda df: set_value(df, 1, "Edema", "")),
        ValueError,
        r"labels_train\.csv, line 3 \(image '00000001_001\.png'\), column 'Edema': "
        r"value blank; .*uncertain='zero' or 'one'",
    ),
    "uncertain label": (
        lambda root: rewrite_label_file(root, "val", lambda df: set_value(df, 0, "Mass", "-1")),
        ValueError,
        r"labels_val\.csv, line 2 .*column 'Mass': value '-1'; .*uncertain",
    ),
    "label 2": (
        lambda root: rewrite_label_file(root, "val", lambda df: set_value(df, 0, "Mass", "2")),
        ValueError,
        r"column 'Mass': value '2'; labels must be 0 or 1",
    ),
    "duplicate image id": (
        lambda root: rewrite_label_file(
            root, "test", lambda df: set_value(df, 0, "id", "00000001_000.png")
        ),
        ValueError,
        r"image id '00000001_000\.png' appears 2 times \(miccai2023_nih-cxr-lt_labels_train\.csv line 2, "
        r"miccai2023_nih-cxr-lt_labels_test\.csv line 2\)",
    ),
    "patient in two splits": (
        lambda root: rewrite_label_file(
            root, "test", lambda df: set_value(df, 0, "id", "00000001_007.png")
        ),
        ValueError,
        r"patient '1' appears in splits \['test', 'train'\]",
    ),
    "path escapes the image root": (
        lambda root: rewrite_label_file(
            root, "val", lambda df: set_value(df, 1, "id", "../00000009_001.png")
        ),
        ValueError,
        r"labels_val\.csv, line 3: image path '\.\./00000009_001\.png' escapes the image root",
    ),
    "absolute path": (
        lambda root: rewrite_label_file(
            root, "val", lambda df: set_value(df, 1, "id", "/etc/passwd")
        ),
        ValueError,
        r"image path '/etc/passwd' escapes the image root",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_and_writes_nothing(case, tmp_path):
    damage, error, message = BAD_INPUTS[case]
    make_nih(tmp_path)
    if case == "patient in two splits":  # the image file must exist for this one
        write_image(tmp_path / "nih-cxr-lt/images/00000001_007.png", "gray8")
    damage(tmp_path)
    with pytest.raises(error, match=message):
        data.prepare_run("bad", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)
    assert nothing_written("bad")


def test_bad_input_is_reported_by_check_layout(tmp_path):
    make_nih(tmp_path)
    (tmp_path / "nih-cxr-lt/images/00000002_001.png").unlink()
    problems = data.check_layout("nih-cxr-lt", str(tmp_path))
    assert len(problems) == 1 and "1 of 24 images are missing" in problems[0]
    report = data.format_layout_report("nih-cxr-lt", str(tmp_path), problems)
    assert "1 problem(s)" in report and "data_access.md" in report

    (tmp_path / "nih-cxr-lt/miccai2023_nih-cxr-lt_labels_val.csv").unlink()
    problems = data.check_layout("nih-cxr-lt", str(tmp_path))
    assert problems == [
        f"label file {tmp_path / 'nih-cxr-lt'}/miccai2023_nih-cxr-lt_labels_val.csv is missing"
    ]


@pytest.mark.parametrize("policy, expected", [("zero", 0), ("one", 1)])
def test_uncertain_policy(policy, expected, tmp_path):
    make_nih(tmp_path)
    rewrite_label_file(
        tmp_path, "train", lambda df: set_value(set_value(df, 0, "Mass", "-1"), 1, "Edema", "")
    )
    table = data.prepare_run(
        "u", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES, uncertain=policy
    )
    assert table.loc[0, "Mass"] == expected  # -1: uncertain
    assert table.loc[1, "Edema"] == 0  # blank: not mentioned


def test_labels_to_int8_hand_computed(tmp_path):
    df = pd.DataFrame({"a": ["1", "0", "-1", None], "b": ["0", "1.0", "1", "0"]})
    path = tmp_path / "x.csv"
    np.testing.assert_array_equal(
        tables.labels_to_int8(df, ["a", "b"], path=path, uncertain="zero"),
        [[1, 0], [0, 1], [0, 1], [0, 0]],
    )
    np.testing.assert_array_equal(
        tables.labels_to_int8(df, ["b", "a"], path=path, uncertain="one"),
        [[0, 1], [1, 0], [1, 1], [0, 0]],
    )
    with pytest.raises(ValueError, match=r"x\.csv, line 4, column 'a': value '-1'"):
        tables.labels_to_int8(df, ["a", "b"], path=path)
    with pytest.raises(ValueError, match=r"unknown uncertain='maybe'"):
        tables.labels_to_int8(df, ["a"], path=path, uncertain="maybe")
    yes = pd.DataFrame({"a": ["1", "yes"]})
    with pytest.raises(ValueError, match=r"line 3, column 'a': value 'yes'; labels must be 0 or 1"):
        tables.labels_to_int8(yes, ["a"], path=path, uncertain="one")


def test_missing_data_directory_points_to_data_access(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"does not exist; see data_access\.md"):
        data.prepare_run(
            "m", dataset="nih-cxr-lt", data_root=str(tmp_path / "nowhere"), resolution=RES
        )
    with pytest.raises(FileNotFoundError, match=r"PRUNECXR_DATA .*data_access\.md"):
        data.prepare_run("m", dataset="mimic-cxr-lt", resolution=RES)
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "gone"))
    with pytest.raises(
        FileNotFoundError, match=r"environment variable PRUNECXR_DATA.*data_access\.md"
    ):
        data.prepare_run("m", dataset="mimic-cxr-lt", resolution=RES)
    assert nothing_written("m")
    problems = data.check_layout("nih-cxr-lt", str(tmp_path / "nowhere"))
    assert len(problems) == 1 and "data_access.md" in problems[0]


def test_unknown_names_and_options():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'nih'; choose one of \['csv', 'mimic-cxr-lt'"
    ):
        data.prepare_run("x", dataset="nih", resolution=RES)
    with pytest.raises(ValueError, match=r"unknown dataset 'nih'"):
        data.check_layout("nih", "")
    with pytest.raises(ValueError, match=r"unknown profile 'fast'"):
        config.load_profile("fast")
    with pytest.raises(ValueError, match=r"\['labels_csv'\] apply only to dataset 'csv'"):
        data.create_dataset("nih-cxr-lt", labels_csv="x.csv")
    with pytest.raises(ValueError, match=r"'nih-phantom' reads no files: leave data_root empty"):
        data.create_dataset("nih-phantom", data_root="/data")
    with pytest.raises(ValueError, match=r"unknown uncertain='maybe'"):
        data.create_dataset("nih-phantom", uncertain="maybe")
    with pytest.raises(TypeError, match="max_pateints"):
        data.prepare_run("x", dataset="nih-phantom", resolution=RES, max_pateints=3)
    with pytest.raises(ValueError, match="max_patients must be an int >= 0"):
        data.prepare_run("x", dataset="nih-phantom", resolution=RES, max_patients=-1)
    with pytest.raises(ValueError, match="invalid run name"):
        data.prepare_run("../x", dataset="nih-phantom", resolution=RES)
    with pytest.raises(
        FileNotFoundError, match=r"label file .*labels\.csv does not exist \(see data_access\.md\)"
    ):
        data.create_dataset("csv", data_root=".").table()


def test_csv_bad_split_value(tmp_path):
    make_csv(tmp_path, split_column=True)
    df = pd.read_csv(tmp_path / "labels.csv")
    df.loc[5, "split"] = "dev"
    df.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels\.csv, line 7: split 'dev' in column 'split'"):
        data.create_dataset("csv", data_root=str(tmp_path), labels_csv="labels.csv").table()


def test_class_without_positive_warns(tmp_path):
    make_nih(tmp_path)
    rewrite_label_file(tmp_path, "val", lambda df: df.assign(Hernia="0"))
    with pytest.warns(
        data.EmptyClassWarning,
        match=r"split 'val' has no positive image of class\(es\) \['Hernia'\]",
    ):
        data.prepare_run("w", dataset="nih-cxr-lt", data_root=str(tmp_path), resolution=RES)


def test_empty_split_is_an_error(tmp_path):
    make_csv(tmp_path, split_column=True)
    df = pd.read_csv(tmp_path / "labels.csv")
    df["split"] = df["split"].replace({"val": "train"})
    df.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"split\(s\) \['val'\] have no image"):
        data.prepare_run(
            "e", dataset="csv", data_root=str(tmp_path), labels_csv="labels.csv", resolution=RES
        )


# -- splits and subsamples ------------------------------------------------------------------------


def test_patient_split_proportions_hand_computed():
    split = splits.patient_split([f"p{i}" for i in range(10)] * 3, seed=1)
    counts = pd.Series(split).value_counts().to_dict()
    assert counts == {"train": 7, "test": 2, "val": 1}
    assert splits.patient_split([f"p{i}" for i in reversed(range(10))], seed=1) == split
    assert splits.patient_split([f"p{i}" for i in range(10)], seed=2) != split


def _toy_table(n_patients=50):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_patients):
        split = data.SPLITS[p % 10 // 7 + (p % 10 >= 8)]
        for k in range(1 + p % 3):
            rows.append(
                {
                    "image_id": f"{p}-{k}",
                    "patient_id": str(p),
                    "split": split,
                    "A": int(rng.random() < 0.3),
                }
            )
    return pd.DataFrame(rows)


def test_subsample_is_patient_level_proportional_and_nested():
    table = _toy_table()
    small = splits.subsample_patients(table, 10, seed=0)
    large = splits.subsample_patients(table, 20, seed=0)
    assert small["patient_id"].nunique() == 10 and large["patient_id"].nunique() == 20
    assert set(small["patient_id"]) <= set(large["patient_id"])
    # every image of a kept patient is kept
    kept = table[table["patient_id"].isin(small["patient_id"])]
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), small)
    assert small.groupby("split")["patient_id"].nunique().to_dict() == {
        "train": 7,
        "val": 1,
        "test": 2,
    }
    # not by row order: shuffled rows keep the same patients
    shuffled = table.sample(frac=1, random_state=3)
    assert set(splits.subsample_patients(shuffled, 10)["patient_id"]) == set(small["patient_id"])
    assert set(splits.subsample_patients(table, 10, seed=1)["patient_id"]) != set(
        small["patient_id"]
    )
    assert len(splits.subsample_patients(table, 0)) == len(table)
    with pytest.raises(ValueError, match="max_patients=2 is too small"):
        splits.subsample_patients(table, 2)


def test_tiny_phantom_run_is_fast():
    data.prepare_run("warm", dataset="nih-phantom", resolution=16, max_patients=60)
    start = time.process_time()  # CPU time of this process: robust to a busy machine
    table = data.prepare_run("t", dataset="nih-phantom", resolution=16, max_patients=60)
    assert time.process_time() - start < 2.0
    assert table["patient_id"].nunique() == 60
    assert data.open_split("t", "train").images.shape[1:] == (16, 16)


# -- summaries of notebook 01 ---------------------------------------------------------------------


def test_class_iou_table_hand_computed():
    labels = pd.DataFrame(
        {
            "image_id": list("abcd"),
            "patient_id": list("abcd"),
            "split": ["train"] * 4,
            "A": [1, 1, 0, 0],
            "B": [1, 0, 1, 0],
            "C": [0, 0, 0, 0],
        }
    )
    iou = data.class_iou_table(labels)
    assert iou.loc["A", "B"] == pytest.approx(1 / 3)  # {a} / {a, b, c}
    assert iou.loc["A", "A"] == 1.0
    assert np.isnan(iou.loc["C", "C"]) and iou.loc["A", "C"] == 0.0
    np.testing.assert_array_equal(iou.to_numpy(), iou.to_numpy().T)


def test_summaries_hand_computed():
    labels = pd.DataFrame(
        {
            "image_id": list("abcde"),
            "patient_id": ["1", "1", "2", "3", "4"],
            "split": ["train", "train", "train", "val", "test"],
            "A": [1, 1, 0, 0, 1],
            "B": [1, 0, 0, 1, 0],
        }
    )
    s = data.split_summary(labels).set_index("split")
    assert s.loc["train", "images"] == 3 and s.loc["train", "patients"] == 2
    assert s.loc["train", "labels_per_image"] == pytest.approx(1.0)
    assert s.loc["all", "patients"] == 4
    c = summaries.class_counts(labels).set_index(["split", "class"])
    assert c.loc[("train", "A"), "count"] == 2 and c.loc[
        ("train", "A"), "prevalence"
    ] == pytest.approx(2 / 3)
    lpi = summaries.labels_per_image(labels)
    train = lpi[lpi["split"] == "train"].set_index("n_labels")["images"].to_dict()
    assert train == {0: 1, 1: 1, 2: 1}


def test_figures_return_their_data(tmp_path):
    data.prepare_run("f", dataset="nih-phantom", resolution=16, max_patients=40)
    labels = data.read_labels("f")
    for make in (
        data.class_counts_figure,
        data.iou_figure,
        data.labels_per_image_figure,
        data.patients_figure,
    ):
        fig, plotted = make(labels)
        assert len(fig.data) >= 1 and len(plotted) > 0
    fig, plotted = data.examples_figure("f")
    assert len(fig.data) == len(plotted) > 0
    assert "cache" in data.cache_report("f")
