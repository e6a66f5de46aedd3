"""Datasets behind one registry, the run's label table, and its image cache (notebook 01).

A dataset is a small declarative :class:`DatasetSpec` (name, classes in canonical order,
label files, image path column, image root) in :data:`DATASETS`;
:func:`create_dataset` binds one to a data root and options. Four are registered:

``nih-cxr-lt``
    NIH ChestX-ray14 images with the NIH-CXR-LT labels of the paper (20 classes).
``mimic-cxr-lt``
    MIMIC-CXR-JPG 2.0.0 images with the MIMIC-CXR-LT labels of the paper (19 classes).
``csv``
    any multi-label table a user brings: an image path column, 0/1 class columns (named or
    inferred), an optional patient id column and an optional split column.
``nih-phantom``
    the embedded default: the real NIH ChestX-ray14 label table shipped in the
    ``torchxrayvision`` wheel with synthetic images (:mod:`prunecxr.phantom`).

:func:`prepare_run` turns one into ``runs/<run>/labels.parquet`` (``image_id``,
``patient_id``, ``split``, then one int8 0/1 column per class) and an image cache
(:mod:`prunecxr.images`) recorded in ``run.json``; :func:`open_split` gives a split's
memory-mapped images and labels to the later stages. Where real data goes, and how to
check it, is in ``data_access.md`` (:func:`check_layout`, ``python -m prunecxr check-data``).

Splits are patient-disjoint. Without a given split, patients are split 70/10/20 by ranking
a keyed hash of their id (``split_seed`` is the key), so the split of a patient never
depends on row order. ``max_patients`` keeps a subsample of patients chosen the same way
(nested: a smaller subsample is part of every larger one), in each split in proportion.
"""

from __future__ import annotations

import abc
import functools
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import artifacts, config, paths
from . import images, phantom

SPLITS = ("train", "val", "test")
#: patient fractions of a generated split (train, val, test)
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
#: the columns of labels.parquet before the classes
META_COLUMNS = ("image_id", "patient_id", "split")

#: What to do with a label other than 0/1. ``error``: refuse it; ``zero``: blank (NaN) and
#: uncertain (-1) become 0; ``one``: blank becomes 0 and uncertain (-1) becomes 1 (U-Ones).
#: Any other value (2, 0.5, "yes") is always an error.
UNCERTAIN_POLICIES = ("error", "zero", "one")

NIH_CXR_LT_CLASSES = (
    "No Finding", "Infiltration", "Effusion", "Atelectasis", "Nodule", "Mass",
    "Consolidation", "Pneumothorax", "Pleural Thickening", "Cardiomegaly", "Emphysema",
    "Edema", "Fibrosis", "Subcutaneous Emphysema", "Pneumonia", "Tortuous Aorta",
    "Calcification of the Aorta", "Pneumoperitoneum", "Hernia", "Pneumomediastinum",
)
MIMIC_CXR_LT_CLASSES = (
    "Support Devices", "Lung Opacity", "Cardiomegaly", "Pleural Effusion", "Atelectasis",
    "Pneumonia", "Edema", "No Finding", "Enlarged Cardiomediastinum", "Consolidation",
    "Pneumothorax", "Fracture", "Calcification of the Aorta", "Tortuous Aorta",
    "Subcutaneous Emphysema", "Lung Lesion", "Pneumomediastinum", "Pneumoperitoneum",
    "Pleural Other",
)

#: csv: the label table when the parameter labels_csv is empty (relative to data_root)
DEFAULT_LABELS_CSV = "labels.csv"
#: csv: column names tried, in order, when the user names none
IMAGE_COLUMN_CANDIDATES = ("path", "image_path", "image", "filename", "file", "image_id", "id")
PATIENT_COLUMN_CANDIDATES = ("patient_id", "subject_id", "subj_id", "patient")
SPLIT_COLUMN_CANDIDATES = ("split",)


class EmptyClassWarning(UserWarning):
    """A class has no positive image in a split: its AP there is undefined (NaN)."""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset, declaratively.

    Attributes
    ----------
    name : registry key, also the sub-folder of the data root that holds it.
    classes : class names in canonical order (empty: the user's or the inferred ones).
    label_files : one label file per split, in :data:`SPLITS` order, relative to the
        dataset folder (empty: one user table, split by a column or by patients).
    image_column : the label files' column of image paths, relative to ``image_root``.
    image_root : folder of the images, relative to the dataset folder.
    patient_columns : columns that hold the patient id, tried in order.
    patient_pattern : regex on the image path whose first group is the patient id, used
        when no patient column is present.
    synthetic : pixels are rendered, not read (the phantom).
    description : one line for listings.
    """

    name: str
    classes: tuple[str, ...]
    label_files: tuple[str, ...]
    image_column: str
    image_root: str
    patient_columns: tuple[str, ...] = ()
    patient_pattern: str | None = None
    synthetic: bool = False
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "nih-cxr-lt": DatasetSpec(
        name="nih-cxr-lt",
        classes=NIH_CXR_LT_CLASSES,
        label_files=tuple(f"miccai2023_nih-cxr-lt_labels_{s}.csv" for s in SPLITS),
        image_column="id",
        image_root="images",
        patient_columns=("subj_id",),
        patient_pattern=r"^(?:.*/)?(\d+)_\d+\.\w+$",
        description="NIH ChestX-ray14 images, NIH-CXR-LT labels (20 classes)",
    ),
    "mimic-cxr-lt": DatasetSpec(
        name="mimic-cxr-lt",
        classes=MIMIC_CXR_LT_CLASSES,
        label_files=tuple(f"miccai2023_mimic-cxr-lt_labels_{s}.csv" for s in SPLITS),
        image_column="path",
        image_root="mimic-cxr-jpg",
        patient_columns=("subject_id",),
        patient_pattern=r"(?:^|/)p(\d+)/s\d+/",
        description="MIMIC-CXR-JPG 2.0.0 images, MIMIC-CXR-LT labels (19 classes)",
    ),
    "csv": DatasetSpec(
        name="csv",
        classes=(),
        label_files=(),
        image_column="",
        image_root="",
        patient_columns=PATIENT_COLUMN_CANDIDATES,
        description="your own multi-label table (option labels_csv) and images",
    ),
    "nih-phantom": DatasetSpec(
        name="nih-phantom",
        classes=phantom.CLASSES,
        label_files=("<torchxrayvision wheel>/data/Data_Entry_2017_v2020.csv.gz",),
        image_column="image_id",
        image_root="",
        synthetic=True,
        description="real NIH ChestX-ray14 labels (15 classes), synthetic phantom images",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; a clear error for an unknown name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


# =========================================================================================
# Splits and subsamples: keyed hashes of patient ids, never row order
# =========================================================================================


def _hash_rank(ids: Sequence[str], key: str) -> np.ndarray:
    """Positions that sort ``ids`` by a keyed hash (ties impossible in practice)."""
    return np.argsort(phantom.id_seeds(list(ids), key), kind="stable")


def patient_split(patients: Sequence[str], *, seed: int = 0,
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, str]:
    """Assign each patient to train/val/test in proportions ``fractions``.

    Patients are ranked by a hash of their id keyed with ``seed``; the first
    ``round(0.7 n)`` go to train, the next ``round(0.1 n)`` to val, the rest to test.

    Returns
    -------
    dict patient id → split name.
    """
    unique = sorted(set(map(str, patients)))
    order = [unique[k] for k in _hash_rank(unique, f"prunecxr-split-{int(seed)}")]
    n = len(order)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    out = {}
    for k, p in enumerate(order):
        out[p] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
    return out


def subsample_patients(table: pd.DataFrame, max_patients: int, *, seed: int = 0) -> pd.DataFrame:
    """Keep the images of ``max_patients`` patients (0 keeps all), in row order.

    Each split keeps patients in proportion to its share of all patients (largest
    remainder, at least one per split), taking those first in a hash ranking keyed with
    ``seed``, so a smaller subsample is part of any larger one.
    """
    if isinstance(max_patients, bool) or not isinstance(max_patients, (int, np.integer)) or max_patients < 0:
        raise ValueError(f"parameter max_patients must be an int >= 0 (0 = all), got {max_patients!r}")
    per_split = table.groupby("split", sort=False)["patient_id"].unique()
    total = sum(len(v) for v in per_split)
    if max_patients == 0 or max_patients >= total:
        return table.reset_index(drop=True)
    if max_patients < len(per_split):
        raise ValueError(
            f"parameter max_patients={max_patients} is too small: each of the "
            f"{len(per_split)} splits needs at least one patient"
        )
    names = list(per_split.index)
    exact = np.array([len(per_split[s]) for s in names], float) * max_patients / total
    quota = np.maximum(np.floor(exact).astype(int), 1)
    for k in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= max_patients:
            break
        quota[k] += 1
    while quota.sum() > max_patients:
        quota[np.argmax(quota)] -= 1
    keep: set[str] = set()
    for name, q in zip(names, quota):
        patients = [str(p) for p in per_split[name]]
        ranked = _hash_rank(patients, f"prunecxr-subsample-{int(seed)}")
        keep.update(patients[k] for k in ranked[:q])
    return table[table["patient_id"].isin(keep)].reset_index(drop=True)


# =========================================================================================
# Reading and validating label tables
# =========================================================================================


def _line(pos: int) -> str:
    """The CSV line of data row ``pos`` (0-based; the header is line 1)."""
    return f"line {pos + 2}"


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (see data_access.md)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not a readable CSV table: {err}") from None


def _require_columns(df: pd.DataFrame, path: Path, columns: Sequence[str], role: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"label file {path} is missing the {role} column(s) {missing}; "
            f"it has {list(df.columns)}"
        )


def labels_to_int8(df: pd.DataFrame, classes: Sequence[str], *, path: Path,
                   uncertain: str = "error", image_column: str | None = None) -> np.ndarray:
    """The class columns of ``df`` (strings as read) as int8 0/1 ``[N, C]``.

    Parameters
    ----------
    df : the label file as read (all columns strings, blanks NaN).
    classes : the class columns, in canonical order.
    path : the label file, named in errors.
    uncertain : policy for blank and ``-1`` labels, one of :data:`UNCERTAIN_POLICIES`.
    image_column : named in errors to say which image a bad row is.

    Raises
    ------
    ValueError naming the file, line, image and column of the first bad value.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"unknown uncertain={uncertain!r}; choose one of {list(UNCERTAIN_POLICIES)}")
    raw = df[list(classes)]
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    blank = raw.isna().to_numpy()
    ok = (values == 0) | (values == 1)
    minus = values == -1
    allowed = ok | ((blank | minus) if uncertain != "error" else np.zeros_like(ok))
    if not allowed.all():
        r, c = np.argwhere(~allowed)[0]
        shown = raw.iat[r, c]
        image = f" (image {df[image_column].iat[r]!r})" if image_column and image_column in df else ""
        if blank[r, c] or minus[r, c]:
            hint = ("; blank and -1 (uncertain) labels need a policy: set uncertain='zero' or "
                    "'one' (see data_access.md)")
        else:
            hint = "; labels must be 0 or 1"
        raise ValueError(
            f"label file {path}, {_line(r)}{image}, column {classes[c]!r}: "
            f"value {'blank' if blank[r, c] else repr(shown)}{hint}"
        )
    out = np.where(ok, values, 0.0)
    if uncertain == "one":
        out = np.where(minus, 1.0, out)
    return out.astype(np.int8)


def check_relative_path(value: str, *, path: Path, pos: int) -> str:
    """An image path must stay inside its image root: no absolute path, no ``..`` escape."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"label file {path}, {_line(pos)}: the image path is empty")
    norm = os.path.normpath(value.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../") or re.match(r"^[A-Za-z]:", norm):
        raise ValueError(
            f"label file {path}, {_line(pos)}: image path {value!r} escapes the image root "
            "(paths must be relative to it, without '..')"
        )
    return value


def _patient_ids(df: pd.DataFrame, spec_columns: Sequence[str], pattern: str | None,
                 image_column: str, path: Path) -> list[str]:
    for col in spec_columns:
        if col in df.columns:
            ids = df[col]
            if ids.isna().any():
                pos = int(np.flatnonzero(ids.isna().to_numpy())[0])
                raise ValueError(f"label file {path}, {_line(pos)}: column {col!r} (patient id) is blank")
            # "00012" and "12.0" name the same patient when the column is numeric
            num = pd.to_numeric(ids, errors="coerce")
            if num.notna().all() and (num == np.round(num)).all():
                return [str(int(v)) for v in num]
            return [str(v) for v in ids]
    if pattern is None:
        return [str(v) for v in df[image_column]]
    rx = re.compile(pattern)
    out = []
    for pos, value in enumerate(df[image_column]):
        m = rx.search(str(value))
        if not m:
            raise ValueError(
                f"label file {path}, {_line(pos)}: no patient id in image path {value!r} "
                f"(expected a column {list(spec_columns)} or a path matching {pattern!r})"
            )
        out.append(str(int(m.group(1))) if m.group(1).isdigit() else m.group(1))
    return out


def check_table(table: pd.DataFrame, *, sources: pd.Series | None = None) -> None:
    """Refuse duplicate image ids and patients in two splits.

    ``sources`` (same index as ``table``) says where each row came from, for the message.
    """
    dup = table["image_id"].duplicated(keep=False)
    if dup.any():
        first = table.loc[dup, "image_id"].iloc[0]
        rows = table.index[table["image_id"] == first]
        where = ", ".join(str(sources[r]) for r in rows[:3]) if sources is not None else ""
        raise ValueError(
            f"image id {first!r} appears {len(rows)} times"
            + (f" ({where})" if where else "")
            + f"; {int(dup.sum())} rows share an id with another row. Every image must appear once"
        )
    n_splits = table.groupby("patient_id", sort=False)["split"].nunique()
    shared = n_splits[n_splits > 1]
    if len(shared):
        patient = shared.index[0]
        rows = table[table["patient_id"] == patient]
        parts = sorted(set(rows["split"]))
        where = ""
        if sources is not None:
            where = " (" + ", ".join(str(sources[r]) for r in rows.index[:3]) + ")"
        raise ValueError(
            f"patient {patient!r} appears in splits {parts}{where}; {len(shared)} patient(s) are "
            "in more than one split. Splits must be patient-disjoint"
        )


def check_splits_nonempty(table: pd.DataFrame, context: str = "") -> None:
    missing = [s for s in SPLITS if not (table["split"] == s).any()]
    if missing:
        raise ValueError(f"split(s) {missing} have no image{context}; every split needs images")


def warn_empty_classes(table: pd.DataFrame, classes: Sequence[str]) -> list[tuple[str, str]]:
    """Warn (:class:`EmptyClassWarning`) for each class with no positive in a split."""
    empty = []
    for split in SPLITS:
        part = table.loc[table["split"] == split, list(classes)]
        for c in classes:
            if len(part) and int(part[c].sum()) == 0:
                empty.append((c, split))
    for split in SPLITS:
        names = [c for c, s in empty if s == split]
        if names:
            warnings.warn(
                f"split {split!r} has no positive image of class(es) {names}: "
                "their AP there is undefined (NaN)",
                EmptyClassWarning,
                stacklevel=3,
            )
    return empty


# =========================================================================================
# Datasets bound to a data root and options
# =========================================================================================


@dataclass
class Dataset(abc.ABC):
    """A :class:`DatasetSpec` bound to a data root and options (see :func:`create_dataset`)."""

    spec: DatasetSpec
    data_root: str = ""
    uncertain: str = "error"
    split_seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def synthetic(self) -> bool:
        return self.spec.synthetic

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @abc.abstractmethod
    def table(self) -> pd.DataFrame:
        """All images: ``image_id``, ``patient_id``, ``split``, then int8 class columns."""

    @abc.abstractmethod
    def source(self, table: pd.DataFrame) -> images.ImageSource:
        """Where the pixels of ``table``'s rows come from (checks that they exist)."""


@functools.lru_cache(maxsize=4)
def _phantom_table(split_seed: int) -> pd.DataFrame:
    meta = phantom.load_table()
    split = patient_split(meta["patient_id"].unique().tolist(), seed=split_seed)
    out = pd.DataFrame({
        "image_id": meta["image_id"],
        "patient_id": meta["patient_id"],
        "split": meta["patient_id"].map(split),
    })
    for c in phantom.CLASSES:
        out[c] = meta[c].to_numpy(np.int8)
    return out


@functools.lru_cache(maxsize=1)
def _phantom_index() -> pd.Index:
    return pd.Index(phantom.load_table()["image_id"])


class PhantomDataset(Dataset):
    """The NIH phantom: the wheel's label table and rendered images."""

    def table(self) -> pd.DataFrame:
        return _phantom_table(self.split_seed).copy()

    def source(self, table: pd.DataFrame) -> images.ImageSource:
        pos = _phantom_index().get_indexer(table["image_id"])
        if (pos < 0).any():
            bad = table["image_id"].iloc[int(np.flatnonzero(pos < 0)[0])]
            raise ValueError(f"image id {bad!r} is not in the phantom's label table")
        meta = phantom.load_table().iloc[pos]
        return images.PhantomImages(meta.reset_index(drop=True))


class FileDataset(Dataset):
    """Label CSV files and image files under a data root (NIH-CXR-LT, MIMIC-CXR-LT, csv)."""

    @property
    def folder(self) -> Path:
        """The dataset folder: ``<data_root>/<name>`` if it exists, else the data root."""
        root = paths.data_root(self.data_root)
        sub = root / self.spec.name
        return sub if self.spec.label_files and sub.is_dir() else root

    @property
    def image_dir(self) -> Path:
        return self.folder / self.spec.image_root if self.spec.image_root else self.folder

    # -- the user's csv ---------------------------------------------------------------
    def _csv_path(self) -> Path:
        given = self.options.get("labels_csv", "") or DEFAULT_LABELS_CSV
        path = Path(given).expanduser()
        return path if path.is_absolute() else self.folder / path

    def _csv_columns(self, df: pd.DataFrame, path: Path):
        image_column = self.options.get("image_column", "")
        if image_column:
            _require_columns(df, path, [image_column], "image path")
        else:
            image_column = next((c for c in IMAGE_COLUMN_CANDIDATES if c in df.columns), "")
            if not image_column:
                raise ValueError(
                    f"label file {path} has no image path column (tried "
                    f"{list(IMAGE_COLUMN_CANDIDATES)}): name it with the parameter image_column"
                )
        patient_column = self.options.get("patient_column", "")
        if patient_column:
            _require_columns(df, path, [patient_column], "patient id")
        split_column = self.options.get("split_column", "")
        if split_column:
            _require_columns(df, path, [split_column], "split")
        else:
            split_column = next((c for c in SPLIT_COLUMN_CANDIDATES if c in df.columns), "")
        classes = list(self.options.get("class_columns", ()) or ())
        if classes:
            _require_columns(df, path, classes, "class")
        else:
            skip = {image_column, patient_column, split_column, *PATIENT_COLUMN_CANDIDATES}
            for col in df.columns:
                if col in skip:
                    continue
                values = df[col].dropna()
                num = pd.to_numeric(values, errors="coerce")
                if len(values) and num.notna().all() and num.isin([0, 1, -1]).all() and (num == 1).any():
                    classes.append(col)
            if not classes:
                raise ValueError(
                    f"label file {path}: no 0/1 class column found; name the classes with "
                    "the parameter class_columns"
                )
        reserved = sorted(set(classes) & set(META_COLUMNS))
        if reserved:
            raise ValueError(f"label file {path}: class names {reserved} are reserved column names")
        return image_column, patient_column, split_column, classes

    @property
    def classes(self) -> tuple[str, ...]:
        if self.spec.classes:
            return self.spec.classes
        path = self._csv_path()
        return tuple(self._csv_columns(_read_csv(path, "label file"), path)[3])

    # -- tables -------------------------------------------------------------------------
    def _frame(self, df: pd.DataFrame, path: Path, *, image_column: str, classes,
               patient_columns, split) -> pd.DataFrame:
        for pos, value in enumerate(df[image_column]):
            check_relative_path(value, path=path, pos=pos)
        y = labels_to_int8(df, classes, path=path, uncertain=self.uncertain, image_column=image_column)
        patients = _patient_ids(df, patient_columns, self.spec.patient_pattern, image_column, path)
        out = pd.DataFrame({
            "image_id": df[image_column].astype(str).to_numpy(),
            "patient_id": patients,
            "split": split,
        })
        for k, c in enumerate(classes):
            out[c] = y[:, k]
        return out

    def table(self) -> pd.DataFrame:
        if not self.spec.label_files:
            return self._csv_table()
        frames, sources = [], []
        for split, name in zip(SPLITS, self.spec.label_files):
            path = self.folder / name
            df = _read_csv(path, "label file")
            _require_columns(df, path, [self.spec.image_column], "image path")
            _require_columns(df, path, self.classes, "class")
            frames.append(self._frame(df, path, image_column=self.spec.image_column,
                                      classes=self.classes, patient_columns=self.spec.patient_columns,
                                      split=split))
            sources += [f"{path.name} {_line(k)}" for k in range(len(df))]
        table = pd.concat(frames, ignore_index=True)
        check_table(table, sources=pd.Series(sources))
        return table

    def _csv_table(self) -> pd.DataFrame:
        path = self._csv_path()
        df = _read_csv(path, "label file")
        image_column, patient_column, split_column, classes = self._csv_columns(df, path)
        patient_columns = (patient_column,) if patient_column else PATIENT_COLUMN_CANDIDATES
        if split_column:
            split = df[split_column].str.strip().str.lower()
            bad = ~split.isin(SPLITS)
            if bad.any():
                pos = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"label file {path}, {_line(pos)}: split {df[split_column].iat[pos]!r} in column "
                    f"{split_column!r} is not one of {list(SPLITS)}"
                )
            split = split.to_numpy()
        else:
            split = "train"
        table = self._frame(df, path, image_column=image_column, classes=classes,
                            patient_columns=patient_columns, split=split)
        if not split_column:
            assign = patient_split(table["patient_id"].unique(), seed=self.split_seed)
            table["split"] = table["patient_id"].map(assign)
        check_table(table, sources=pd.Series([f"{path.name} {_line(k)}" for k in range(len(table))]))
        return table

    def source(self, table: pd.DataFrame) -> images.ImageSource:
        root = self.image_dir
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {root} does not exist (see data_access.md; check with "
                f"python -m prunecxr check-data --dataset {self.name} --data-root {self.folder})"
            )
        rel = table["image_id"].astype(str).tolist()
        missing = [r for r in rel if not (root / r).is_file()]
        if missing:
            shown = ", ".join(str(root / r) for r in missing[:3])
            raise FileNotFoundError(
                f"{len(missing)} of {len(rel)} images are missing, e.g. {shown} (see data_access.md; "
                f"check with python -m prunecxr check-data --dataset {self.name} "
                f"--data-root {self.folder})"
            )
        return images.FileImages(root, tuple(rel))


_CSV_OPTIONS = ("labels_csv", "image_column", "class_columns", "patient_column", "split_column")


def create_dataset(
    name: str,
    *,
    data_root: str = "",
    uncertain: str = "error",
    split_seed: int = 0,
    labels_csv: str = "",
    image_column: str = "",
    class_columns: Sequence[str] = (),
    patient_column: str = "",
    split_column: str = "",
) -> Dataset:
    """Bind dataset ``name`` of :data:`DATASETS` to a data root and options.

    Parameters
    ----------
    name : a key of :data:`DATASETS`.
    data_root : folder of real data; empty → the environment variable ``PRUNECXR_DATA``.
        The dataset is ``<data_root>/<name>/`` when that exists, else ``<data_root>`` itself.
        The phantom reads no files (leave it empty).
    uncertain : policy for blank and -1 labels, one of :data:`UNCERTAIN_POLICIES`.
    split_seed : key of the patient split where the data has none (phantom, csv).
    labels_csv, image_column, class_columns, patient_column, split_column : dataset
        ``csv`` only: the label table (relative to ``data_root``; empty: ``labels.csv``)
        and its columns; empty
        means inferred (image column from :data:`IMAGE_COLUMN_CANDIDATES`, classes = the
        0/1 columns, patient column from :data:`PATIENT_COLUMN_CANDIDATES`, split column
        ``split``; without a split column, a patient-level 70/10/20 split).
    """
    spec = dataset_spec(name)
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"unknown uncertain={uncertain!r}; choose one of {list(UNCERTAIN_POLICIES)}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)):
        raise ValueError(f"parameter split_seed must be an int, got {split_seed!r}")
    if isinstance(class_columns, str):
        class_columns = [class_columns] if class_columns else []
    options = {"labels_csv": labels_csv, "image_column": image_column,
               "class_columns": list(class_columns), "patient_column": patient_column,
               "split_column": split_column}
    if name != "csv":
        given = [k for k in _CSV_OPTIONS if options[k]]
        if given:
            raise ValueError(f"parameter(s) {given} apply only to dataset 'csv', not {name!r}")
    if spec.synthetic:
        if data_root:
            raise ValueError(f"dataset {name!r} reads no files: leave data_root empty (got {data_root!r})")
        return PhantomDataset(spec, "", uncertain, int(split_seed), options)
    return FileDataset(spec, str(data_root), uncertain, int(split_seed), options)


# =========================================================================================
# The run: labels.parquet, the cache, run.json
# =========================================================================================


def prepare_run(
    run: str,
    *,
    dataset: str,
    data_root: str = "",
    resolution: int,
    split_seed: int = 0,
    max_patients: int = 0,
    uncertain: str = "error",
    **options,
) -> pd.DataFrame:
    """Write ``runs/<run>/labels.parquet`` and build (or reuse) the image cache.

    Parameters
    ----------
    run : the run name.
    dataset : a key of :data:`DATASETS`.
    data_root : folder of real data (empty → ``PRUNECXR_DATA``; unused by the phantom).
    resolution : side of the cached square images, in pixels.
    split_seed : key of generated patient splits and of the patient subsample.
    max_patients : keep this many patients (0 = all), in each split in proportion.
    uncertain : policy for blank and -1 labels (:data:`UNCERTAIN_POLICIES`).
    **options : the ``csv`` dataset's options (see :func:`create_dataset`).

    Returns
    -------
    The table written: ``image_id``, ``patient_id``, ``split``, then one int8 column per
    class in canonical order. Nothing is written when any input is bad; a class without a
    positive in a split warns (:class:`EmptyClassWarning`).
    """
    paths.check_run_name(run)
    resolution = images.check_resolution(resolution)
    ds = create_dataset(dataset, data_root=data_root, uncertain=uncertain, split_seed=split_seed,
                        **options)
    full = ds.table()
    table = subsample_patients(full, max_patients, seed=split_seed)
    check_splits_nonempty(table, f" (dataset {dataset!r}, max_patients={max_patients})")
    classes = list(table.columns[len(META_COLUMNS):])
    warn_empty_classes(table, classes)

    parts = {split: table[table["split"] == split] for split in SPLITS}
    sources = {split: ds.source(part) for split, part in parts.items()}  # every image exists
    cache = {split: images.build_cache(sources[split], parts[split]["image_id"].tolist(),
                                       dataset=dataset, split=split, resolution=resolution)
             for split in SPLITS}

    rp = paths.run_paths(run)
    artifacts.write_parquet(rp.labels, table)
    record = {
        "dataset": dataset,
        "synthetic": ds.synthetic,
        "classes": classes,
        "resolution": resolution,
        "n_images": {s: int((table["split"] == s).sum()) for s in SPLITS},
        "n_patients": {s: int(table.loc[table["split"] == s, "patient_id"].nunique()) for s in SPLITS},
        "n_images_available": int(len(full)),
        "cache_root": str(paths.cache_root()),
        "cache": {s: e.record() for s, e in cache.items()},
        "cache_reused": {s: e.reused for s, e in cache.items()},
        "cache_seconds": round(sum(e.seconds for e in cache.values()), 3),
    }
    config.record_data(run, record)
    return table


def cache_report(run: str) -> str:
    """A few lines on the run's data and image cache (reused or built, where, how long)."""
    info = config.run_data(run)
    res = info["resolution"]
    lines = [
        f"Dataset {info['dataset']!r}: {sum(info['n_images'].values()):,} images of "
        f"{sum(info['n_patients'].values()):,} patients "
        f"({info['n_images_available']:,} images available), {len(info['classes'])} classes.",
        f"Image cache ({res}×{res} uint8) under {info['cache_root']}:",
    ]
    for split in SPLITS:
        entry = info["cache"][split]
        how = "reused" if info["cache_reused"][split] else "built"
        lines.append(f"  {split:5s} {entry['n']:>8,} images  {how}  {entry['path']}")
    if not all(info["cache_reused"].values()):
        lines.append(f"Built in {info['cache_seconds']:.1f} s.")
    return "\n".join(lines)


@dataclass(frozen=True)
class Split:
    """One split of a run: memory-mapped images and their labels, in labels.parquet order.

    Attributes
    ----------
    name : ``train``, ``val`` or ``test``.
    images : uint8 ``[N, H, W]``, read-only memory map of the image cache.
    labels : uint8 ``[N, C]`` 0/1.
    image_ids, patient_ids : str arrays ``[N]``.
    classes : the ``C`` class names in canonical order.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    patient_ids: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.image_ids)


def read_labels(run: str) -> pd.DataFrame:
    """``runs/<run>/labels.parquet``."""
    return artifacts.read_parquet(paths.run_paths(run).labels, what="notebook 01_data")


def open_split(run: str, split: str) -> Split:
    """The images and labels of ``split`` of ``run`` (rows of labels.parquet, in order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    labels = read_labels(run)
    info = config.run_data(run)
    classes = list(labels.columns[len(META_COLUMNS):])
    if classes != list(info["classes"]):
        raise ValueError(f"labels.parquet of run {run!r} does not match its run.json: re-run notebook 01_data")
    part = labels[labels["split"] == split]
    ids = part["image_id"].astype(str).to_numpy()
    arr = images.open_cache(info["cache"][split], ids)
    return Split(
        name=split,
        images=arr,
        labels=part[classes].to_numpy(np.uint8),
        image_ids=ids,
        patient_ids=part["patient_id"].astype(str).to_numpy(),
        classes=classes,
    )


# =========================================================================================
# Checking a real dataset's layout (python -m prunecxr check-data)
# =========================================================================================


def check_layout(dataset: str, data_root: str = "", **options) -> list[str]:
    """Problems with a dataset's files (empty when everything is in place).

    Checks the data root, the dataset folder, the label files (columns, 0/1 values,
    duplicates, patient-disjoint splits, image paths) and that every image exists.
    ``options`` are those of :func:`create_dataset`. Raises ValueError only for an unknown
    dataset name or option.
    """
    ds = create_dataset(dataset, data_root=data_root, **options)
    if isinstance(ds, PhantomDataset):
        problems = []
        for f in (phantom.TABLE_FILE, phantom.BBOX_FILE):
            try:
                phantom.wheel_file(f)
            except FileNotFoundError as err:
                problems.append(str(err))
        return problems
    try:
        folder = ds.folder
    except FileNotFoundError as err:
        return [str(err)]
    problems = []
    for name in ds.spec.label_files:
        if not (folder / name).is_file():
            problems.append(f"label file {folder / name} is missing")
    if ds.spec.image_root and not ds.image_dir.is_dir():
        problems.append(f"image folder {ds.image_dir} is missing")
    if problems:
        return problems
    try:
        table = ds.table()
    except (ValueError, FileNotFoundError) as err:
        return [str(err)]
    missing = [r for r in table["image_id"] if not (ds.image_dir / r).is_file()]
    if missing:
        shown = ", ".join(str(ds.image_dir / r) for r in missing[:5])
        problems.append(f"{len(missing)} of {len(table)} images are missing, e.g. {shown}")
    return problems


def format_layout_report(dataset: str, data_root: str = "", problems: list[str] | None = None,
                         **options) -> str:
    """A human-readable verdict of :func:`check_layout` (run it when ``problems`` is None)."""
    if problems is None:
        problems = check_layout(dataset, data_root, **options)
    if dataset_spec(dataset).synthetic:
        where = "(embedded: the torchxrayvision wheel's label table, rendered images)"
    else:
        where = data_root or os.environ.get(paths.DATA_ENV, "") or "(data_root and PRUNECXR_DATA unset)"
    if not problems:
        return f"OK: dataset {dataset!r} at {where} is complete."
    lines = [f"Dataset {dataset!r} at {where}: {len(problems)} problem(s):"]
    lines += [f"  - {p}" for p in problems]
    lines.append("See data_access.md for how to obtain the data and where to put it.")
    return "\n".join(lines)


# =========================================================================================
# Summaries for notebook 01
# =========================================================================================


def class_names(labels: pd.DataFrame) -> list[str]:
    """The class columns of a labels table (after ``image_id``, ``patient_id``, ``split``)."""
    return [c for c in labels.columns if c not in META_COLUMNS]


def split_summary(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per split (and ``all``): images, patients, images per patient, labels per image."""
    classes = class_names(labels)
    rows = []
    for name in SPLITS + ("all",):
        part = labels if name == "all" else labels[labels["split"] == name]
        n = len(part)
        rows.append({
            "split": name,
            "images": n,
            "patients": int(part["patient_id"].nunique()),
            "images_per_patient": n / max(part["patient_id"].nunique(), 1),
            "labels_per_image": float(part[classes].sum(axis=1).mean()) if n else float("nan"),
            "classes_without_positive": int((part[classes].sum(axis=0) == 0).sum()),
        })
    return pd.DataFrame(rows)


def class_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Long table ``class``, ``split``, ``count``, ``prevalence``, classes in canonical order."""
    classes = class_names(labels)
    rows = []
    for split in SPLITS:
        part = labels[labels["split"] == split]
        for c in classes:
            count = int(part[c].sum())
            rows.append({"class": c, "split": split, "count": count,
                         "prevalence": count / len(part) if len(part) else float("nan")})
    return pd.DataFrame(rows)


def label_iou(labels: pd.DataFrame, *, split: str | None = None) -> pd.DataFrame:
    """Co-occurrence of classes as intersection over union of their positive images.

    ``IoU(a, b) = |A ∩ B| / |A ∪ B|`` over images (of ``split``, or all); NaN when neither
    class has a positive. Returns a square DataFrame indexed and columned by class.
    """
    classes = class_names(labels)
    part = labels if split is None else labels[labels["split"] == split]
    y = part[classes].to_numpy(np.float64)
    inter = y.T @ y
    count = np.diag(inter)
    union = count[:, None] + count[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
    return pd.DataFrame(iou, index=classes, columns=classes)


def labels_per_image(labels: pd.DataFrame) -> pd.DataFrame:
    """``split``, ``n_labels`` (positive classes of an image, No Finding included),
    ``images``, ``fraction`` of the split."""
    classes = class_names(labels)
    n = labels[classes].sum(axis=1).rename("n_labels")
    out = (pd.concat([labels["split"], n], axis=1).groupby(["split", "n_labels"]).size()
           .rename("images").reset_index())
    out["fraction"] = out["images"] / out.groupby("split")["images"].transform("sum")
    order = {s: k for k, s in enumerate(SPLITS)}
    return out.sort_values(["split", "n_labels"], key=lambda s: s.map(order) if s.name == "split" else s,
                           ignore_index=True)


def example_images(run: str, *, split: str = "train", seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """One image per class: of its positive images, one with the fewest other labels
    (ties broken by a hash of the id keyed with ``seed``).

    Returns (uint8 ``[K, H, W]``, DataFrame ``class``, ``image_id``, ``labels``) for the
    ``K`` classes that have a positive in ``split``.
    """
    s = open_split(run, split)
    rows, picks = [], []
    for k, c in enumerate(s.classes):
        pos = np.flatnonzero(s.labels[:, k] == 1)
        if not len(pos):
            continue
        # the fewest co-occurring labels first, then a keyed hash of the id
        rank = np.empty(len(pos), np.int64)
        rank[_hash_rank([s.image_ids[p] for p in pos], f"prunecxr-example-{seed}")] = np.arange(len(pos))
        n_labels = s.labels[pos].sum(axis=1)
        pick = int(pos[np.lexsort((rank, n_labels))[0]])
        picks.append(pick)
        names = [s.classes[j] for j in np.flatnonzero(s.labels[pick])]
        rows.append({"class": c, "image_id": s.image_ids[pick], "labels": ", ".join(names)})
    return np.asarray(s.images[picks]), pd.DataFrame(rows)


# =========================================================================================
# Figures of notebook 01: each returns (figure, the plotted data)
# =========================================================================================

_SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def class_counts_figure(labels: pd.DataFrame):
    """Positive images per class and split on a log axis: the long tail."""
    import plotly.graph_objects as go

    counts = class_counts(labels)
    fig = go.Figure()
    for split in SPLITS:
        part = counts[counts["split"] == split]
        fig.add_bar(x=part["class"], y=part["count"].where(part["count"] > 0), name=split,
                    marker_color=_SPLIT_COLORS[split],
                    customdata=part["prevalence"],
                    hovertemplate="%{x}<br>%{y} images (%{customdata:.2%})<extra>" + split + "</extra>")
    fig.update_layout(title="Positive images per class (log scale): the long tail",
                      barmode="group", xaxis_title="class (canonical order)",
                      yaxis_title="images", yaxis_type="log", legend_title="split")
    return fig, counts


def iou_figure(labels: pd.DataFrame, *, split: str | None = None):
    """Heatmap of class co-occurrence, IoU of positive image sets (diagonal blank)."""
    import plotly.graph_objects as go

    iou = label_iou(labels, split=split)
    shown = iou.to_numpy(copy=True)
    np.fill_diagonal(shown, np.nan)
    fig = go.Figure(go.Heatmap(z=shown, x=list(iou.columns), y=list(iou.index),
                               colorscale="Viridis", zmin=0, colorbar_title="IoU",
                               hovertemplate="%{y} & %{x}<br>IoU %{z:.3f}<extra></extra>"))
    where = f"{split} split" if split else "all images"
    fig.update_layout(title=f"Class co-occurrence: IoU of positive images ({where})",
                      yaxis_autorange="reversed")
    data = iou.rename_axis("class_a").reset_index().melt(id_vars="class_a", var_name="class_b",
                                                          value_name="iou")
    return fig, data


def labels_per_image_figure(labels: pd.DataFrame):
    """Share of images with 1, 2, ... positive labels, per split."""
    import plotly.graph_objects as go

    table = labels_per_image(labels)
    fig = go.Figure()
    for split in SPLITS:
        part = table[table["split"] == split]
        fig.add_bar(x=part["n_labels"], y=part["fraction"], name=split,
                    marker_color=_SPLIT_COLORS[split], customdata=part["images"],
                    hovertemplate="%{x} labels: %{customdata} images (%{y:.1%})<extra>" + split + "</extra>")
    fig.update_layout(title="Positive labels per image (No Finding counts as one)", barmode="group",
                      xaxis_title="positive labels", yaxis_title="fraction of the split's images",
                      yaxis_tickformat=".0%", xaxis_dtick=1, legend_title="split")
    return fig, table


def patients_figure(labels: pd.DataFrame):
    """Patients and images per split."""
    import plotly.graph_objects as go

    summary = split_summary(labels)
    summary = summary[summary["split"].isin(SPLITS)]
    fig = go.Figure()
    fig.add_bar(x=summary["split"], y=summary["patients"], name="patients", marker_color="#6a3d9a")
    fig.add_bar(x=summary["split"], y=summary["images"], name="images", marker_color="#b2df8a")
    fig.update_layout(title="Patients and images per split (patient-disjoint)", barmode="group",
                      xaxis_title="split", yaxis_title="count")
    return fig, summary[["split", "patients", "images", "images_per_patient"]]


def examples_figure(run: str, *, split: str = "train", seed: int = 0):
    """One image per class from the run's image cache, titled with its labels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    imgs, table = example_images(run, split=split, seed=seed)
    n = len(imgs)
    cols = min(5, max(n, 1))
    rows = max(1, -(-n // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(table["class"]) if n else None,
                        horizontal_spacing=0.01, vertical_spacing=0.06)
    for k in range(n):
        fig.add_trace(go.Heatmap(z=imgs[k], colorscale="gray", zmin=0, zmax=255, showscale=False,
                                 hovertemplate=f"{table['image_id'].iat[k]}<br>{table['labels'].iat[k]}"
                                 "<extra></extra>"),
                      row=k // cols + 1, col=k % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(title=f"One {split} image per class, as the models see them")
    return fig, table
