"""Compression levels: the one axis every compression method is analysed along.

A leaf of the package (it imports only :mod:`prunecxr.published`, itself a leaf), torch-free,
so the analyses of notebooks 04-06 and 08 read any method's levels without a deep-learning stack.

A compression method maps a dense model and a *level* to a compressed model. Each method has
one level axis (:data:`AXES`): the axis names the level (and the column or key that holds it
in the run's files, ``docs/artifacts.md``), its unit, the level of the dense model and the
direction in which compression grows:

========================  ===============================  =====  =====================
axis                      unit                             dense  more compression
========================  ===============================  =====  =====================
``sparsity``              fraction of weights set to 0     0      larger (the paper's)
``bits``                  bits per weight                  32     smaller
``channel_fraction``      fraction of channels removed     0      larger
========================  ===============================  =====  =====================

Every store lists its levels in *compression order*: the dense level first, then ever more
compressed (:meth:`Axis.check_levels`), so "the curve up to level k" means the same thing on
every axis. Two levels closer than :data:`prunecxr.published.SPARSITY_ATOL` are one level.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .published import EXTREME_SPARSITY, PIE_SPARSITY, SPARSITY_ATOL


@dataclass(frozen=True)
class Axis:
    """One compression axis (see the module docstring).

    Attributes
    ----------
    name : the level's name: the column of ``metrics.parquet`` and ``forgettability.parquet``
        that holds it, and ``level_name`` in ``meta.json``.
    unit : what a level value measures, in words.
    dense : the level of the uncompressed model (the baseline of every comparison).
    increasing : whether larger values compress more.
    lowest, highest : the values a level may take (inclusive).
    integer : whether a level is a whole number.
    label : the axis title of figures.
    """

    name: str
    unit: str
    dense: float
    increasing: bool
    lowest: float
    highest: float
    integer: bool
    label: str

    # -- checking -------------------------------------------------------------------------
    def check_level(self, value: Any, *, name: str | None = None) -> float:
        """``value`` as a float on this axis, or a ValueError naming the bad value."""
        name = name or self.name
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number ({self.unit}), got {value!r}")
        out = float(value)
        if not (self.lowest <= out <= self.highest):  # also refuses NaN
            raise ValueError(
                f"{name} must be in [{self.lowest:g}, {self.highest:g}] ({self.unit}), got {value!r}"
            )
        if self.integer and out != math.floor(out):
            raise ValueError(f"{name} must be a whole number of {self.unit}, got {value!r}")
        return out

    def check_levels(
        self, values: Iterable[Any], *, dense_first: bool = False, name: str | None = None
    ) -> list[float]:
        """Levels in compression order (strictly more compressed each), each checked.

        With ``dense_first`` the first level must be the dense model's (the baseline).
        """
        name = name or f"{self.name} levels"
        out = [self.check_level(v, name=f"{name}[{i}]") for i, v in enumerate(values)]
        if not out:
            raise ValueError(f"{name} is empty")
        for i in range(1, len(out)):
            if not self.more_compressed(out[i], out[i - 1]):
                word = "increasing" if self.increasing else "decreasing"
                raise ValueError(
                    f"{name} must be strictly {word} (compression order: {self.unit}); "
                    f"{name}[{i}] = {out[i]!r} follows {out[i - 1]!r}"
                )
        if dense_first and not self.is_dense(out[0]):
            raise ValueError(
                f"{name} must start with {self.dense!r} (the dense model, the baseline of "
                f"every comparison); got {out[0]!r} first"
            )
        return out

    # -- comparing ------------------------------------------------------------------------
    def more_compressed(self, a: float, b: float) -> bool:
        """Whether level ``a`` compresses strictly more than level ``b``."""
        if abs(float(a) - float(b)) <= SPARSITY_ATOL:
            return False
        return float(a) > float(b) if self.increasing else float(a) < float(b)

    def is_dense(self, values: Any) -> Any:
        """Whether each value is the dense level (elementwise for arrays)."""
        return np.isclose(np.asarray(values, dtype=float), self.dense, atol=SPARSITY_ATOL, rtol=0)

    def order(self, values: Iterable[float]) -> list[float]:
        """``values`` sorted in compression order (dense first)."""
        return sorted((float(v) for v in values), reverse=not self.increasing)

    def compression_rank(self, values: Any) -> np.ndarray:
        """A number that grows with compression: the value, or its negative on a decreasing axis."""
        v = np.asarray(values, dtype=float)
        return v if self.increasing else -v

    def index(self, levels: Sequence[float], value: float, *, name: str | None = None) -> int:
        """Position of ``value`` among ``levels`` (an error naming those present)."""
        values = np.asarray(levels, dtype=float)
        hit = np.flatnonzero(np.isclose(values, float(value), atol=SPARSITY_ATOL, rtol=0))
        if hit.size == 0:
            raise ValueError(
                f"{name or self.name}={value!r} is not among the levels {values.tolist()}"
            )
        return int(hit[0])

    def extreme(self, levels: Sequence[float]) -> float:
        """The level whose relative change Fig. 3 (right) shows: the paper's 95% sparsity on
        the sparsity axis; the most compressed level of ``levels`` on the others."""
        if self.name == "sparsity":
            return EXTREME_SPARSITY
        return self.order(levels)[-1]

    def pie_level(self, levels: Sequence[float], pie_sparsity: float = PIE_SPARSITY) -> float:
        """The compressed level compared with the dense one to find exemplars (Fig. 5):
        ``pie_sparsity`` on the sparsity axis (the paper's 0.9); the most compressed level of
        ``levels`` on the others."""
        if self.name == "sparsity":
            return float(pie_sparsity)
        return self.order(levels)[-1]

    # -- showing --------------------------------------------------------------------------
    def format(self, value: float) -> str:
        """A level as text: ``90%`` sparsity, ``4 bits``, ``50%`` of channels."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if self.integer:
            return (
                f"{int(round(float(value)))} bits"
                if self.name == "bits"
                else f"{int(round(float(value)))}"
            )
        return f"{100 * float(value):.0f}%"

    @property
    def tickformat(self) -> str:
        """plotly's tick format of the axis."""
        return "d" if self.integer else ".0%"

    @property
    def change_column(self) -> str:
        """The ``class_summary.parquet`` column of the relative change at :meth:`extreme`."""
        return "rel_change_at_095" if self.name == "sparsity" else "rel_change_at_extreme"


#: the compression axes, by name
AXES: dict[str, Axis] = {
    "sparsity": Axis(
        "sparsity", "fraction of weights set to 0", 0.0, True, 0.0, 1.0, False, "Sparsity"
    ),
    "bits": Axis("bits", "bits per weight", 32.0, False, 1.0, 32.0, True, "Bits per weight"),
    "channel_fraction": Axis(
        "channel_fraction",
        "fraction of channels removed",
        0.0,
        True,
        0.0,
        1.0,
        False,
        "Channels removed",
    ),
}


def axis(name: str) -> Axis:
    """The axis ``name``, or a ValueError naming the choices."""
    if name not in AXES:
        raise ValueError(f"unknown level name {name!r}; choose one of {sorted(AXES)}")
    return AXES[name]


def axis_of(columns: Iterable[str]) -> Axis:
    """The axis whose name is among ``columns`` (a table's level column); exactly one must be."""
    found = [AXES[c] for c in columns if c in AXES]
    if len(found) != 1:
        names = [a.name for a in found]
        raise ValueError(
            f"a table of levels needs exactly one level column of {sorted(AXES)}; found {names or 'none'}"
        )
    return found[0]
