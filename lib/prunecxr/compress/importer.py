"""Import the authors' released test predictions into the run's probability store.

Holste et al. published, per dataset, the test-set predictions of their 30 ResNet-50s at
each of 20 sparsities of global L1 pruning (``nih-cxr-lt_L1-prune_preds/`` and
``mimic-cxr-lt_L1-prune_preds/`` in their Box folder, see the README). Each file is a
pickled pandas DataFrame::

    {dataset}_resnet50_seed-{s}_prune-{r}.pkl

with ``r`` printed as a Python float (``0.05``, ``0.1``, …) and ``0`` for the dense model;
one column of sigmoid probabilities per class, plus ``label``: the ``|``-joined names of
the image's positive classes. Rows follow the test label file.

:func:`import_predictions` writes them into ``prune/global_l1/{probs.npy,meta.json}``
(``docs/artifacts.md``), so that every analysis notebook runs on the published predictions
without training. A run without ``labels.parquet`` (no notebook 01) gets one from the files'
``label`` column, and a data record (:func:`prunecxr.config.record_data`) saying that its
data is the release's test split. Unpickling executes code chosen by whoever wrote the file, so nothing is
unpickled unless the caller opts in with ``allow_pickle=True``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts, config, paths
from ..published import PAPER_METHOD, SPARSITY_ATOL
from .methods import check_method, check_sparsities, check_sparsity

#: a released prediction file; ``dataset`` is e.g. ``nih-cxr-lt``
RELEASE_FILE = re.compile(
    r"^(?P<dataset>[A-Za-z0-9._-]+?)_resnet50_seed-(?P<seed>\d+)_prune-(?P<sparsity>\d+(?:\.\d+)?)\.pkl$"
)
LABEL_COLUMN = "label"
LABEL_SEPARATOR = "|"


class PickleOptInRequired(PermissionError):
    """Reading the release would unpickle files, and the caller did not allow it."""


def release_file_name(dataset: str, seed: int, sparsity: float) -> str:
    """The authors' file name: ``{dataset}_resnet50_seed-{seed}_prune-{r}.pkl``.

    ``r`` is ``0`` for the dense model, else the sparsity printed as a Python float.
    """
    sparsity = check_sparsity(sparsity)
    token = "0" if sparsity == 0 else str(float(sparsity))
    return f"{dataset}_resnet50_seed-{int(seed)}_prune-{token}.pkl"


def find_release(directory: str | Path, *, dataset: str | None = None) -> pd.DataFrame:
    """The released prediction files in ``directory``: columns ``dataset``, ``seed``,
    ``sparsity``, ``path``, sorted by seed and sparsity.

    ``dataset`` selects a prefix; when None the folder must hold exactly one. Other files
    (such as the authors' ``..._val.pkl``) are ignored.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"import_dir {str(directory)!r} is not a folder")
    rows = []
    for path in sorted(directory.iterdir()):
        match = RELEASE_FILE.match(path.name)
        if match:
            rows.append(
                {
                    "dataset": match["dataset"],
                    "seed": int(match["seed"]),
                    "sparsity": float(match["sparsity"]),
                    "path": path,
                }
            )
    files = pd.DataFrame(rows, columns=["dataset", "seed", "sparsity", "path"])
    if files.empty:
        raise FileNotFoundError(
            f"{directory} holds no file named like {release_file_name('<dataset>', 0, 0.05)!r}"
        )
    found = sorted(files["dataset"].unique())
    if dataset is None:
        if len(found) > 1:
            raise ValueError(
                f"{directory} holds predictions of several datasets {found}; pass dataset="
            )
        dataset = found[0]
    elif dataset not in found:
        raise FileNotFoundError(
            f"{directory} holds no predictions of dataset {dataset!r} (found {found})"
        )
    files = files[files["dataset"] == dataset]
    return files.sort_values(["seed", "sparsity"], ignore_index=True)


def _select(
    files: pd.DataFrame, seeds, sparsities, directory: Path
) -> tuple[list[int], list[float], dict]:
    """The grid to import and its file per (seed, sparsity); refuses an incomplete grid."""
    seeds = sorted(files["seed"].unique()) if seeds is None else [int(s) for s in seeds]
    if sparsities is None:
        sparsities = sorted(files["sparsity"].unique())
    sparsities = check_sparsities(sparsities)
    lookup: dict[tuple[int, float], Path] = {}
    for row in files.itertuples():
        for s in sparsities:
            if abs(row.sparsity - s) <= SPARSITY_ATOL:
                lookup[(row.seed, s)] = row.path
    dataset = files["dataset"].iloc[0]
    missing = [
        release_file_name(dataset, a, b) for a in seeds for b in sparsities if (a, b) not in lookup
    ]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{directory} lacks {len(missing)} of the {len(seeds) * len(sparsities)} files for "
            f"seeds {seeds} × sparsities {sparsities}: {missing[:5]}{more}"
        )
    return seeds, sparsities, lookup


def labels_from_strings(
    labels: Sequence[str], classes: Sequence[str], *, source: str
) -> np.ndarray:
    """``|``-joined positive class names → uint8 ``[N, C]`` (an empty string: no positive)."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype=np.uint8)
    for row, text in enumerate(labels):
        if not isinstance(text, str):
            raise ValueError(
                f"{source}: row {row} of column {LABEL_COLUMN!r} is {text!r}, not a string"
            )
        for name in filter(None, text.split(LABEL_SEPARATOR)):
            if name not in index:
                raise ValueError(
                    f"{source}: row {row} names the class {name!r}, which is not in {list(classes)}"
                )
            y[row, index[name]] = 1
    return y


def _read_frame(path: Path, classes: Sequence[str] | None) -> pd.DataFrame:
    frame = pd.read_pickle(path)  # the caller opted in (allow_pickle=True)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{path} holds a {type(frame).__name__}, not a pandas DataFrame")
    if LABEL_COLUMN not in frame.columns:
        raise ValueError(f"{path} has no {LABEL_COLUMN!r} column (columns: {list(frame.columns)})")
    if classes is not None:
        have = [c for c in frame.columns if c != LABEL_COLUMN]
        missing = [c for c in classes if c not in have]
        extra = [c for c in have if c not in classes]
        if missing or extra:
            raise ValueError(
                f"{path}: class columns differ from the run's classes; missing {missing}, "
                f"unexpected {extra}"
            )
    return frame


def _probabilities(frame: pd.DataFrame, classes: Sequence[str], path: Path) -> np.ndarray:
    values = frame[list(classes)].to_numpy(dtype=np.float32)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: row {r}, class {classes[c]!r} holds {values[r, c]!r}, not a probability"
        )
    return values


def _check_rows(frame: pd.DataFrame, path: Path, reference: pd.Series, reference_name: str) -> None:
    """``frame`` has the rows of the first file read (``reference``: its label column)."""
    if len(frame) != len(reference):
        raise ValueError(f"{path} has {len(frame)} rows; the run's test split has {len(reference)}")
    labels = frame[LABEL_COLUMN].reset_index(drop=True)
    if not labels.equals(reference):
        row = int(np.flatnonzero(labels.to_numpy() != reference.to_numpy())[0])
        raise ValueError(
            f"{path}: row {row} is labelled {labels.iloc[row]!r}, but {reference_name} labels it "
            f"{reference.iloc[row]!r}; files must share one row order"
        )


def _check_labels(frame: pd.DataFrame, path: Path, y: np.ndarray, classes: Sequence[str]) -> None:
    """The ``label`` column of ``frame`` equals the run's test labels ``y``, row for row."""
    if len(frame) != len(y):
        raise ValueError(f"{path} has {len(frame)} rows; the run's test split has {len(y)}")
    got = labels_from_strings(frame[LABEL_COLUMN].tolist(), classes, source=str(path))
    if not np.array_equal(got, y):
        row = int(np.flatnonzero((got != y).any(axis=1))[0])
        raise ValueError(
            f"{path}: row {row} is labelled {frame[LABEL_COLUMN].iloc[row]!r}, but test row "
            f"{row} of labels.parquet has {[c for c, v in zip(classes, y[row]) if v]}; "
            "the release's rows must follow the run's test split"
        )


def _write_test_labels(
    run: str, y: np.ndarray, classes: Sequence[str], dataset: str, directory: Path
) -> None:
    """``labels.parquet`` and the data record of a run that only has the released test predictions.

    The release carries neither image nor patient ids: rows are named ``<dataset>-test-<i>``
    in release order, and ``patient_id`` is empty. The record (``run.json["data"]``) says
    the data is the release's real test split (``synthetic`` false, ``source`` "import"), so
    that later stages treat the run as patient data (:func:`prunecxr.config.is_synthetic`).
    """
    n = len(y)
    frame = pd.DataFrame(
        {
            "image_id": [f"{dataset}-test-{i:06d}" for i in range(n)],
            "patient_id": [""] * n,
            "split": ["test"] * n,
        }
    )
    for j, name in enumerate(classes):
        frame[name] = y[:, j].astype(np.int8)
    artifacts.write_labels(run, frame)
    config.record_data(
        run,
        {
            "dataset": dataset,
            "synthetic": False,
            "classes": [str(c) for c in classes],
            "source": "import",
            "import_dir": str(directory),
            "n_images": {"test": int(n)},
        },
    )


def import_predictions(
    run: str,
    directory: str | Path,
    *,
    allow_pickle: bool = False,
    method: str = PAPER_METHOD,
    dataset: str | None = None,
    seeds: Sequence[int] | None = None,
    sparsities: Sequence[float] | None = None,
    progress: bool = True,
) -> Path:
    """Import the authors' pickled predictions into ``prune/<method>/probs.npy``.

    Parameters
    ----------
    run : str
        The run to write into. If it has a ``labels.parquet``, every file must hold its
        classes and, row for row, its test labels (the ``label`` column); otherwise one is
        written from the first file's ``label`` column (test split only).
    directory : path
        A folder of ``{dataset}_resnet50_seed-{s}_prune-{r}.pkl`` files.
    allow_pickle : bool
        Must be True: the files are pickles, and unpickling runs code (see
        :class:`PickleOptInRequired`).
    method : str
        The store to write; the release is of global L1 pruning (``global_l1``).
    dataset : str, optional
        File name prefix (``nih-cxr-lt``, ``mimic-cxr-lt``); needed only if several are present.
    seeds, sparsities : lists, optional
        The grid to import (default: every seed and sparsity found); every file of the grid
        must exist. The sparsities must include 0 (the dense models).

    Returns
    -------
    Path
        ``prune/<method>/probs.npy``; shape ``[S, K, N, C]`` float32, classes in the run's order.
    """
    from tqdm import tqdm

    directory = Path(directory).expanduser()
    files = find_release(directory, dataset=dataset)
    if allow_pickle is not True:
        raise PickleOptInRequired(
            f"{directory} holds the authors' predictions as Python pickles ({len(files)} .pkl "
            "files). Unpickling executes whatever code a file names, so a tampered or corrupted "
            "file could run commands on this machine. Import them only from a source you "
            "trust (the authors' release, downloaded by you), by passing allow_pickle=True "
            "(in notebook 03: allow_pickle = True)."
        )
    check_method(method)
    dataset = files["dataset"].iloc[0]
    seeds, sparsities, lookup = _select(files, seeds, sparsities, directory)
    if sparsities[0] != 0.0:
        raise ValueError(
            "sparsities must include 0 (the dense models, baseline of every comparison)"
        )

    rp = paths.run_paths(run)
    first_path = lookup[(seeds[0], sparsities[0])]
    if rp.labels.exists():
        y, classes, _ = artifacts.read_test_labels(run)
        first = _read_frame(first_path, classes)
        write_labels = False
    else:
        first = _read_frame(first_path, None)
        classes = [c for c in first.columns if c != LABEL_COLUMN]
        y = labels_from_strings(first[LABEL_COLUMN].tolist(), classes, source=str(first_path))
        write_labels = True
    n_test = len(y)
    reference = first[LABEL_COLUMN].reset_index(drop=True)
    if not write_labels:
        _check_labels(first, first_path, y, classes)
    bar = tqdm(
        total=len(seeds) * len(sparsities),
        desc=f"import {dataset}",
        unit="file",
        disable=not progress,
        mininterval=5,
    )

    def blocks():
        for seed in seeds:
            block = np.empty((len(sparsities), n_test, len(classes)), dtype=np.float32)
            for j, sparsity in enumerate(sparsities):
                path = lookup[(seed, sparsity)]
                if path == first_path:
                    frame = first  # read and checked above
                else:
                    frame = _read_frame(path, classes)
                    _check_rows(frame, path, reference, first_path.name)
                block[j] = _probabilities(frame, classes, path)
                bar.update(1)
            yield block

    probs_path = artifacts.write_store(
        run,
        method,
        seeds=seeds,
        sparsities=sparsities,
        classes=classes,
        n_test=n_test,
        blocks=blocks(),
    )
    bar.close()
    work = rp.prune_work(method)
    for stale in list(work.glob("seed-*")) if work.is_dir() else []:
        stale.unlink()  # records of a sweep no longer describe this store
    if write_labels:
        _write_test_labels(run, y, classes, dataset, directory)
    return probs_path


def check_import_methods(
    methods: Sequence[str], *, import_dir: str, predictions: str = ""
) -> list[str]:
    """The stores notebook 03 writes: the names of ``methods`` (a ``"module:function"``
    method's own name, :func:`prunecxr.compress.methods.store_name`), checked against the source.

    The release holds global L1 predictions only, so with ``import_dir`` set the methods must
    be ``["global_l1"]``; predictions in the interchange layout (``predictions``) fill one
    store, named by the one method; the two sources exclude each other.
    """
    from .. import paths
    from .methods import store_name

    if import_dir and predictions:
        raise ValueError(
            f"import_dir ({import_dir!r}) and predictions ({predictions!r}) are both set; import one source at a time"
        )
    if predictions:
        if len(methods) != 1:
            raise ValueError(
                f"predictions is set, and they fill one store, named by methods; methods is {list(methods)}: "
                "set methods = ['<a name for your method>']"
            )
        return [paths.check_method_name(methods[0])]
    others = [m for m in methods if m != PAPER_METHOD]
    if import_dir and others:
        raise ValueError(
            f"import_dir is set, and the authors' release holds {PAPER_METHOD!r} predictions "
            f"only; methods {others} cannot be imported: set methods = [{PAPER_METHOD!r}]"
        )
    return [store_name(m) for m in methods]
