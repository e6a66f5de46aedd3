"""The paper's reference data (package data) and the phantom on NIH-CXR-LT's split.

The phantom's labels are ChestX-ray14's; on NIH-CXR-LT's split their per-split counts of the
14 findings must equal the paper's supplementary Table 2 exactly. No Finding differs: NIH-CXR-LT
clears it on the images whose only findings are among its five report-parsed additions.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prunecxr.data import datasets, phantom, reference
from prunecxr.data.specs import NIH_CXR_LT_CLASSES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDER = Path(reference.__file__).parent
ADDED = (
    "Subcutaneous Emphysema",
    "Tortuous Aorta",
    "Calcification of the Aorta",
    "Pneumoperitoneum",
    "Pneumomediastinum",
)


@pytest.fixture(scope="module")
def table():
    return datasets.create_dataset("nih-phantom").table()


def test_split_file_is_the_papers_split():
    split = reference.nih_cxr_lt_split()
    assert len(split) == 112_120
    assert split.value_counts().to_dict() == {"train": 78_506, "test": 21_081, "val": 12_533}
    assert reference.image_totals("nih-cxr-lt") == {
        "train": 78_506,
        "val": 12_533,
        "test": 21_081,
        "total": 112_120,
    }


def test_package_data_is_the_shared_reference_data():
    """Where the seed of these files is present (the project's workspace), they are equal."""
    if not SHARED.is_dir():
        pytest.skip("no ../shared/data beside the checkout")
    for name in (reference.SPLIT_FILE, reference.COUNTS_FILE):
        a, b = FOLDER / name, SHARED / name
        read = gzip.open if name.endswith(".gz") else open
        with read(a, "rb") as fa, read(b, "rb") as fb:
            assert fa.read() == fb.read(), name


def test_phantom_uses_the_split_file(table):
    split = reference.nih_cxr_lt_split()
    assert len(table) == len(split)
    assert (table["split"].to_numpy() == split.loc[table["image_id"]].to_numpy()).all()
    # patient-disjoint
    per_patient = table.groupby("patient_id")["split"].nunique()
    assert per_patient.max() == 1


def test_phantom_counts_of_the_14_findings_equal_table_2(table):
    counts = reference.class_counts("nih-cxr-lt")
    assert list(counts.index.sort_values()) == sorted(NIH_CXR_LT_CLASSES)
    for finding in phantom.FINDINGS:
        for split in ("train", "val", "test"):
            got = int(table.loc[table["split"] == split, finding].sum())
            assert got == counts.loc[finding, split], (finding, split)
        assert int(table[finding].sum()) == counts.loc[finding, "total"], finding


def test_no_finding_differs_by_the_images_of_the_five_added_findings(table):
    counts = reference.class_counts("nih-cxr-lt")
    for split in ("train", "val", "test"):
        extra = (
            int(table.loc[table["split"] == split, "No Finding"].sum())
            - counts.loc["No Finding", split]
        )
        # NIH-CXR-LT cleared No Finding on images with an added finding: at least one per such
        # image, at most as many as the added findings' positives in the split
        assert 0 < extra <= int(counts.loc[list(ADDED), split].sum()), split


def test_class_counts_mimic_and_errors():
    mimic = reference.class_counts("mimic-cxr-lt")
    assert len(mimic) == 19 and mimic.loc["Support Devices", "total"] == 104_366
    assert reference.image_totals("mimic-cxr-lt")["total"] == 257_018
    assert (mimic[["train", "val", "test"]].sum(axis=1) == mimic["total"]).all()
    with pytest.raises(ValueError, match="no dataset 'chexpert'"):
        reference.class_counts("chexpert")


def test_split_seed_still_splits_a_csv_without_split_column():
    from prunecxr.data.splits import patient_split

    patients = [f"p{i}" for i in range(100)]
    a, b = patient_split(patients, seed=0), patient_split(patients, seed=1)
    assert a != b and sorted(np.unique(list(a.values()))) == ["test", "train", "val"]


def test_damaged_split_file_is_named(tmp_path, monkeypatch):
    bad = tmp_path / reference.SPLIT_FILE
    pd.DataFrame({"image_id": ["a.png"], "split": ["holdout"]}).to_csv(bad, index=False)
    monkeypatch.setattr(reference, "_path", lambda name: tmp_path / name)
    reference._split_table.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"line 2: split 'holdout'"):
            reference.nih_cxr_lt_split()
    finally:
        reference._split_table.cache_clear()
