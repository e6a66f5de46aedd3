"""The paper's reference data, shipped as package data (sources in this folder's ``README.md``).

* :func:`nih_cxr_lt_split`: the patient-level train/val/test split of NIH-CXR-LT (Holste et
  al., MICCAI 2023) for all 112,120 NIH ChestX-ray14 images. The phantom uses it, so a phantom
  run has the paper's test set.
* :func:`class_counts`: supplementary Table 2, the per-class image counts of NIH-CXR-LT and
  MIMIC-CXR-LT per split; :func:`image_totals` its last row.
* :func:`chexnet_auroc`: CheXNet's published per-class test AUROC on ChestX-ray14 (Rajpurkar
  et al. 2017, Table 2), the external target the phantom's difficulty is calibrated to.
* :func:`phantom_difficulty`: the phantom's per-finding signature strengths of one condition
  (``calibrated`` or ``equal``) with the provenance of their calibration
  (``python -m prunecxr calibrate-phantom``).

Both files are read once per process and checked; a damaged file is an error naming it.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources

import pandas as pd

__all__ = [
    "CHEXNET_FILE",
    "CONDITIONS",
    "COUNTS_FILE",
    "DATASETS",
    "SPLIT_FILE",
    "chexnet_auroc",
    "class_counts",
    "difficulty_file",
    "image_totals",
    "nih_cxr_lt_split",
    "phantom_difficulty",
]

SPLIT_FILE = "nih-cxr-lt_split.csv.gz"
COUNTS_FILE = "cxr-lt_class_counts.csv"
CHEXNET_FILE = "chexnet_auroc.csv"
#: the phantom's difficulty conditions, each a file ``phantom_difficulty_<condition>.json``:
#: ``calibrated`` (every finding at CheXNet's published AUROC) and ``equal`` (every finding at
#: one common AUROC, the median of CheXNet's, so that classes differ only in frequency)
CONDITIONS = ("calibrated", "equal")
#: the datasets of Table 2 and their column prefixes in :data:`COUNTS_FILE`
DATASETS = {"nih-cxr-lt": "nih", "mimic-cxr-lt": "mimic"}
_SPLITS = ("train", "val", "test")
_TOTAL_ROW = "TOTAL_IMAGES"


def _path(name: str):
    return resources.files(__name__).joinpath(name)


@functools.lru_cache(maxsize=1)
def _split_table() -> pd.Series:
    path = _path(SPLIT_FILE)
    with resources.as_file(path) as file:
        table = pd.read_csv(file, dtype=str)
    if list(table.columns) != ["image_id", "split"]:
        raise ValueError(f"{file}: expected the columns image_id,split, got {list(table.columns)}")
    bad = ~table["split"].isin(_SPLITS)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"{file}, line {row + 2}: split {table['split'].iloc[row]!r} is not one of {list(_SPLITS)}"
        )
    if table["image_id"].duplicated().any():
        dup = table.loc[table["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"{file}: image {dup!r} is listed twice")
    return table.set_index("image_id")["split"]


def nih_cxr_lt_split() -> pd.Series:
    """NIH-CXR-LT's split: image id (``00000001_000.png``) → ``train``, ``val`` or ``test``."""
    return _split_table().copy()


@functools.lru_cache(maxsize=1)
def _counts_table() -> pd.DataFrame:
    with resources.as_file(_path(COUNTS_FILE)) as file:
        table = pd.read_csv(file).set_index("label")
    expected = [f"{p}_{s}" for p in DATASETS.values() for s in (*_SPLITS, "total")]
    if list(table.columns) != expected or _TOTAL_ROW not in table.index:
        raise ValueError(
            f"{file}: expected the columns label,{','.join(expected)} and a row {_TOTAL_ROW}"
        )
    return table


def _dataset_columns(dataset: str) -> dict[str, str]:
    if dataset not in DATASETS:
        raise ValueError(f"Table 2 has no dataset {dataset!r}; choose one of {list(DATASETS)}")
    prefix = DATASETS[dataset]
    return {f"{prefix}_{s}": s for s in (*_SPLITS, "total")}


def class_counts(dataset: str) -> pd.DataFrame:
    """Supplementary Table 2 for ``dataset``: one row per class of the dataset (index: class
    name), int columns ``train``, ``val``, ``test``, ``total`` (images with the class)."""
    cols = _dataset_columns(dataset)
    table = _counts_table().drop(index=_TOTAL_ROW)[list(cols)].rename(columns=cols)
    return table.dropna(how="all").astype("int64")


def image_totals(dataset: str) -> dict[str, int]:
    """The images of ``dataset`` per split and in all (``train``, ``val``, ``test``, ``total``)."""
    cols = _dataset_columns(dataset)
    row = _counts_table().loc[_TOTAL_ROW, list(cols)]
    return {cols[c]: int(row[c]) for c in cols}


@functools.lru_cache(maxsize=1)
def _chexnet_table() -> pd.Series:
    with resources.as_file(_path(CHEXNET_FILE)) as file:
        table = pd.read_csv(file)
        if list(table.columns) != ["finding", "auroc"]:
            raise ValueError(
                f"{file}: expected the columns finding,auroc, got {list(table.columns)}"
            )
        values = pd.to_numeric(table["auroc"], errors="coerce")
        bad = ~values.between(0.5, 1.0)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(
                f"{file}, line {row + 2}: AUROC {table['auroc'].iloc[row]!r} is not in [0.5, 1]"
            )
        if table["finding"].duplicated().any():
            raise ValueError(
                f"{file}: finding {table.loc[table['finding'].duplicated(), 'finding'].iloc[0]!r} twice"
            )
    return pd.Series(values.to_numpy(float), index=table["finding"].to_numpy(str), name="auroc")


def chexnet_auroc() -> pd.Series:
    """CheXNet's per-class test AUROC on ChestX-ray14: finding → AUROC (14 findings).

    Rajpurkar, P., Irvin, J., et al.: CheXNet: Radiologist-Level Pneumonia Detection on Chest
    X-Rays with Deep Learning. arXiv:1711.05225 (2017), Table 2, column "CheXNet".
    """
    return _chexnet_table().copy()


def difficulty_file(condition: str):
    """The package-data file of difficulty ``condition`` (a :mod:`importlib.resources` path)."""
    if condition not in CONDITIONS:
        raise ValueError(
            f"unknown phantom difficulty {condition!r}; choose one of {list(CONDITIONS)}"
        )
    return _path(f"phantom_difficulty_{condition}.json")


@functools.lru_cache(maxsize=len(CONDITIONS))
def _difficulty(condition: str) -> dict:
    with resources.as_file(difficulty_file(condition)) as file:
        try:
            record = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{file}: not a readable difficulty table ({err}); reinstall the project"
            ) from None
        strength = record.get("strength")
        if record.get("condition") != condition or not isinstance(strength, dict) or not strength:
            raise ValueError(f"{file}: expected condition {condition!r} and a 'strength' table")
        for name, value in strength.items():
            if not isinstance(value, (int, float)) or not 0 < value < 100:
                raise ValueError(
                    f"{file}: strength of {name!r} must be a number in (0, 100), got {value!r}"
                )
    return record


def phantom_difficulty(condition: str) -> dict:
    """The shipped difficulty table of ``condition`` (see :data:`CONDITIONS`).

    Returns
    -------
    dict with ``condition``, ``strength`` (finding → signature strength, the multiplier of
    that finding's drawn intensity), ``target_auroc`` and ``reached_auroc`` (finding →
    AUROC) and ``provenance`` (source, recipe, seeds, date, iterations).
    """
    return copy.deepcopy(_difficulty(condition))
