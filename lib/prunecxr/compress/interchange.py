"""Predictions from anywhere: the interchange layout, its checks, and its import into a run.

A model trained elsewhere (another framework, another lab's evaluation server) and compressed
by any method enters the analyses of notebooks 04-07 as two files (``docs/extending.md``):

* **labels** — a CSV or parquet table, one row per image: ``image_id``, optionally ``split``
  (``train``, ``val`` or ``test``; absent: every row is a test image) and ``patient_id``,
  then one 0/1 column per class, in the classes' canonical order;
* **predictions** — either a long table (CSV or parquet) with one row per seed, level, test
  image and class: ``seed, level, image_id, class, prob``; or a float array ``[seed, level,
  image, class]`` (``.npy``) with a JSON sidecar of the same name (``.json``) naming its axes:
  ``axes`` (``["seed", "level", "image", "class"]``), ``seeds``, ``level_name``, ``levels``,
  ``classes``, ``image_ids`` and optionally ``level_unit``.

Levels lie on one axis of :mod:`prunecxr.levels` (``sparsity``, ``bits``,
``channel_fraction``), named by ``level_name``; the dense level (sparsity 0, 32 bits, no
channel removed) must be present: it is the baseline of every comparison.

Everything is read and checked before anything is written, and every refusal names the
file, the row (data rows counted from 1, the header not counted) or the array index, and the
value: image ids that are not the labels' test images, a seed without a level, probabilities
outside [0, 1] or NaN, classes in another order than the labels', duplicated rows.
:func:`import_predictions` then writes the run's store (``prune/<method>/probs.npy``,
``meta.json``, ``metrics.parquet``), its ``labels.parquet`` and its data record, the files
notebooks 04-07 read (``docs/artifacts.md``). The authors' pickled release has its own
reader, :mod:`prunecxr.compress.importer`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts, config, levels, paths

#: the columns of the long layout
PREDICTION_COLUMNS = ("seed", "level", "image_id", "class", "prob")
#: the axes of the array layout, in order
ARRAY_AXES = ("seed", "level", "image", "class")
#: the keys of the array layout's JSON sidecar (``level_unit`` is optional)
SIDECAR_KEYS = ("axes", "seeds", "level_name", "levels", "classes", "image_ids")
SPLITS = ("train", "val", "test")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class InterchangeError(ValueError):
    """A predictions or labels file does not follow the interchange layout (the message says
    which file, row and value)."""


@dataclass(frozen=True)
class Predictions:
    """Checked predictions, in the labels' test order and class order.

    ``probs`` is float32 ``[len(seeds), len(levels), len(image_ids), len(classes)]``; levels
    are in compression order (the dense level first).
    """

    probs: np.ndarray
    seeds: list[int]
    levels: list[float]
    level_name: str
    classes: list[str]
    image_ids: list[str]
    source: str


# =========================================================================================
# Reading tables
# =========================================================================================
def _row(index: int) -> str:
    return f"row {index + 1}"


def _show(value: Any) -> str:
    """A cell's value as Python writes it (NumPy scalars as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.csv.gz``) or parquet (``.parquet``, ``.pq``) table; ids kept as text."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(
            path,
            dtype={"image_id": str, "patient_id": str, "class": str, "split": str},
            keep_default_na=False,
            na_values=[""],
        )
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    raise InterchangeError(
        f"{path}: unknown table format; use one of {list(TABLE_SUFFIXES)} (or .csv.gz)"
    )


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column as float64, or an error naming the first value that is not a number."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(values) & frame[column].notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise InterchangeError(
            f"{path}: {_row(i)}, column {column!r} holds {_show(frame[column].iloc[i])}, not a number"
        )
    return values


def read_labels_file(path: str | Path) -> pd.DataFrame:
    """The labels of the interchange layout as ``labels.parquet`` holds them.

    Returns a table ``image_id, patient_id, split, <class>...`` (classes int8, in file
    order); a missing ``split`` column makes every row a test image, a missing ``patient_id``
    leaves it empty.
    """
    path = Path(path).expanduser()
    frame = read_table(path)
    if "image_id" not in frame.columns:
        raise InterchangeError(f"{path} has no 'image_id' column (columns: {list(frame.columns)})")
    classes = [c for c in frame.columns if c not in artifacts.LABEL_META_COLUMNS]
    if not classes:
        raise InterchangeError(
            f"{path} has no class column besides {list(artifacts.LABEL_META_COLUMNS)}"
        )
    ids = frame["image_id"]
    empty = np.flatnonzero(ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy())
    if empty.size:
        raise InterchangeError(f"{path}: {_row(int(empty[0]))} has an empty image_id")
    ids = ids.astype(str)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        second = int(np.flatnonzero(dup & (ids == ids.iloc[first]).to_numpy())[1])
        raise InterchangeError(
            f"{path}: image_id {_show(ids.iloc[first])} appears twice ({_row(first)} and {_row(second)})"
        )
    if "split" in frame.columns:
        split = frame["split"].astype(str)
        bad = np.flatnonzero(~split.isin(SPLITS).to_numpy())
        if bad.size:
            i = int(bad[0])
            raise InterchangeError(
                f"{path}: {_row(i)} has split {_show(frame['split'].iloc[i])}; use one of {list(SPLITS)}"
            )
    else:
        split = pd.Series(["test"] * len(frame))
    if not (split == "test").any():
        raise InterchangeError(f"{path} has no test image (split == 'test')")
    out = pd.DataFrame(
        {
            "image_id": ids.to_numpy(),
            "patient_id": frame["patient_id"].fillna("").astype(str).to_numpy()
            if "patient_id" in frame
            else "",
            "split": split.to_numpy(),
        }
    )
    for name in classes:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
        if bad.size:
            i = int(bad[0])
            raise InterchangeError(
                f"{path}: {_row(i)}, class {name!r} holds {_show(frame[name].iloc[i])}; labels must be 0 or 1"
            )
        out[str(name)] = values.astype(np.int8)
    return out


# =========================================================================================
# Reading predictions
# =========================================================================================
def _check_class_order(
    found: Sequence[str], classes: Sequence[str], where: str, labels_name: str
) -> None:
    missing = [c for c in classes if c not in found]
    if missing:
        raise InterchangeError(
            f"{where} has no predictions for the classes {missing} of {labels_name}"
        )
    if list(found) != list(classes):
        raise InterchangeError(
            f"{where} lists the classes in the order {list(found)}, but {labels_name} in the order "
            f"{list(classes)}; write them in the labels' order (one class order for every file)"
        )


def _read_long(path: Path, labels: pd.DataFrame, level_name: str, labels_name: str) -> Predictions:
    axis = levels.axis(level_name)
    frame = read_table(path).reset_index(drop=True)
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise InterchangeError(
            f"{path} lacks the columns {missing}; the long layout has {list(PREDICTION_COLUMNS)} "
            f"(found {list(frame.columns)})"
        )
    if frame.empty:
        raise InterchangeError(f"{path} has no rows")
    classes = artifacts.class_names(labels)
    test = labels[labels["split"] == "test"]
    test_ids = test["image_id"].tolist()

    seeds = _numbers(frame, "seed", path)
    bad = np.flatnonzero(np.isnan(seeds) | (seeds < 0) | (seeds != np.floor(seeds)))
    if bad.size:
        i = int(bad[0])
        raise InterchangeError(
            f"{path}: {_row(i)} has seed {_show(frame['seed'].iloc[i])}; seeds are non-negative integers"
        )
    level_values = _numbers(frame, "level", path)
    for value in pd.unique(
        level_values
    ):  # each distinct level once; the first row that holds a bad one
        try:
            axis.check_level(float(value), name="level")
        except ValueError as err:
            i = int(
                np.flatnonzero(
                    (level_values == value) | (np.isnan(level_values) & np.isnan(value))
                )[0]
            )
            raise InterchangeError(f"{path}: {_row(i)}: {err}") from None
    prob = _numbers(frame, "prob", path)
    bad = np.flatnonzero(~((prob >= 0) & (prob <= 1)))  # NaN fails both
    if bad.size:
        i = int(bad[0])
        raise InterchangeError(
            f"{path}: {_row(i)} has prob {_show(frame['prob'].iloc[i])}; a probability is a number in [0, 1]"
        )
    image = frame["image_id"].astype(str)
    cls = frame["class"].astype(str)
    unknown = np.flatnonzero(~cls.isin(classes).to_numpy())
    if unknown.size:
        i = int(unknown[0])
        raise InterchangeError(
            f"{path}: {_row(i)} names the class {_show(cls.iloc[i])}, which {labels_name} does not have ({classes})"
        )
    outside = np.flatnonzero(~image.isin(test_ids).to_numpy())
    if outside.size:
        i = int(outside[0])
        where = labels.loc[labels["image_id"] == image.iloc[i], "split"]
        why = f"a {where.iloc[0]} image there" if len(where) else "not in it"
        raise InterchangeError(
            f"{path}: {_row(i)} has image_id {_show(image.iloc[i])}, which is not a test image of {labels_name} ({why})"
        )
    key = pd.DataFrame(
        {"seed": seeds.astype(np.int64), "level": level_values, "image_id": image, "class": cls}
    )
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        same = (key == key.iloc[first]).all(axis=1).to_numpy()
        second = int(np.flatnonzero(same)[1])
        r = key.iloc[first]
        raise InterchangeError(
            f"{path}: {_row(first)} and {_row(second)} both give seed {r['seed']}, level {_show(r['level'])}, "
            f"image {_show(r['image_id'])}, class {_show(r['class'])}; each must appear once"
        )
    _check_class_order(list(pd.unique(cls)), classes, str(path), labels_name)

    seed_list = sorted(int(s) for s in np.unique(key["seed"]))
    level_list = axis.check_levels(axis.order(np.unique(level_values)), name="levels")
    if not axis.is_dense(level_list[0]):
        raise InterchangeError(
            f"{path} has no row at the dense level ({level_name} {axis.dense:g}), the baseline of every "
            f"comparison; levels found: {level_list}"
        )
    counts = key.groupby(["seed", "level"]).size()
    for s in seed_list:
        for lv in level_list:
            n = int(counts.get((s, lv), 0))
            if n == 0:
                have = sorted(float(v) for v in key.loc[key["seed"] == s, "level"].unique())
                raise InterchangeError(
                    f"{path}: seed {s} has no row at {level_name} {lv:g} (its levels: {have}); every seed "
                    f"needs every level of {level_list}"
                )
            if n != len(test_ids) * len(classes):
                block = key[(key["seed"] == s) & (key["level"] == lv)]
                have = set(zip(block["image_id"], block["class"]))
                lack = next((i, c) for i in test_ids for c in classes if (i, c) not in have)
                raise InterchangeError(
                    f"{path}: seed {s} at {level_name} {lv:g} has {n} rows of {len(test_ids) * len(classes)} "
                    f"(test images × classes); it lacks image {lack[0]!r}, class {lack[1]!r}"
                )
    probs = np.empty(
        (len(seed_list), len(level_list), len(test_ids), len(classes)), dtype=np.float32
    )
    si = pd.Index(seed_list).get_indexer(key["seed"])
    ki = pd.Index(level_list).get_indexer(key["level"])
    ni = pd.Index(test_ids).get_indexer(key["image_id"])
    ci = pd.Index(classes).get_indexer(key["class"])
    probs[si, ki, ni, ci] = prob
    return Predictions(probs, seed_list, level_list, axis.name, classes, test_ids, str(path))


def _duplicate(values: Sequence[Any], what: str, where: str) -> None:
    seen: dict[Any, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            raise InterchangeError(
                f"{where}: {what}[{seen[v]}] and {what}[{i}] are both {v!r}; each must appear once"
            )
        seen[v] = i


def _read_array(path: Path, labels: pd.DataFrame, labels_name: str) -> Predictions:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{path} needs its sidecar {sidecar} naming its axes (docs/extending.md)"
        )
    try:
        meta = artifacts.read_json(sidecar)
    except ValueError as err:
        raise InterchangeError(f"{sidecar} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise InterchangeError(f"{sidecar} holds a {type(meta).__name__}, not an object")
    missing = [k for k in SIDECAR_KEYS if k not in meta]
    if missing:
        raise InterchangeError(
            f"{sidecar} lacks the keys {missing} (it needs {list(SIDECAR_KEYS)})"
        )
    if list(meta["axes"]) != list(ARRAY_AXES):
        raise InterchangeError(
            f"{sidecar}: axes is {meta['axes']!r}; the array layout's axes are {list(ARRAY_AXES)}"
        )
    try:
        axis = levels.axis(meta["level_name"])
    except ValueError as err:
        raise InterchangeError(f"{sidecar}: {err}") from None
    if "level_unit" in meta and meta["level_unit"] != axis.unit:
        raise InterchangeError(
            f"{sidecar}: level_unit {meta['level_unit']!r} is not the unit of {axis.name} ({axis.unit!r})"
        )
    for key in ("seeds", "levels", "classes", "image_ids"):
        if not isinstance(meta[key], list):
            raise InterchangeError(f"{sidecar}: {key} must be a list, got {meta[key]!r}")
        _duplicate(meta[key], key, str(sidecar))
    for i, s in enumerate(meta["seeds"]):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise InterchangeError(
                f"{sidecar}: seeds[{i}] is {s!r}; seeds are non-negative integers"
            )
    for i, v in enumerate(meta["levels"]):
        try:
            axis.check_level(v, name=f"levels[{i}]")
        except ValueError as err:
            raise InterchangeError(f"{sidecar}: {err}") from None
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as err:
        raise InterchangeError(f"{path} is not a plain NumPy array: {err}") from None
    shape = tuple(len(meta[k]) for k in ("seeds", "levels", "image_ids", "classes"))
    if array.shape != shape:
        raise InterchangeError(
            f"{path} has shape {array.shape}; {sidecar} describes {shape} "
            f"({len(meta['seeds'])} seeds, {len(meta['levels'])} levels, {len(meta['image_ids'])} images, "
            f"{len(meta['classes'])} classes)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InterchangeError(f"{path} holds {array.dtype}; probabilities are floats")
    classes = artifacts.class_names(labels)
    _check_class_order([str(c) for c in meta["classes"]], classes, str(sidecar), labels_name)
    test_ids = labels.loc[labels["split"] == "test", "image_id"].tolist()
    ids = [str(i) for i in meta["image_ids"]]
    test_set = set(test_ids)
    for i, image in enumerate(ids):
        if image not in test_set:
            raise InterchangeError(
                f"{sidecar}: image_ids[{i}] is {image!r}, which is not a test image of {labels_name}"
            )
    if len(ids) != len(test_ids):
        lack = next(i for i in test_ids if i not in set(ids))
        raise InterchangeError(
            f"{sidecar} has no predictions for the test image {lack!r} of {labels_name}"
        )
    values = np.asarray(array, dtype=np.float32)
    bad = ~((values >= 0) & (values <= 1))
    if bad.any():
        s, k, n, c = (int(x) for x in np.argwhere(bad)[0])
        raise InterchangeError(
            f"{path}: [{s}, {k}, {n}, {c}] (seed {meta['seeds'][s]}, {axis.name} {meta['levels'][k]}, image "
            f"{ids[n]!r}, class {classes[c]!r}) holds {float(array[s, k, n, c])!r}; a probability is a number in [0, 1]"
        )
    level_values = [float(v) for v in meta["levels"]]
    order = sorted(range(len(level_values)), key=lambda j: axis.compression_rank(level_values[j]))
    level_list = axis.check_levels([level_values[j] for j in order], name="levels")
    if not axis.is_dense(level_list[0]):
        raise InterchangeError(
            f"{sidecar}: levels {level_values} lack the dense level ({axis.name} {axis.dense:g})"
        )
    seed_order = sorted(range(len(meta["seeds"])), key=lambda j: meta["seeds"][j])
    image_order = pd.Index(ids).get_indexer(test_ids)
    probs = values[seed_order][:, order][:, :, image_order]
    return Predictions(
        np.ascontiguousarray(probs),
        [int(meta["seeds"][j]) for j in seed_order],
        level_list,
        axis.name,
        classes,
        test_ids,
        str(path),
    )


def read_predictions(
    path: str | Path,
    labels: pd.DataFrame,
    *,
    level_name: str = "sparsity",
    labels_name: str = "the labels",
) -> Predictions:
    """Read and check predictions in the interchange layout against ``labels``.

    Parameters
    ----------
    path : a long table (``.csv``, ``.csv.gz``, ``.parquet``) or an array (``.npy``, with
        its ``.json`` sidecar).
    labels : a table as :func:`read_labels_file` returns it (or ``labels.parquet``).
    level_name : the axis of the long table's ``level`` column (an array's sidecar names its own).
    labels_name : how messages name the labels (their file).

    Returns
    -------
    Predictions
        ``probs [S, K, N, C]`` in the labels' test order and class order.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() == ".npy":
        return _read_array(path, labels, labels_name)
    try:
        levels.axis(level_name)
    except ValueError as err:
        raise InterchangeError(f"level_name: {err}") from None
    return _read_long(path, labels, level_name, labels_name)


# =========================================================================================
# Writing the run
# =========================================================================================
def _same_labels(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    columns = ["image_id", "split", *artifacts.class_names(a)]
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    return all((a[c].astype(str).to_numpy() == b[c].astype(str).to_numpy()).all() for c in columns)


def import_predictions(
    run: str,
    predictions: str | Path,
    *,
    labels: str | Path | None = None,
    method: str = "imported",
    level_name: str = "sparsity",
    dataset: str = "imported",
) -> Path:
    """Import predictions of the interchange layout into ``prune/<method>/`` of ``run``.

    Parameters
    ----------
    run : the run to write (created if absent).
    predictions : the predictions file (:func:`read_predictions`).
    labels : the labels file (:func:`read_labels_file`). When the run already has a
        ``labels.parquet`` it may be omitted; when both exist they must be the same table.
    method : the store's name (``prune/<method>/``): lower case, digits, ``_``.
    level_name : the axis of a long table's levels.
    dataset : the data record's dataset name, for a run without one.

    Returns
    -------
    Path
        ``prune/<method>/probs.npy``.

    Every check runs before the first write; then the store, ``labels.parquet`` (when the run
    has none), the data record (likewise) and ``metrics.parquet`` are written, each atomically.
    """
    from . import evaluate

    paths.check_run_name(run)
    paths.check_method_name(method)
    rp = paths.run_paths(run)
    existing = artifacts.read_labels(run) if rp.labels.exists() else None
    if labels:
        table = read_labels_file(labels)
        labels_name = str(Path(labels).expanduser())
        if existing is not None and not _same_labels(table, existing):
            raise InterchangeError(
                f"run {run!r} already has {rp.labels}, and {labels_name} differs from it; import into a new "
                "run, or leave out the labels file to use the run's"
            )
    elif existing is not None:
        table, labels_name = existing, str(rp.labels)
    else:
        raise InterchangeError(
            f"run {run!r} has no labels.parquet: give the labels file (--labels)"
        )
    found = read_predictions(predictions, table, level_name=level_name, labels_name=labels_name)

    source = f"imported from {Path(predictions).expanduser().resolve()}"
    probs_path = artifacts.write_store(
        run,
        method,
        seeds=found.seeds,
        levels=found.levels,
        level_name=found.level_name,
        classes=found.classes,
        n_test=len(found.image_ids),
        blocks=iter(found.probs),
        origin=source,
    )
    work = rp.prune_work(method)
    for stale in list(work.glob("seed-*")) if work.is_dir() else []:
        stale.unlink()  # records of an earlier sweep no longer describe this store
    if existing is None:
        artifacts.write_labels(run, table)
    if "data" not in (artifacts.read_json(rp.run_json) if rp.run_json.exists() else {}):
        counts = table["split"].value_counts()
        config.record_data(
            run,
            {
                "dataset": dataset,
                "synthetic": False,
                "classes": found.classes,
                "source": "import",
                "labels_file": labels_name,
                "n_images": {s: int(counts.get(s, 0)) for s in SPLITS if counts.get(s, 0)},
            },
        )
    evaluate.write_method_metrics(run, method)
    return probs_path
