"""The paper's reference data, shipped as package data (sources in this folder's ``README.md``).

* :func:`nih_cxr_lt_split`: the patient-level train/val/test split of NIH-CXR-LT (Holste et
  al., MICCAI 2023) for all 112,120 NIH ChestX-ray14 images. The phantom uses it, so a phantom
  run has the paper's test set.
* :func:`class_counts`: supplementary Table 2, the per-class image counts of NIH-CXR-LT and
  MIMIC-CXR-LT per split; :func:`image_totals` its last row.

Both files are read once per process and checked; a damaged file is an error naming it.
"""

from __future__ import annotations

import functools
from importlib import resources

import pandas as pd

__all__ = ["DATASETS", "SPLIT_FILE", "COUNTS_FILE", "class_counts", "image_totals", "nih_cxr_lt_split"]

SPLIT_FILE = "nih-cxr-lt_split.csv.gz"
COUNTS_FILE = "cxr-lt_class_counts.csv"
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
        raise ValueError(f"{file}, line {row + 2}: split {table['split'].iloc[row]!r} is not one of {list(_SPLITS)}")
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
        raise ValueError(f"{file}: expected the columns label,{','.join(expected)} and a row {_TOTAL_ROW}")
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
