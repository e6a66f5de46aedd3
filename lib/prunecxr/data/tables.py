"""Reading and validating label tables (notebook 01).

Every check names the culprit: the label file, its line (the header is line 1), the image,
the column and the value. The checks are the same for the registered datasets' label files
and a user's ``csv`` table; ``python -m prunecxr check-data`` runs them too
(:func:`prunecxr.data.check_layout`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import LABEL_META_COLUMNS, SPLITS, note_read
from .specs import (
    IMAGE_COLUMN_CANDIDATES,
    PATIENT_COLUMN_CANDIDATES,
    SPLIT_COLUMN_CANDIDATES,
    check_uncertain,
)

#: values a class column may hold (as numbers): 0/1, and -1 (uncertain) under a policy
LABEL_VALUES = (0, 1, -1)
#: with classes inferred, a column is a class when at least this share of its non-blank
#: values are in :data:`LABEL_VALUES`; any other value in it is then an error
CLASS_COLUMN_SHARE = 0.5


class EmptyClassWarning(UserWarning):
    """A class has no positive image in a split: its AP there is undefined (NaN)."""


def csv_line(pos: int) -> str:
    """The CSV line of data row ``pos`` (0-based; the header is line 1)."""
    return f"line {pos + 2}"


def read_label_file(path: Path, what: str = "label file") -> pd.DataFrame:
    """A label CSV with every column as strings and blanks as NaN (nothing converted)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist (see data_access.md)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not a readable CSV table: {err}") from None
    note_read(path)  # a figure of the stage names the dataset's label file as an input
    return table


def require_columns(df: pd.DataFrame, path: Path, columns: Sequence[str], role: str) -> None:
    """Refuse a label file that lacks one of ``columns`` (``role`` names what they hold)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"label file {path} is missing the {role} column(s) {missing}; "
            f"it has {list(df.columns)}"
        )


def labels_to_int8(
    df: pd.DataFrame,
    classes: Sequence[str],
    *,
    path: Path,
    uncertain: str = "error",
    image_column: str | None = None,
    note: str = "",
) -> np.ndarray:
    """The class columns of ``df`` (strings as read) as int8 0/1 ``[N, C]``.

    Parameters
    ----------
    df : the label file as read (all columns strings, blanks NaN).
    classes : the class columns, in canonical order.
    path : the label file, named in errors.
    uncertain : policy for blank and ``-1`` labels, one of
        :data:`~prunecxr.data.specs.UNCERTAIN_POLICIES`.
    image_column : named in errors to say which image a bad row is.
    note : appended to the message of a value other than 0/1 (e.g. why the column was
        taken as a class).

    Raises
    ------
    ValueError naming the file, line, image, column and value of the first bad value.
    """
    check_uncertain(uncertain)
    raw = df[list(classes)]
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    blank = raw.isna().to_numpy()
    ok = (values == 0) | (values == 1)
    minus = values == -1
    allowed = ok | ((blank | minus) if uncertain != "error" else np.zeros_like(ok))
    if not allowed.all():
        r, c = np.argwhere(~allowed)[0]
        shown = raw.iat[r, c]
        image = (
            f" (image {df[image_column].iat[r]!r})" if image_column and image_column in df else ""
        )
        if blank[r, c] or minus[r, c]:
            hint = (
                "; blank and -1 (uncertain) labels need a policy: set uncertain='zero' or "
                "'one' (see data_access.md)"
            )
        else:
            hint = "; labels must be 0 or 1" + note
        raise ValueError(
            f"label file {path}, {csv_line(r)}{image}, column {classes[c]!r}: "
            f"value {'blank' if blank[r, c] else repr(shown)}{hint}"
        )
    out = np.where(ok, values, 0.0)
    if uncertain == "one":
        out = np.where(minus, 1.0, out)
    return out.astype(np.int8)


def check_relative_path(value: str, *, path: Path, pos: int) -> str:
    """An image path must stay inside its image root: no absolute path, no ``..`` escape."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"label file {path}, {csv_line(pos)}: the image path is empty")
    norm = os.path.normpath(value.replace("\\", "/"))
    if (
        os.path.isabs(norm)
        or norm == ".."
        or norm.startswith("../")
        or re.match(r"^[A-Za-z]:", norm)
    ):
        raise ValueError(
            f"label file {path}, {csv_line(pos)}: image path {value!r} escapes the image root "
            "(paths must be relative to it, without '..')"
        )
    return value


def patient_ids(
    df: pd.DataFrame, columns: Sequence[str], pattern: str | None, image_column: str, path: Path
) -> list[str]:
    """The patient id of each row: the first of ``columns`` present, else the first group
    of ``pattern`` in the image path, else the image path itself (one patient per image).

    Numeric ids are normalised (``"00012"`` and ``"12.0"`` are patient ``"12"``).
    """
    for col in columns:
        if col in df.columns:
            ids = df[col]
            if ids.isna().any():
                pos = int(np.flatnonzero(ids.isna().to_numpy())[0])
                raise ValueError(
                    f"label file {path}, {csv_line(pos)}: column {col!r} (patient id) is blank"
                )
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
                f"label file {path}, {csv_line(pos)}: no patient id in image path {value!r} "
                f"(expected a column {list(columns)} or a path matching {pattern!r})"
            )
        out.append(str(int(m.group(1))) if m.group(1).isdigit() else m.group(1))
    return out


def infer_class_columns(df: pd.DataFrame, skip: Sequence[str]) -> list[str]:
    """The columns of a user's table taken as classes when none are named, in file order.

    A column (not in ``skip``) is a class when at least :data:`CLASS_COLUMN_SHARE` of its
    non-blank values are 0, 1 or -1. The decision never hides a bad value: a class column
    that also holds a ``2``, ``0.5`` or ``yes`` stays a class, and :func:`labels_to_int8`
    then refuses that value. A column of only 0 is a class without a positive image (it
    warns, :class:`EmptyClassWarning`), as a named class would. Columns of other values
    (ages, views, free text) are not classes.
    """
    classes = []
    for col in df.columns:
        if col in skip:
            continue
        values = df[col].dropna()
        if not len(values):
            continue
        labels = pd.to_numeric(values, errors="coerce").isin(LABEL_VALUES)
        if labels.mean() >= CLASS_COLUMN_SHARE:
            classes.append(col)
    return classes


#: appended to the error for a bad value in an inferred class column
INFERRED_NOTE = (
    f" (the column is taken as a class because at least {CLASS_COLUMN_SHARE:.0%} of "
    "its values are 0/1; if it is not a class, name the classes with the "
    "parameter class_columns)"
)


def csv_columns(
    df: pd.DataFrame,
    path: Path,
    *,
    image_column: str = "",
    patient_column: str = "",
    split_column: str = "",
    class_columns: Sequence[str] = (),
):
    """The columns of a user's table: ``(image, patient, split, classes)``.

    Named columns must exist; empty names are inferred (image and split column from
    :data:`~prunecxr.data.specs.IMAGE_COLUMN_CANDIDATES` and ``split``; classes by
    :func:`infer_class_columns`). An empty patient or split column means none.
    """
    if image_column:
        require_columns(df, path, [image_column], "image path")
    else:
        image_column = next((c for c in IMAGE_COLUMN_CANDIDATES if c in df.columns), "")
        if not image_column:
            raise ValueError(
                f"label file {path} has no image path column (tried "
                f"{list(IMAGE_COLUMN_CANDIDATES)}): name it with the parameter image_column"
            )
    if patient_column:
        require_columns(df, path, [patient_column], "patient id")
    if split_column:
        require_columns(df, path, [split_column], "split")
    else:
        split_column = next((c for c in SPLIT_COLUMN_CANDIDATES if c in df.columns), "")
    classes = list(class_columns)
    if classes:
        require_columns(df, path, classes, "class")
    else:
        skip = {image_column, patient_column, split_column, *PATIENT_COLUMN_CANDIDATES}
        classes = infer_class_columns(df, sorted(skip))
        if not classes:
            raise ValueError(
                f"label file {path}: no 0/1 class column found; name the classes with "
                "the parameter class_columns"
            )
    reserved = sorted(set(classes) & set(LABEL_META_COLUMNS))
    if reserved:
        raise ValueError(f"label file {path}: class names {reserved} are reserved column names")
    return image_column, patient_column, split_column, classes


def split_values(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """The ``train``/``val``/``test`` of each row from a split column (case and spaces ignored)."""
    split = df[column].str.strip().str.lower()
    bad = ~split.isin(SPLITS)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"label file {path}, {csv_line(pos)}: split {df[column].iat[pos]!r} in column "
            f"{column!r} is not one of {list(SPLITS)}"
        )
    return split.to_numpy()


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


def warn_empty_classes(table: pd.DataFrame, classes: Sequence[str]) -> list[tuple[str, str]]:
    """Warn (:class:`EmptyClassWarning`) for each class with no positive in a split.

    Returns
    -------
    The ``(class, split)`` pairs without a positive image.
    """
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
