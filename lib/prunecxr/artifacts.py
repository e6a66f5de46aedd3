"""The run files: atomic writes, and one reader (and writer) per file of ``docs/artifacts.md``.

A leaf of the package: it imports only :mod:`prunecxr.paths`, :mod:`prunecxr.published` and
:mod:`prunecxr.levels` (themselves leaves), and no torch, so the analysis notebooks read a run without loading a
deep-learning stack.

Atomic writes. Every file goes to a temporary file in the destination folder first
(``.<name>.<random>.tmp``) and is then renamed over the destination (``os.replace`` is
atomic on POSIX and Windows): a file is either absent or complete, never half-written. A
killed process can leave such a temporary behind; :func:`remove_stale_temporaries` clears
them when the stage runs again.

Readers. Each run file has exactly one reader here; a reader checks what the contract
promises (the columns or keys) and, when the file is missing, names the notebook that writes
it.

What a stage read. Every reader notes the file it read (:func:`note_read`; a reader of
another module calls it too), so a figure can name its inputs: :func:`files_read` lists the
files read since the stage started (:func:`start_reading`), which the figure helper records
with their content hashes (:mod:`prunecxr.provenance`). The run record ``run.json`` is not
noted (every stage reads and rewrites it; the figure records the parameters instead), and an
image cache ``.npy`` is noted by its manifest (``.json``), which names what the images were
made from and whose hash is the cache file's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import levels as levels_
from . import paths, published

#: The name pattern of the temporary files of :func:`atomic_path`.
TEMPORARY_GLOB = ".*.tmp"

#: The first columns of ``labels.parquet``; every column after them is a class.
LABEL_META_COLUMNS = ("image_id", "patient_id", "split")
SPLITS = ("train", "val", "test")

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_mean_ap", "seconds")
META_KEYS = ("method", "seeds", "classes")
#: the columns of ``metrics.parquet``; ``sparsity`` is the level column of a sparsity store,
#: ``bits`` or ``channel_fraction`` that of the other axes (:func:`metrics_columns`)
METRICS_COLUMNS = ("seed", "sparsity", "class", "ap", "auroc", "n_pos")
#: how a store's models were recovered after compression (``recover`` in ``meta.json``)
RECOVERIES = ("none", "bn", "finetune")


def metrics_columns(level_name: str = "sparsity") -> tuple[str, ...]:
    """The columns of ``metrics.parquet`` for a store of levels ``level_name``: the level
    column is named by its axis (``sparsity``, ``bits``, ``channel_fraction``)."""
    levels_.axis(level_name)
    return tuple(level_name if c == "sparsity" else c for c in METRICS_COLUMNS)


# =========================================================================================
# Atomic writes
# =========================================================================================
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. The
    file gets the permissions a plain ``open(path, "w")`` would give (``mkstemp`` makes
    it owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = False) -> int:
    """Remove the temporary files that a killed write left in ``folder``; returns how many.

    Only names of :func:`atomic_path`'s pattern (``.<name>.<random>.tmp``) are touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = folder.rglob(TEMPORARY_GLOB) if recursive else folder.glob(TEMPORARY_GLOB)
    count = 0
    for tmp in found:
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            count += 1
    return count


# =========================================================================================
# What a stage read
# =========================================================================================
_read: dict[Path, None] = {}  # an ordered set: the files read since the stage started


def start_reading() -> None:
    """Forget the files noted so far: a stage starts (:func:`prunecxr.config.start_stage`)."""
    _read.clear()


def note_read(path: str | os.PathLike) -> None:
    """Note that the current stage read ``path`` (see :func:`files_read`)."""
    path = Path(path).resolve()
    if path.name == "run.json" or path.name.startswith("."):
        return
    if path.suffix == ".npy" and path.is_relative_to(paths.cache_root()):
        manifest = path.with_suffix(".json")
        path = manifest if manifest.exists() else path
    _read[path] = None


def files_read() -> list[Path]:
    """The files read since the stage started (:func:`start_reading`), first read first."""
    return [p for p in _read if p.exists()]


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
    return write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        note_read(path)
        return obj
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_parquet(path: str | os.PathLike, what: str = "") -> pd.DataFrame:
    """Read a parquet artifact; a missing one names the stage that writes it (``what``)."""
    path = Path(path)
    if not path.exists():
        hint = f" (written by {what})" if what else ""
        raise FileNotFoundError(f"{path} does not exist{hint}; run that stage first")
    table = pd.read_parquet(path)
    note_read(path)
    return table


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return Path(path)


def load_npy(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file without ever unpickling objects."""
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    note_read(path)
    return array


def _require(path: Path, have: Iterable[str], need: Iterable[str], what: str = "columns") -> None:
    have = set(have)
    missing = [c for c in need if c not in have]
    if missing:
        raise ValueError(f"{path} lacks the {what} {missing}")


# =========================================================================================
# run.json (the run record: prunecxr.config writes it)
# =========================================================================================
def read_run(run: str) -> dict[str, Any]:
    """The run record ``runs/<run>/run.json``."""
    path = paths.run_paths(run).run_json
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebook 01_data for run {run!r} first"
        )
    return read_json(path)


# =========================================================================================
# labels.parquet (notebook 01)
# =========================================================================================
def class_names(labels: pd.DataFrame) -> list[str]:
    """The class columns of a labels table: every column after ``image_id``, ``patient_id``,
    ``split``, in file order."""
    return [c for c in labels.columns if c not in LABEL_META_COLUMNS]


def write_labels(run: str, table: pd.DataFrame) -> Path:
    return write_parquet(paths.run_paths(run).labels, table)


def read_labels(run: str, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """``labels.parquet``: one row per image, checked to hold ``image_id``, ``patient_id``,
    ``split`` and every class in ``classes``."""
    path = paths.run_paths(run).labels
    labels = read_parquet(path, what="notebook 01_data")
    _require(path, labels.columns, [*LABEL_META_COLUMNS, *(classes or [])])
    return labels


#: the columns of ``locations.parquet`` (where the phantom drew each finding)
LOCATIONS_COLUMNS = ("image_id", "split", "class", "x0", "y0", "x1", "y1", "pixels", "max_change")


def write_locations(run: str, table: pd.DataFrame) -> Path:
    _require(paths.run_paths(run).locations, table.columns, LOCATIONS_COLUMNS)
    return write_parquet(paths.run_paths(run).locations, table[list(LOCATIONS_COLUMNS)])


def read_locations(run: str) -> pd.DataFrame:
    """``locations.parquet``: one row per positive (image, finding) of a phantom run, the box
    ``x0 <= x < x1``, ``y0 <= y < y1`` (pixels at the run's resolution) of the finding's drawn
    signature; ``pixels`` 0 (box -1) where it changed no pixel visibly."""
    path = paths.run_paths(run).locations
    table = read_parquet(path, what="notebook 01_data, for the phantom only")
    _require(path, table.columns, LOCATIONS_COLUMNS)
    return table


def read_test_labels(run: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Test labels of ``run``: ``(y [N, C] uint8, classes, image_ids)``.

    Rows are those with ``split == "test"`` in file order (the row order of ``probs.npy``).
    """
    path = paths.run_paths(run).labels
    labels = read_labels(run)
    classes = class_names(labels)
    test = labels[labels["split"] == "test"]
    if test.empty:
        raise ValueError(f"{path} has no row with split == 'test'")
    y = test[classes].to_numpy()
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: class column {classes[c]!r} of image {test['image_id'].iloc[r]!r} holds "
            f"{y[r, c]!r}; labels must be 0 or 1"
        )
    return y.astype(np.uint8), classes, test["image_id"].astype(str).tolist()


# =========================================================================================
# models/ (notebook 02)
# =========================================================================================
def seed_dirs(run: str) -> list[int]:
    """The seeds that have a ``models/seed-<s>/`` folder, sorted."""
    models = paths.run_paths(run).models
    if not models.is_dir():
        return []
    out = []
    for d in models.iterdir():
        m = re.fullmatch(r"seed-(\d+)", d.name)
        if m and d.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def trained_seeds(run: str) -> list[int]:
    """The seeds of ``run`` whose final checkpoint (``model.pt``) exists, sorted."""
    rp = paths.run_paths(run)
    return [s for s in seed_dirs(run) if rp.checkpoint(s).exists()]


def read_train_record(run: str) -> dict[str, Any]:
    """``models/train.json``: the training configuration, classes, image size and how the
    population was executed."""
    path = paths.run_paths(run).train_config
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: train run {run!r} with notebook 02_train first"
        )
    record = read_json(path)
    _require(path, record, ("config", "num_classes", "image_shape"), what="keys")
    return record


def write_history(path: str | os.PathLike, rows: Sequence[dict[str, float]]) -> Path:
    return write_csv(path, pd.DataFrame(list(rows), columns=list(HISTORY_COLUMNS)))


def read_history(run: str, seed: int) -> pd.DataFrame:
    """``models/seed-<seed>/history.csv``: one row per epoch."""
    path = paths.run_paths(run).history(seed)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: seed {seed} of run {run!r} has not trained an epoch"
        )
    df = pd.read_csv(path)
    note_read(path)
    _require(path, df.columns, HISTORY_COLUMNS)
    return df


# =========================================================================================
# prune/<method>/ (notebook 03)
# =========================================================================================
def same_levels(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two lists of levels name the same levels (to :data:`published.SPARSITY_ATOL`)."""
    return len(a) == len(b) and all(
        abs(float(x) - float(y)) <= published.SPARSITY_ATOL for x, y in zip(a, b)
    )


#: the sparsity stores' name of :func:`same_levels`
same_sparsities = same_levels


def method_order(methods: Iterable[str]) -> list[str]:
    """Methods in figure order: the paper's (``global_l1``) first, then by name."""
    return sorted(dict.fromkeys(methods), key=lambda m: (m != published.PAPER_METHOD, m))


def methods_present(run: str) -> list[str]:
    """The methods with a prediction store (a ``prune/<method>/meta.json``), in figure order."""
    root = paths.run_paths(run).root / "prune"
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} does not exist: run notebook 03_prune for run {run!r} first"
        )
    found = [p.name for p in root.iterdir() if (p / "meta.json").is_file()]
    if not found:
        raise FileNotFoundError(
            f"no method under {root} has a meta.json: run notebook 03_prune first"
        )
    return method_order(found)


def read_meta(run: str, method: str) -> dict[str, Any]:
    """``prune/<method>/meta.json``: the axes of ``probs.npy``.

    Whatever the method, the result holds ``level_name`` (``sparsity``, ``bits`` or
    ``channel_fraction``), ``level_unit``, ``levels`` (axis 1, in compression order, the dense
    level first) and ``recover``; a sparsity store also holds ``sparsities`` (= ``levels``).
    A store written before levels were recorded (``sparsities`` only) is a sparsity store
    without recovery.
    """
    path = paths.run_paths(run).prune_meta(method)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebook 03_prune (sweep or import) or 08_compression for "
            f"method {method!r} of run {run!r} first"
        )
    meta = read_json(path)
    _require(path, meta, META_KEYS, what="keys")
    if "levels" not in meta:
        if "sparsities" not in meta:
            raise ValueError(f"{path} lacks the keys ['levels'] (or ['sparsities'])")
        meta["levels"] = list(meta["sparsities"])
    meta.setdefault("level_name", "sparsity")
    meta.setdefault("recover", "none")
    try:
        axis = levels_.axis(meta["level_name"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    meta.setdefault("level_unit", axis.unit)
    if axis.name == "sparsity":
        meta.setdefault("sparsities", list(meta["levels"]))
    return meta


def read_store(run: str, method: str, *, mmap: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored probabilities of ``method`` and their axes.

    Returns
    -------
    probs : np.ndarray, float32 (or float16), shape ``[S, K, N, C]``
        Sigmoid probabilities per seed, sparsity, test image (rows of ``labels.parquet`` with
        ``split == "test"``, in file order) and class. Memory-mapped read-only by default.
    meta : dict
        :func:`read_meta`: ``method``, ``seeds`` (axis S), ``levels`` (axis K, named by
        ``level_name``) and ``classes`` (axis C).
    """
    rp = paths.run_paths(run)
    meta = read_meta(run, method)
    probs_path = rp.probs(method)
    if not probs_path.exists():
        raise FileNotFoundError(
            f"{probs_path} does not exist: run notebook 03_prune for method {method!r} of run {run!r} first"
        )
    probs = load_npy(probs_path, mmap=mmap)
    expected = (len(meta["seeds"]), len(meta["levels"]), None, len(meta["classes"]))
    if probs.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, probs.shape)):
        raise ValueError(
            f"{probs_path} has shape {probs.shape}, but {rp.prune_meta(method)} describes "
            f"[{expected[0]} seeds, {expected[1]} levels ({meta['level_name']}), N, {expected[3]} classes]"
        )
    return probs, meta


def write_store(
    run: str,
    method: str,
    *,
    seeds: Sequence[int],
    classes: Sequence[str],
    n_test: int,
    blocks: Iterable[np.ndarray],
    sparsities: Sequence[float] | None = None,
    levels: Sequence[float] | None = None,
    level_name: str = "sparsity",
    recover: str = "none",
    origin: str | None = None,
) -> Path:
    """Write ``probs.npy`` (one ``[K, N, C]`` block per seed, in order) and ``meta.json``.

    The K levels are ``levels`` of axis ``level_name`` (``sparsities`` is the same for a
    sparsity store, the paper's name, kept in ``meta.json``); ``recover`` says how the
    compressed models were recovered (``none``, ``bn``, ``finetune``); ``origin``, when
    given, where the method or the probabilities came from (a method of the user's code, an
    imported file), kept as ``meta.json``'s ``origin``.

    The array is filled in a temporary file that replaces ``probs.npy`` only when complete;
    the old ``meta.json`` is removed just before and the new one written just after, so a
    reader never finds a ``meta.json`` that describes another array.
    """
    rp = paths.run_paths(run)
    axis = levels_.axis(level_name)
    if levels is None and sparsities is None:
        raise ValueError("write_store needs the levels (or, for a sparsity store, the sparsities)")
    if levels is not None and sparsities is not None and not same_levels(levels, sparsities):
        raise ValueError(
            f"write_store got levels {list(levels)} and other sparsities {list(sparsities)}"
        )
    levels = sparsities if levels is None else levels
    if sparsities is not None and axis.name != "sparsity":
        raise ValueError(f"sparsities given for a store of {level_name} levels")
    if recover not in RECOVERIES:
        raise ValueError(f"unknown recover {recover!r}; choose one of {list(RECOVERIES)}")
    levels = axis.check_levels(levels)
    shape = (len(seeds), len(levels), int(n_test), len(classes))
    with atomic_path(rp.probs(method)) as tmp:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        count = 0
        for i, block in enumerate(blocks):
            if block is None or i >= shape[0] or tuple(block.shape) != shape[1:]:
                got = None if block is None else tuple(block.shape)
                raise ValueError(f"block {i} of {method!r} has shape {got}, expected {shape[1:]}")
            store[i] = block
            count += 1
        if count != shape[0]:
            raise ValueError(f"got {count} seed blocks for {shape[0]} seeds")
        store.flush()
        del store
        rp.prune_meta(method).unlink(missing_ok=True)
    meta: dict[str, Any] = {"method": method, "seeds": [int(s) for s in seeds]}
    if axis.name == "sparsity":
        meta["sparsities"] = [float(s) for s in levels]
    meta.update(
        {
            "level_name": axis.name,
            "level_unit": axis.unit,
            "levels": [float(s) for s in levels],
            "recover": recover,
            "classes": [str(c) for c in classes],
        }
    )
    if origin is not None:
        meta["origin"] = str(origin)
    write_json(rp.prune_meta(method), meta)
    return rp.probs(method)


def write_metrics(run: str, method: str, metrics: pd.DataFrame) -> Path:
    return write_parquet(paths.run_paths(run).metrics(method), metrics)


def read_metrics(run: str, method: str) -> pd.DataFrame:
    """``prune/<method>/metrics.parquet``: one row per (seed, level, class); the level column
    is named by the store's axis (``sparsity``, ``bits``, ``channel_fraction``)."""
    path = paths.run_paths(run).metrics(method)
    metrics = read_parquet(path, what="notebook 03_prune or 08_compression")
    try:
        axis = levels_.axis_of(metrics.columns)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    _require(path, metrics.columns, metrics_columns(axis.name))
    return metrics


# =========================================================================================
# analysis/<method>/ (notebooks 04-06)
# =========================================================================================
def _analysis_reader(file: str, stage: str, columns: Sequence[str], *, level: bool = False):
    def read(run: str, method: str) -> pd.DataFrame:
        path = getattr(paths.run_paths(run), file)(method)
        table = read_parquet(path, what=f"notebook {stage}")
        _require(path, table.columns, columns)
        if level:
            try:
                levels_.axis_of(table.columns)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        return table

    read.__name__ = f"read_{file}"
    read.__doc__ = f"``analysis/<method>/{file}.parquet`` (notebook {stage})."
    return read


#: besides a level column (``sparsity``, ``bits`` or ``channel_fraction``)
FORGETTABILITY_COLUMNS = ("class", "median_rel_ap_change")
#: besides ``rel_change_at_095`` (sparsity) or ``rel_change_at_extreme`` (the other axes)
CLASS_SUMMARY_COLUMNS = ("class", "train_count", "test_count", "first_drop")
PAIRS_COLUMNS = ("class_a", "class_b", "fcd", "abs_log_freq_diff", "iou", "iou_quarter")
PIES_COLUMNS = ("image_id", "spearman", "is_pie")

read_forgettability = _analysis_reader(
    "forgettability", "04_class_forgetting", FORGETTABILITY_COLUMNS, level=True
)
read_class_summary = _analysis_reader("class_summary", "04_class_forgetting", CLASS_SUMMARY_COLUMNS)
read_pairs = _analysis_reader("pairs", "05_cooccurrence", PAIRS_COLUMNS)
read_pies = _analysis_reader("pies", "06_pies", PIES_COLUMNS)


#: ``analysis/<method>/intervals_<stage>.parquet`` (:mod:`prunecxr.analysis.uncertainty`)
INTERVAL_COLUMNS = ("quantity", "subset", "estimate", "resampling", "interval", "ci_low", "ci_high")
PAIRED_TESTS_COLUMNS = (
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "paired_p",
    "signflip_p",
    "welch_p",
)
DYADIC_COLUMNS = ("quantity", "subset", "estimate", "inference", "p_value")

read_paired_tests = _analysis_reader("paired_tests", "03_prune", PAIRED_TESTS_COLUMNS, level=True)
read_first_drop_stability = _analysis_reader(
    "first_drop_stability", "03_prune", ("test", "correction", "share"), level=True
)
read_dyadic_tests = _analysis_reader("dyadic_tests", "05_cooccurrence", DYADIC_COLUMNS)
_INTERVAL_NOTEBOOK = {
    "overall": "03_prune",
    "forgetting": "04_class_forgetting",
    "cooccurrence": "05_cooccurrence",
    "pies": "06_pies",
}


def read_intervals(run: str, method: str, stage: str) -> pd.DataFrame:
    """``analysis/<method>/intervals_<stage>.parquet``: bootstrap intervals of one analysis."""
    path = paths.run_paths(run).intervals(method, stage)
    table = read_parquet(path, what=f"notebook {_INTERVAL_NOTEBOOK[stage]}")
    _require(path, table.columns, INTERVAL_COLUMNS)
    return table


def write_intervals(run: str, method: str, stage: str, table: pd.DataFrame) -> Path:
    """Write ``analysis/<method>/intervals_<stage>.parquet``."""
    return write_parquet(paths.run_paths(run).intervals(method, stage), table)


def write_analysis(run: str, method: str, file: str, table: pd.DataFrame) -> Path:
    """Write ``analysis/<method>/<file>.parquet`` (``file``: forgettability, class_summary,
    pairs, pies, paired_tests, first_drop_stability or dyadic_tests)."""
    if file not in (
        "forgettability",
        "class_summary",
        "pairs",
        "pies",
        "paired_tests",
        "first_drop_stability",
        "dyadic_tests",
    ):
        raise ValueError(f"unknown analysis file {file!r}")
    return write_parquet(getattr(paths.run_paths(run), file)(method), table)


# =========================================================================================
# compression/deployment.parquet (notebook 08)
# =========================================================================================
DEPLOYMENT_COLUMNS = (
    "method",
    "level_name",
    "level",
    "parameters",
    "nonzero_parameters",
    "size_bytes",
    "macs",
    "latency_b1_ms",
    "latency_b64_ms",
    "mean_ap",
    "tail_ap",
)


def write_deployment(run: str, table: pd.DataFrame) -> Path:
    return write_parquet(paths.run_paths(run).deployment, table)


def read_deployment(run: str) -> pd.DataFrame:
    """``compression/deployment.parquet``: one row per method and level (notebook 08)."""
    path = paths.run_paths(run).deployment
    table = read_parquet(path, what="notebook 08_compression")
    _require(path, table.columns, DEPLOYMENT_COLUMNS)
    return table


# =========================================================================================
# reports/<run>/timings.json (the runner)
# =========================================================================================
def read_timings(run: str) -> dict[str, Any]:
    """``reports/<run>/timings.json``: notebook → status, seconds, start and end times."""
    path = paths.run_paths(run).timings
    return read_json(path) if path.exists() else {}
