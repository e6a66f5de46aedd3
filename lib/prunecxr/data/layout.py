"""Checking a dataset before notebook 01 runs: ``python -m prunecxr check-data``.

:func:`check_layout` finds everything notebook 01 (:func:`prunecxr.data.prepare_run`) would
refuse about the data, with the same checks and the same messages: the data root and the
dataset folder, the label files (columns, 0/1 values, image paths, duplicates,
patient-disjoint splits, a split without images), that every image exists, and that every
image can be read (PNGs are verified, JPEGs decoded at 1/8 scale: see
:func:`prunecxr.data.images.check_image`).
"""

from __future__ import annotations

import os
import warnings

from .. import artifacts, paths
from . import images, tables
from .datasets import PhantomDataset, create_dataset
from .specs import dataset_spec

#: how many culprits a problem names before "..."
SHOWN = 5


def check_layout(dataset: str, data_root: str = "", **options) -> list[str]:
    """Problems with a dataset's files (empty when notebook 01 would accept them).

    ``options`` are those of :func:`prunecxr.data.create_dataset` (``uncertain``,
    ``split_seed`` and the ``csv`` options). A class without a positive image in a split is
    no problem; it warns (:class:`~prunecxr.data.tables.EmptyClassWarning`), as in notebook 01.
    Raises ValueError only for an unknown dataset name or option.
    """
    ds = create_dataset(dataset, data_root=data_root, **options)
    if isinstance(ds, PhantomDataset):
        return ds.wheel_problems()
    try:
        paths.data_root(ds.data_root)
    except FileNotFoundError as err:
        return [str(err)]
    problems = [f"label file {p} is missing" for p in ds.label_paths if not p.is_file()]
    if ds.spec.image_root and not ds.image_dir.is_dir():
        problems.append(f"image folder {ds.image_dir} is missing")
    if problems:
        return problems
    try:
        table = ds.table()
    except (ValueError, FileNotFoundError) as err:
        return [str(err)]
    tables.warn_empty_classes(table, artifacts.class_names(table))
    missing = ds.missing_images(table)
    if missing:
        shown = ", ".join(str(ds.image_dir / r) for r in missing[:SHOWN])
        problems.append(f"{len(missing)} of {len(table)} images are missing, e.g. {shown}")
    gone = set(missing)
    present = tuple(r for r in table["image_id"].astype(str) if r not in gone)
    unreadable = images.FileImages(ds.image_dir, present).unreadable()
    if unreadable:
        shown = "; ".join(why for _, why in unreadable[:SHOWN])
        problems.append(f"{len(unreadable)} of {len(table)} images cannot be read, e.g. {shown}")
    return problems


def format_layout_report(
    dataset: str, data_root: str = "", problems: list[str] | None = None, **options
) -> str:
    """A human-readable verdict of :func:`check_layout` (run it when ``problems`` is None)."""
    if problems is None:
        problems = check_layout(dataset, data_root, **options)
    if dataset_spec(dataset).synthetic:
        where = "(embedded: the torchxrayvision wheel's label table, rendered images)"
    else:
        where = (
            data_root or os.environ.get(paths.DATA_ENV, "") or "(data_root and PRUNECXR_DATA unset)"
        )
    if not problems:
        return f"OK: dataset {dataset!r} at {where} is complete."
    lines = [f"Dataset {dataset!r} at {where}: {len(problems)} problem(s):"]
    lines += [f"  - {p}" for p in problems]
    lines.append("See data_access.md for how to obtain the data and where to put it.")
    return "\n".join(lines)


def check_with_warnings(
    dataset: str, data_root: str = "", **options
) -> tuple[list[str], list[str]]:
    """:func:`check_layout`'s problems and the warnings notebook 01 would show, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", tables.EmptyClassWarning)
        problems = check_layout(dataset, data_root, **options)
    return problems, [
        str(w.message) for w in caught if issubclass(w.category, tables.EmptyClassWarning)
    ]
