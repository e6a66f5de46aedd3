"""Datasets bound to a data root, and the run's label table and image cache (notebook 01).

:func:`create_dataset` binds a :class:`~prunecxr.data.specs.DatasetSpec` of the registry to a
data root and options; the :class:`Dataset` it returns gives the checked table of all images
(:meth:`Dataset.table`) and where their pixels come from (:meth:`Dataset.source`).

:func:`prepare_run` turns one into ``runs/<run>/labels.parquet`` (``image_id``,
``patient_id``, ``split``, then one int8 0/1 column per class; see ``docs/artifacts.md``) and
an image cache (:mod:`prunecxr.data.cache`) recorded in ``run.json``; :func:`open_split` gives
a split's memory-mapped images and labels to the later stages. Where real data goes, and how
to check it, is in ``data_access.md`` (:func:`prunecxr.data.check_layout`,
``python -m prunecxr check-data``).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts, config, paths
from ..artifacts import SPLITS
from . import cache, images, phantom, reference, tables
from .specs import (
    CSV_OPTIONS,
    DEFAULT_LABELS_CSV,
    PATIENT_COLUMN_CANDIDATES,
    DatasetSpec,
    check_uncertain,
    dataset_spec,
)
from .splits import check_splits_nonempty, patient_split, subsample_patients


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
        """All images: ``image_id``, ``patient_id``, ``split``, then int8 class columns.

        Checked: 0/1 labels, image paths inside the image root, no duplicate image, no
        patient in two splits, every split with images. Errors name file, line and column.
        """

    @abc.abstractmethod
    def source(self, table: pd.DataFrame) -> images.ImageSource:
        """Where the pixels of ``table``'s rows come from (checks that they exist)."""


# -- the phantom -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _phantom_table() -> pd.DataFrame:
    meta = phantom.load_table()
    split = meta["image_id"].map(reference.nih_cxr_lt_split())
    if split.isna().any():
        missing = meta.loc[split.isna(), "image_id"].iloc[0]
        raise ValueError(
            f"image {missing!r} of the phantom's label table is not in NIH-CXR-LT's split "
            f"({reference.SPLIT_FILE}, package data); reinstall the project"
        )
    out = pd.DataFrame(
        {"image_id": meta["image_id"], "patient_id": meta["patient_id"], "split": split}
    )
    for c in phantom.CLASSES:
        out[c] = meta[c].to_numpy(np.int8)
    return out


@functools.lru_cache(maxsize=1)
def _phantom_index() -> pd.Index:
    return pd.Index(phantom.load_table()["image_id"])


class PhantomDataset(Dataset):
    """The NIH phantom: the wheel's label table and rendered images, on NIH-CXR-LT's split
    (:func:`prunecxr.data.reference.nih_cxr_lt_split`: the paper's train, val and test images)."""

    def table(self) -> pd.DataFrame:
        return _phantom_table().copy()

    def source(self, table: pd.DataFrame) -> images.ImageSource:
        pos = _phantom_index().get_indexer(table["image_id"])
        if (pos < 0).any():
            bad = table["image_id"].iloc[int(np.flatnonzero(pos < 0)[0])]
            raise ValueError(f"image id {bad!r} is not in the phantom's label table")
        meta = phantom.load_table().iloc[pos]
        strength = phantom.strengths(self.options.get("phantom_difficulty", "calibrated"))
        return images.PhantomImages(meta.reset_index(drop=True), strength)

    def wheel_problems(self) -> list[str]:
        """What is missing from the installed ``torchxrayvision`` wheel (empty: nothing)."""
        problems = []
        for f in (phantom.TABLE_FILE, phantom.BBOX_FILE):
            try:
                phantom.wheel_file(f)
            except FileNotFoundError as err:
                problems.append(str(err))
        return problems


# -- label files and image files ------------------------------------------------------------


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

    @property
    def label_paths(self) -> list[Path]:
        """The label files: one per split, or the user's one table (``csv``)."""
        if self.spec.label_files:
            return [self.folder / name for name in self.spec.label_files]
        given = Path(self.options.get("labels_csv", "") or DEFAULT_LABELS_CSV).expanduser()
        return [given if given.is_absolute() else self.folder / given]

    def _csv_columns(self, df: pd.DataFrame, path: Path):
        o = self.options
        return tables.csv_columns(
            df,
            path,
            image_column=o.get("image_column", ""),
            patient_column=o.get("patient_column", ""),
            split_column=o.get("split_column", ""),
            class_columns=o.get("class_columns", ()),
        )

    @property
    def classes(self) -> tuple[str, ...]:
        if self.spec.classes:
            return self.spec.classes
        path = self.label_paths[0]
        return tuple(self._csv_columns(tables.read_label_file(path), path)[3])

    def _frame(
        self,
        df: pd.DataFrame,
        path: Path,
        *,
        image_column: str,
        classes,
        patient_columns,
        split,
        note: str = "",
    ) -> pd.DataFrame:
        for pos, value in enumerate(df[image_column]):
            tables.check_relative_path(value, path=path, pos=pos)
        y = tables.labels_to_int8(
            df, classes, path=path, uncertain=self.uncertain, image_column=image_column, note=note
        )
        patients = tables.patient_ids(
            df, patient_columns, self.spec.patient_pattern, image_column, path
        )
        out = pd.DataFrame(
            {
                "image_id": df[image_column].astype(str).to_numpy(),
                "patient_id": patients,
                "split": split,
            }
        )
        for k, c in enumerate(classes):
            out[c] = y[:, k]
        return out

    def table(self) -> pd.DataFrame:
        if not self.spec.label_files:
            return self._csv_table()
        frames, sources = [], []
        for split, path in zip(SPLITS, self.label_paths):
            df = tables.read_label_file(path)
            tables.require_columns(df, path, [self.spec.image_column], "image path")
            tables.require_columns(df, path, self.classes, "class")
            if df.empty:
                raise ValueError(
                    f"label file {path} has no rows: split {split!r} has no image; "
                    "every split needs images"
                )
            frames.append(
                self._frame(
                    df,
                    path,
                    image_column=self.spec.image_column,
                    classes=self.classes,
                    patient_columns=self.spec.patient_columns,
                    split=split,
                )
            )
            sources += [f"{path.name} {tables.csv_line(k)}" for k in range(len(df))]
        table = pd.concat(frames, ignore_index=True)
        tables.check_table(table, sources=pd.Series(sources))
        return table

    def _csv_table(self) -> pd.DataFrame:
        path = self.label_paths[0]
        df = tables.read_label_file(path)
        image_column, patient_column, split_column, classes = self._csv_columns(df, path)
        patient_columns = (patient_column,) if patient_column else PATIENT_COLUMN_CANDIDATES
        split = tables.split_values(df, split_column, path) if split_column else "train"
        note = "" if self.options.get("class_columns") else tables.INFERRED_NOTE
        table = self._frame(
            df,
            path,
            image_column=image_column,
            classes=classes,
            patient_columns=patient_columns,
            split=split,
            note=note,
        )
        if split_column:
            how = f"column {split_column!r}"
        else:
            assign = patient_split(table["patient_id"].unique(), seed=self.split_seed)
            table["split"] = table["patient_id"].map(assign)
            how = f"a 70/10/20 split of its {table['patient_id'].nunique()} patient(s)"
        tables.check_table(
            table,
            sources=pd.Series([f"{path.name} {tables.csv_line(k)}" for k in range(len(table))]),
        )
        check_splits_nonempty(table, f" in label file {path} ({how})")
        return table

    def _check_hint(self) -> str:
        return (
            f"see data_access.md; check with python -m prunecxr check-data --dataset "
            f"{self.name} --data-root {self.folder}"
        )

    def missing_images(self, table: pd.DataFrame) -> list[str]:
        """The image paths of ``table`` (relative to :attr:`image_dir`) that are no file."""
        root = self.image_dir
        return [r for r in table["image_id"].astype(str) if not (root / r).is_file()]

    def source(self, table: pd.DataFrame) -> images.FileImages:
        root = self.image_dir
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist ({self._check_hint()})")
        missing = self.missing_images(table)
        if missing:
            shown = ", ".join(str(root / r) for r in missing[:3])
            raise FileNotFoundError(
                f"{len(missing)} of {len(table)} images are missing, e.g. {shown} ({self._check_hint()})"
            )
        return images.FileImages(root, tuple(table["image_id"].astype(str)))


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
    phantom_difficulty: str | Mapping[str, float] = "calibrated",
) -> Dataset:
    """Bind dataset ``name`` of :data:`~prunecxr.data.specs.DATASETS` to a data root and options.

    Parameters
    ----------
    name : a key of :data:`~prunecxr.data.specs.DATASETS`.
    data_root : folder of real data; empty → the environment variable ``PRUNECXR_DATA``.
        The dataset is ``<data_root>/<name>/`` when that exists, else ``<data_root>`` itself.
        The phantom reads no files (leave it empty).
    uncertain : policy for blank and -1 labels, one of
        :data:`~prunecxr.data.specs.UNCERTAIN_POLICIES`.
    split_seed : key of the patient split of a ``csv`` table without a split column (the phantom
        has NIH-CXR-LT's split) and of the patient subsample (``max_patients``).
    labels_csv, image_column, class_columns, patient_column, split_column : dataset
        ``csv`` only: the label table (relative to ``data_root``; empty: ``labels.csv``)
        and its columns; empty means inferred (:func:`prunecxr.data.tables.csv_columns`;
        without a split column, a patient-level 70/10/20 split).
    phantom_difficulty : the phantom's per-finding strengths: ``"calibrated"`` (CheXNet's
        per-class AUROC), ``"equal"`` (one common AUROC) or a table finding → strength
        (:func:`prunecxr.data.phantom.strengths`). Real datasets ignore it.
    """
    spec = dataset_spec(name)
    check_uncertain(uncertain)
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)):
        raise ValueError(f"parameter split_seed must be an int, got {split_seed!r}")
    if isinstance(class_columns, str):
        class_columns = [class_columns] if class_columns else []
    options = {
        "labels_csv": labels_csv,
        "image_column": image_column,
        "class_columns": list(class_columns),
        "patient_column": patient_column,
        "split_column": split_column,
    }
    if name != "csv":
        given = [k for k in CSV_OPTIONS if options[k]]
        if given:
            raise ValueError(f"parameter(s) {given} apply only to dataset 'csv', not {name!r}")
    if spec.synthetic:
        if data_root:
            raise ValueError(
                f"dataset {name!r} reads no files: leave data_root empty (got {data_root!r})"
            )
        phantom.strengths(phantom_difficulty)  # a bad condition or table fails here, naming it
        options["phantom_difficulty"] = phantom_difficulty
        return PhantomDataset(spec, "", uncertain, int(split_seed), options)
    return FileDataset(spec, str(data_root), uncertain, int(split_seed), options)


# -- the run: labels.parquet, the cache, run.json --------------------------------------------


def prepare_run(
    run: str,
    *,
    dataset: str,
    data_root: str = "",
    resolution: int,
    split_seed: int = 0,
    max_patients: int = 0,
    uncertain: str = "error",
    phantom_difficulty: str | Mapping[str, float] = "calibrated",
    **options,
) -> pd.DataFrame:
    """Write ``runs/<run>/labels.parquet`` and build (or reuse) the image cache.

    Parameters
    ----------
    run : the run name.
    dataset : a key of :data:`~prunecxr.data.specs.DATASETS`.
    data_root : folder of real data (empty → ``PRUNECXR_DATA``; unused by the phantom).
    resolution : side of the cached square images, in pixels.
    split_seed : key of generated patient splits and of the patient subsample.
    max_patients : keep this many patients (0 = all), in each split in proportion.
    uncertain : policy for blank and -1 labels (:data:`~prunecxr.data.specs.UNCERTAIN_POLICIES`).
    phantom_difficulty : the phantom's per-finding strengths (see :func:`create_dataset`).
    **options : the ``csv`` dataset's options (see :func:`create_dataset`).

    Returns
    -------
    The table written: ``image_id``, ``patient_id``, ``split``, then one int8 column per
    class in canonical order. Nothing is written when any input is bad; a class without a
    positive in a split warns (:class:`~prunecxr.data.tables.EmptyClassWarning`). For the
    phantom, ``runs/<run>/locations.parquet`` says where each finding was drawn. The data
    record (``run.json["data"]``, :func:`prunecxr.config.record_data`) says what the run's
    data is, for every later stage.
    """
    paths.check_run_name(run)
    resolution = images.check_resolution(resolution)
    ds = create_dataset(
        dataset,
        data_root=data_root,
        uncertain=uncertain,
        split_seed=split_seed,
        phantom_difficulty=phantom_difficulty,
        **options,
    )
    full = ds.table()
    table = subsample_patients(full, max_patients, seed=split_seed)
    check_splits_nonempty(table, f" (dataset {dataset!r}, max_patients={max_patients})")
    classes = artifacts.class_names(table)
    tables.warn_empty_classes(table, classes)

    parts = {split: table[table["split"] == split] for split in SPLITS}
    sources = {split: ds.source(part) for split, part in parts.items()}  # every image exists
    entries = {
        split: cache.build_cache(
            sources[split],
            parts[split]["image_id"].tolist(),
            dataset=dataset,
            split=split,
            resolution=resolution,
        )
        for split in SPLITS
    }

    artifacts.write_labels(run, table)
    drawn = {split: cache.read_locations(e.record()) for split, e in entries.items()}
    if all(d is not None for d in drawn.values()):
        artifacts.write_locations(
            run, pd.concat([d.assign(split=split) for split, d in drawn.items()], ignore_index=True)
        )
    else:
        paths.run_paths(run).locations.unlink(missing_ok=True)  # a former phantom run's
    record = {
        "dataset": dataset,
        "synthetic": ds.synthetic,
        "classes": classes,
        "resolution": resolution,
        "n_images": {s: int((table["split"] == s).sum()) for s in SPLITS},
        "n_patients": {
            s: int(table.loc[table["split"] == s, "patient_id"].nunique()) for s in SPLITS
        },
        "n_images_available": int(len(full)),
        "cache_root": str(paths.cache_root()),
        "cache": {s: e.record() for s, e in entries.items()},
        "cache_reused": {s: e.reused for s, e in entries.items()},
        "cache_seconds": round(sum(e.seconds for e in entries.values()), 3),
    }
    if ds.synthetic:
        condition = phantom_difficulty if isinstance(phantom_difficulty, str) else "table"
        record["phantom_difficulty"] = {
            "condition": condition,
            "strength": phantom.strengths(phantom_difficulty),
        }
    config.record_data(run, record)
    # the table returned is the file just written: what the stage draws from it, it read there
    artifacts.note_read(paths.run_paths(run).labels)
    return table


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


def open_split(run: str, split: str) -> Split:
    """The images and labels of ``split`` of ``run`` (rows of labels.parquet, in order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    labels = artifacts.read_labels(run)
    info = config.run_data(run)
    classes = artifacts.class_names(labels)
    if classes != list(info["classes"]):
        raise ValueError(
            f"labels.parquet of run {run!r} does not match its run.json: re-run notebook 01_data"
        )
    part = labels[labels["split"] == split]
    ids = part["image_id"].astype(str).to_numpy()
    arr = cache.open_cache(info["cache"][split], ids)
    return Split(
        name=split,
        images=arr,
        labels=part[classes].to_numpy(np.uint8),
        image_ids=ids,
        patient_ids=part["patient_id"].astype(str).to_numpy(),
        classes=classes,
    )
