"""The phantom's labels: the real NIH ChestX-ray14 table and box list of the ``torchxrayvision`` wheel.

Read from the installed wheel without importing ``torchxrayvision`` (whose import pulls in
scikit-image) and without any download.
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ...artifacts import note_read

WHEEL = "torchxrayvision"
TABLE_FILE = "torchxrayvision/data/Data_Entry_2017_v2020.csv.gz"
BBOX_FILE = "torchxrayvision/data/BBox_List_2017.csv.gz"

#: The 14 findings of ChestX-ray14, in NIH-CXR-LT's canonical order (the paper's).
FINDINGS = (
    "Infiltration",
    "Effusion",
    "Atelectasis",
    "Nodule",
    "Mass",
    "Consolidation",
    "Pneumothorax",
    "Pleural Thickening",
    "Cardiomegaly",
    "Emphysema",
    "Edema",
    "Fibrosis",
    "Pneumonia",
    "Hernia",
)
#: The phantom's 15 classes: No Finding first, then the findings, as in NIH-CXR-LT.
CLASSES = ("No Finding",) + FINDINGS

#: the table's spelling → the canonical class name
_TABLE_NAMES = {"Pleural_Thickening": "Pleural Thickening"}
#: the box list's spelling → the canonical class name
_BOX_NAMES = {"Infiltrate": "Infiltration"}

#: columns of :func:`load_table` that the renderer reads besides the classes
META_COLUMNS = ("image_id", "patient_id", "view", "sex", "age")


# -- the wheel's tables ------------------------------------------------------------------


def wheel_file(relative: str) -> Path:
    """A data file of the installed ``torchxrayvision`` wheel, located without importing it."""
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the {WHEEL} package is not installed; the phantom reads its label table "
            f"{relative} (install the project: make install)"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {WHEEL} wheel")
    return path


@functools.lru_cache(maxsize=1)
def _load_table_cached() -> pd.DataFrame:
    path = wheel_file(TABLE_FILE)
    note_read(path)  # read once per process (cached): the first stage to read it names it
    raw = pd.read_csv(
        path,
        usecols=[
            "Image Index",
            "Finding Labels",
            "Patient ID",
            "Patient Age",
            "Patient Gender",
            "View Position",
        ],
    )
    spelling = {v: k for k, v in _TABLE_NAMES.items()}
    names = {c: spelling.get(c, c) for c in CLASSES}  # canonical name → the table's spelling
    padded = "|" + raw["Finding Labels"].astype(str) + "|"
    findings = {c: padded.str.contains(f"|{n}|", regex=False).to_numpy() for c, n in names.items()}
    n_tokens = raw["Finding Labels"].astype(str).str.count(r"\|").to_numpy() + 1
    if not np.array_equal(sum(v.astype(np.int64) for v in findings.values()), n_tokens):
        raise ValueError(f"{path}: unexpected finding names in column 'Finding Labels'")
    table = pd.DataFrame(
        {
            "image_id": raw["Image Index"].astype(str),
            "patient_id": raw["Patient ID"].map("{:08d}".format),
            "view": raw["View Position"].astype(str),
            "sex": raw["Patient Gender"].astype(str),
            "age": raw["Patient Age"].astype(np.int16),
        }
    )
    for name in CLASSES:
        table[name] = findings[name].astype(np.int8)
    return table


def load_table() -> pd.DataFrame:
    """The real NIH ChestX-ray14 label table, one row per image.

    Returns
    -------
    DataFrame with ``image_id`` (``00000001_000.png``), ``patient_id`` (8 digits, as in the
    image names), ``view`` (``PA``/``AP``), ``sex`` (``M``/``F``), ``age`` (years), then one
    int8 0/1 column per class of :data:`CLASSES`. 112,120 rows, 30,805 patients.
    """
    return _load_table_cached().copy()


@functools.lru_cache(maxsize=1)
def bbox_priors() -> dict[str, np.ndarray]:
    """The real boxes of ``BBox_List_2017.csv.gz``, per finding, as fractions of the image.

    Returns
    -------
    dict finding → float32 array ``[n_boxes, 4]`` of (centre x, centre y, width, height),
    each divided by the 1024-pixel side of the released images.
    """
    path = wheel_file(BBOX_FILE)
    raw = pd.read_csv(path).iloc[:, :6]
    raw.columns = ["image", "finding", "x", "y", "w", "h"]
    raw["finding"] = raw["finding"].replace(_BOX_NAMES)
    out = {}
    for name, group in raw.groupby("finding", sort=True):
        if name not in FINDINGS:
            raise ValueError(f"{path}: unexpected finding name {name!r}")
        g = group[["x", "y", "w", "h"]].to_numpy(np.float64) / 1024.0
        out[name] = np.stack(
            [g[:, 0] + g[:, 2] / 2, g[:, 1] + g[:, 3] / 2, g[:, 2], g[:, 3]], axis=1
        ).astype(np.float32)
    return out
