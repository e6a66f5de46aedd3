"""Each finding's difficulty: its strength, from a shipped condition or a table."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import reference
from .labels import FINDINGS


def strengths(difficulty: str | Mapping[str, float] = "calibrated") -> dict[str, float]:
    """Every finding's signature strength: a shipped condition or an explicit table.

    Parameters
    ----------
    difficulty : a condition of :data:`prunecxr.data.reference.CONDITIONS` (``"calibrated"``,
        ``"equal"``), read from package data, or a mapping finding → strength naming all 14
        findings (the calibration's candidates).

    Returns
    -------
    dict finding → strength (float, > 0), in :data:`FINDINGS` order.
    """
    if isinstance(difficulty, str):
        table = reference.phantom_difficulty(difficulty)["strength"]
        where = f"phantom difficulty {difficulty!r} ({reference.difficulty_file(difficulty).name})"
    elif isinstance(difficulty, Mapping):
        table, where = difficulty, "the strength table"
    else:
        raise ValueError(
            f"phantom_difficulty must be one of {list(reference.CONDITIONS)} or a mapping "
            f"finding → strength, got {difficulty!r}"
        )
    unknown = sorted(set(table) - set(FINDINGS))
    missing = [f for f in FINDINGS if f not in table]
    if unknown or missing:
        raise ValueError(f"{where}: unknown findings {unknown}, missing findings {missing}")
    out = {}
    for f in FINDINGS:
        value = table[f]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.floating))
            or not np.isfinite(value)
            or not 0 < value <= 50
        ):
            raise ValueError(
                f"{where}: the strength of {f!r} must be a number in (0, 50], got {value!r}"
            )
        out[f] = float(value)
    return out
