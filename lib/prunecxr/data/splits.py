"""Patient-level splits and subsamples (notebook 01).

Splits are patient-disjoint. Without a given split, patients are split 70/10/20 by ranking
a keyed hash of their id (``split_seed`` is the key), so the split of a patient never
depends on row order. ``max_patients`` keeps a subsample of patients chosen the same way
(nested: a smaller subsample is part of every larger one), in each split in proportion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..artifacts import SPLITS
from .keys import hash_rank

#: patient fractions of a generated split (train, val, test)
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


def patient_split(
    patients: Sequence[str], *, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS
) -> dict[str, str]:
    """Assign each patient to train/val/test in proportions ``fractions``.

    Patients are ranked by a hash of their id keyed with ``seed``; the first
    ``round(0.7 n)`` go to train, the next ``round(0.1 n)`` to val, the rest to test.

    Returns
    -------
    dict patient id → split name.
    """
    unique = sorted(set(map(str, patients)))
    order = [unique[k] for k in hash_rank(unique, f"prunecxr-split-{int(seed)}")]
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
    if (
        isinstance(max_patients, bool)
        or not isinstance(max_patients, (int, np.integer))
        or max_patients < 0
    ):
        raise ValueError(
            f"parameter max_patients must be an int >= 0 (0 = all), got {max_patients!r}"
        )
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
        ranked = hash_rank(patients, f"prunecxr-subsample-{int(seed)}")
        keep.update(patients[k] for k in ranked[:q])
    return table[table["patient_id"].isin(keep)].reset_index(drop=True)


def check_splits_nonempty(table: pd.DataFrame, context: str = "") -> None:
    """Refuse a table in which a split of :data:`SPLITS` has no image.

    ``context`` (e.g. ``" (label file x.csv)"``) is appended to the split list in the message.
    """
    missing = [s for s in SPLITS if not (table["split"] == s).any()]
    if missing:
        raise ValueError(f"split(s) {missing} have no image{context}; every split needs images")
