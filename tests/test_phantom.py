"""prunecxr.data.phantom: the real NIH label table and the synthetic images drawn from it."""

from __future__ import annotations

import hashlib
import itertools
import sys

import numpy as np
import pandas as pd
import pytest

from prunecxr import data
from prunecxr.data import keys, phantom, reference

RES = 48
#: the drawing's own tests draw every finding at one strength (the shipped, calibrated ones are
#: faint by design for the hard findings; test_strength_scales_only_its_own_finding covers them)
DRAWN = {f: phantom.UNCALIBRATED_STRENGTH for f in phantom.FINDINGS}


@pytest.fixture(scope="module")
def table():
    return phantom.load_table()


def _variants(
    table, findings_sets, *, image_id="00000005_000.png", patient_id="00000005", view="PA", sex="M"
):
    """Rows of one image (same id, same patient) with different label sets."""
    base = table.iloc[[0]]
    rows = []
    for findings in findings_sets:
        r = base.copy()
        r[list(phantom.CLASSES)] = 0
        for f in findings:
            r[f] = 1
        if not findings:
            r["No Finding"] = 1
        r["image_id"], r["patient_id"], r["view"], r["sex"] = image_id, patient_id, view, sex
        rows.append(r)
    return pd.concat(rows, ignore_index=True)


def test_full_table_is_the_real_one(table):
    assert len(table) == 112_120
    assert table["patient_id"].nunique() == 30_805
    assert int(table["Hernia"].sum()) == 227
    assert list(table.columns) == list(phantom.META_COLUMNS + phantom.CLASSES)
    assert all(table[c].dtype == np.int8 for c in phantom.CLASSES)
    # No Finding excludes every finding, and every image has a label
    findings = table[list(phantom.FINDINGS)].sum(axis=1)
    assert ((table["No Finding"] == 1) == (findings == 0)).all()
    assert table.loc[table["image_id"] == "00000001_000.png", "Cardiomegaly"].item() == 1
    assert "torchxrayvision" not in sys.modules  # read from the wheel without importing it


def test_phantom_dataset_split_is_patient_disjoint():
    """NIH-CXR-LT's split (tests/test_reference.py checks it against the shipped file); the
    split_seed keys only the patient subsample."""
    full = data.create_dataset("nih-phantom").table()
    assert len(full) == 112_120
    assert full.groupby("patient_id")["split"].nunique().max() == 1
    assert full.groupby("split")["patient_id"].nunique().sum() == 30_805
    assert full["split"].value_counts().to_dict() == {
        "train": 78_506,
        "test": 21_081,
        "val": 12_533,
    }
    other = data.create_dataset("nih-phantom", split_seed=1).table()
    assert other["split"].equals(full["split"])
    assert list(full.columns[3:]) == list(phantom.CLASSES)


def test_bbox_priors_cover_the_boxed_findings():
    priors = phantom.bbox_priors()
    assert sorted(priors) == sorted(
        [
            "Atelectasis",
            "Cardiomegaly",
            "Effusion",
            "Infiltration",
            "Mass",
            "Nodule",
            "Pneumonia",
            "Pneumothorax",
        ]
    )
    assert sum(len(v) for v in priors.values()) == 984
    for boxes in priors.values():
        assert boxes.shape[1] == 4 and (boxes > 0).all() and (boxes[:, :2] < 1).all()


def test_id_seeds_are_keyed_blake2b():
    seed = keys.id_seeds(["00000001_000.png"], "k")[0]
    digest = hashlib.blake2b(b"00000001_000.png", digest_size=8, key=b"k").digest()
    assert int(seed) == int.from_bytes(digest, "little")
    assert keys.id_seeds(["a"], "k")[0] != keys.id_seeds(["a"], "other")[0]
    ids = ["b", "a", "c"]
    assert [ids[k] for k in keys.hash_rank(ids, "k")] == sorted(
        ids, key=lambda i: keys.id_seeds([i], "k")[0]
    )


def test_rendering_is_deterministic_in_any_batch_and_order(table):
    rows = table.iloc[1000:1012]
    once = phantom.render(rows, resolution=RES)
    again = phantom.render(rows, resolution=RES)
    np.testing.assert_array_equal(once, again)
    # one at a time, reversed, inside a larger batch: the same pixels per image id
    alone = phantom.render(rows, resolution=RES, batch_pixels=1)
    np.testing.assert_array_equal(once, alone)
    reversed_ = phantom.render(rows.iloc[::-1], resolution=RES)[::-1]
    np.testing.assert_array_equal(once, reversed_)
    wider = phantom.render(table.iloc[990:1030], resolution=RES)[10:22]
    np.testing.assert_array_equal(once, wider)
    # different images differ
    assert len({img.tobytes() for img in once}) == len(once)


def test_render_into_an_array_and_resolutions(table):
    rows = table.iloc[:3]
    out = np.zeros((3, 16, 16), np.uint8)
    assert phantom.render(rows, resolution=16, out=out) is out
    assert out.std() > 0
    assert phantom.render(rows, resolution=96).shape == (3, 96, 96)
    with pytest.raises(ValueError, match="out must be uint8"):
        phantom.render(rows, resolution=16, out=np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="resolution must be an int from 8 to 2048"):
        phantom.render(rows, resolution=4)
    with pytest.raises(ValueError, match=r"missing columns \['view'\]"):
        phantom.render(rows.drop(columns=["view"]), resolution=16)


def test_images_look_like_a_chest(table):
    """Dark lungs either side of a bright mediastinum, dark air outside the body."""
    img = phantom.render(_variants(table, [()]), resolution=64)[0].astype(float)
    lungs = (img[20:34, 14:22].mean() + img[20:34, 42:50].mean()) / 2
    mediastinum = img[20:34, 30:34].mean()
    assert lungs + 40 < mediastinum
    assert img[:3, :3].mean() < lungs  # air above the shoulders


@pytest.mark.parametrize("finding", phantom.FINDINGS)
def test_each_finding_changes_the_image(finding, table):
    rows = _variants(table, [(), (finding,)])
    normal, sick = phantom.render(rows, resolution=RES, difficulty=DRAWN).astype(float)
    assert np.abs(sick - normal).sum() > 250, finding  # in grey levels, summed over pixels


def test_different_findings_render_differently(table):
    rows = _variants(table, [(f,) for f in phantom.FINDINGS])
    imgs = phantom.render(rows, resolution=RES, difficulty=DRAWN).astype(float)
    for (a, x), (b, y) in itertools.combinations(zip(phantom.FINDINGS, imgs), 2):
        assert np.abs(x - y).mean() > 0.1, (a, b)


def test_findings_have_their_signature(table):
    """Hand-checkable directions: cardiomegaly brightens beside the heart, emphysema darkens
    the lungs, effusion brightens the lung bases, pneumothorax darkens a lung's rim."""
    names = [(), ("Cardiomegaly",), ("Emphysema",), ("Effusion",)]
    normal, cardio, emph, eff = phantom.render(
        _variants(table, names), resolution=64, difficulty=DRAWN
    ).astype(float)
    heart = (cardio - normal)[28:48, 32:60]  # the heart's left border, low on the image right
    assert heart.mean() > 3 and np.abs(cardio - normal)[:24].max() == 0
    lungs = (slice(16, 32), slice(12, 22))
    assert emph[lungs].mean() < normal[lungs].mean() - 5
    changed = np.abs(eff - normal) > 10
    assert changed[32:].sum() >= 3 and changed[:32].sum() == 0  # low in the chest


def test_same_patient_shares_anatomy(table):
    """Two films of one patient are more alike than films of two patients."""
    rows = pd.concat(
        [
            _variants(table, [()], image_id="a.png", patient_id="1"),
            _variants(table, [()], image_id="b.png", patient_id="1"),
            _variants(table, [()], image_id="c.png", patient_id="2"),
        ],
        ignore_index=True,
    )
    a, b, c = phantom.render(rows, resolution=RES).astype(float)
    assert np.abs(a - b).mean() < np.abs(a - c).mean()


def test_fingerprint_names_the_knobs():
    fp = phantom.fingerprint()
    assert fp["strength"] == phantom.strengths("calibrated")
    assert fp["renderer_version"] == phantom.RENDERER_VERSION
    assert phantom.fingerprint("equal")["strength"] == phantom.strengths("equal")


# -- difficulty: per-finding strengths ---------------------------------------------------


@pytest.mark.parametrize("condition", ["calibrated", "equal"])
def test_shipped_difficulty_tables_name_every_finding(condition):
    record = reference.phantom_difficulty(condition)
    strength = phantom.strengths(condition)
    assert list(strength) == list(phantom.FINDINGS)
    assert strength == {f: float(record["strength"][f]) for f in phantom.FINDINGS}
    assert all(0 < v <= 50 for v in strength.values())


def test_strengths_refuse_bad_tables():
    good = {f: 2.0 for f in phantom.FINDINGS}
    with pytest.raises(ValueError, match="unknown phantom difficulty 'hard'"):
        phantom.strengths("hard")
    with pytest.raises(ValueError, match=r"missing findings \['Hernia'\]"):
        phantom.strengths({f: v for f, v in good.items() if f != "Hernia"})
    with pytest.raises(ValueError, match=r"unknown findings \['Hernias'\]"):
        phantom.strengths({**good, "Hernias": 1.0})
    for bad in (0.0, -1.0, float("nan"), 51.0, True, "2"):
        with pytest.raises(ValueError, match="strength of 'Mass'"):
            phantom.strengths({**good, "Mass": bad})
    with pytest.raises(ValueError, match="phantom_difficulty must be"):
        phantom.strengths(3)
    with pytest.raises(ValueError, match="unknown phantom difficulty"):
        data.create_dataset("nih-phantom", phantom_difficulty="hard")


def test_strength_scales_only_its_own_finding(table):
    """A finding's strength changes the images that carry it, and no other image."""
    rows = _variants(table, [("Nodule",), ("Mass",), ()])
    base = {f: 2.0 for f in phantom.FINDINGS}
    weak = phantom.render(rows, resolution=RES, difficulty=base).astype(int)
    strong = phantom.render(rows, resolution=RES, difficulty={**base, "Nodule": 6.0}).astype(int)
    healthy = phantom.render(_variants(table, [()]), resolution=RES, difficulty=base).astype(int)[0]
    assert np.array_equal(weak[1:], strong[1:])  # Mass and the healthy film: untouched
    assert np.abs(strong[0] - healthy).sum() > 2 * np.abs(weak[0] - healthy).sum()


# -- where findings were drawn -------------------------------------------------------------


@pytest.fixture(scope="module")
def located(table):
    rows = table[table[list(phantom.FINDINGS)].sum(axis=1) >= 1].iloc[:60].reset_index(drop=True)
    images = phantom.render(rows, resolution=RES)
    return rows, images, phantom.locate(rows, images, resolution=RES)


def test_locations_hold_every_drawn_pixel(located):
    """The reference: each image rendered alone with the finding's label cleared; every pixel
    that changes visibly (phantom.drawn_mask) lies in the recorded box, which is tight."""
    rows, images, loc = located
    assert list(loc.columns) == list(phantom.LOCATION_COLUMNS)
    assert len(loc) == int(rows[list(phantom.FINDINGS)].to_numpy().sum())
    checked = 0
    for r in loc.itertuples(index=False):
        k = int(np.flatnonzero(rows["image_id"].to_numpy() == r.image_id)[0])
        without = rows.iloc[[k]].copy()
        without[r[1]] = 0
        mask = phantom.drawn_mask(images[k], phantom.render(without, resolution=RES)[0])
        assert r.pixels == mask.sum()
        if r.pixels == 0:
            assert (r.x0, r.y0, r.x1, r.y1) == (-1, -1, -1, -1)
            continue
        ys, xs = np.nonzero(mask)
        assert (r.x0, r.y0, r.x1, r.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        box = np.zeros_like(mask)
        box[r.y0 : r.y1, r.x0 : r.x1] = True
        assert not (mask & ~box).any()
        checked += 1
    assert checked > 50


def test_focal_findings_get_small_boxes(located):
    rows, images, loc = located
    area = (loc["x1"] - loc["x0"]) * (loc["y1"] - loc["y0"]) / RES**2
    nodules = area[(loc["class"] == "Nodule") & (loc["pixels"] > 0)]
    assert len(nodules) and nodules.max() < 0.1


def test_locations_are_deterministic_and_batch_free(located):
    rows, images, loc = located
    again = phantom.locate(rows, images, resolution=RES, batch_pixels=RES * RES * 7)
    pd.testing.assert_frame_equal(loc, again)
    with pytest.raises(ValueError, match="images must be uint8"):
        phantom.locate(rows, images[:-1], resolution=RES)
