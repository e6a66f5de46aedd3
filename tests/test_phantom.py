"""prunecxr.data.phantom: the real NIH label table and the synthetic images drawn from it."""

from __future__ import annotations

import hashlib
import itertools
import sys

import numpy as np
import pandas as pd
import pytest

from prunecxr import data
from prunecxr.data import keys, phantom

RES = 48


@pytest.fixture(scope="module")
def table():
    return phantom.load_table()


def _variants(table, findings_sets, *, image_id="00000005_000.png", patient_id="00000005",
              view="PA", sex="M"):
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
    assert full["split"].value_counts().to_dict() == {"train": 78_506, "test": 21_081, "val": 12_533}
    other = data.create_dataset("nih-phantom", split_seed=1).table()
    assert other["split"].equals(full["split"])
    assert list(full.columns[3:]) == list(phantom.CLASSES)


def test_bbox_priors_cover_the_boxed_findings():
    priors = phantom.bbox_priors()
    assert sorted(priors) == sorted(["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration",
                                     "Mass", "Nodule", "Pneumonia", "Pneumothorax"])
    assert sum(len(v) for v in priors.values()) == 984
    for boxes in priors.values():
        assert boxes.shape[1] == 4 and (boxes > 0).all() and (boxes[:, :2] < 1).all()


def test_id_seeds_are_keyed_blake2b():
    seed = keys.id_seeds(["00000001_000.png"], "k")[0]
    digest = hashlib.blake2b(b"00000001_000.png", digest_size=8, key=b"k").digest()
    assert int(seed) == int.from_bytes(digest, "little")
    assert keys.id_seeds(["a"], "k")[0] != keys.id_seeds(["a"], "other")[0]
    ids = ["b", "a", "c"]
    assert [ids[k] for k in keys.hash_rank(ids, "k")] == sorted(ids, key=lambda i: keys.id_seeds([i], "k")[0])


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
    normal, sick = phantom.render(rows, resolution=RES).astype(float)
    assert np.abs(sick - normal).sum() > 250, finding  # in grey levels, summed over pixels


def test_different_findings_render_differently(table):
    rows = _variants(table, [(f,) for f in phantom.FINDINGS])
    imgs = phantom.render(rows, resolution=RES).astype(float)
    for (a, x), (b, y) in itertools.combinations(zip(phantom.FINDINGS, imgs), 2):
        assert np.abs(x - y).mean() > 0.1, (a, b)


def test_findings_have_their_signature(table):
    """Hand-checkable directions: cardiomegaly brightens beside the heart, emphysema darkens
    the lungs, effusion brightens the lung bases, pneumothorax darkens a lung's rim."""
    names = [(), ("Cardiomegaly",), ("Emphysema",), ("Effusion",)]
    normal, cardio, emph, eff = phantom.render(_variants(table, names), resolution=64).astype(float)
    heart = (cardio - normal)[28:48, 32:60]  # the heart's left border, low on the image right
    assert heart.mean() > 3 and np.abs(cardio - normal)[:24].max() == 0
    lungs = (slice(16, 32), slice(12, 22))
    assert emph[lungs].mean() < normal[lungs].mean() - 5
    changed = np.abs(eff - normal) > 10
    assert changed[32:].sum() >= 3 and changed[:32].sum() == 0  # low in the chest


def test_same_patient_shares_anatomy(table):
    """Two films of one patient are more alike than films of two patients."""
    rows = pd.concat([
        _variants(table, [()], image_id="a.png", patient_id="1"),
        _variants(table, [()], image_id="b.png", patient_id="1"),
        _variants(table, [()], image_id="c.png", patient_id="2"),
    ], ignore_index=True)
    a, b, c = phantom.render(rows, resolution=RES).astype(float)
    assert np.abs(a - b).mean() < np.abs(a - c).mean()


def test_fingerprint_names_the_knobs():
    fp = phantom.fingerprint()
    assert fp["finding_contrast"] == phantom.FINDING_CONTRAST
    assert fp["renderer_version"] == phantom.RENDERER_VERSION
