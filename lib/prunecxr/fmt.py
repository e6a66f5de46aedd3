"""The one place numbers are formatted for figures, tables and text."""

from __future__ import annotations

import math


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, digits: int = 2) -> str:
    """A plain number with ``digits`` decimals; ``—`` for NaN/None."""
    if _missing(x):
        return "—"
    return f"{float(x):.{digits}f}"


def pct(x, digits: int = 0) -> str:
    """A fraction in [0, 1] as a percentage (``0.65`` → ``65%``)."""
    if _missing(x):
        return "—"
    return f"{100 * float(x):.{digits}f}%"


def pvalue(p) -> str:
    """A p-value as in the paper: ``P = 0.035``, ``P < 0.001``."""
    if _missing(p):
        return "P = —"
    p = float(p)
    if p < 0.001:
        return "P < 0.001"
    return f"P = {p:.3f}"


def corr(name: str, r, p) -> str:
    """A correlation with its p-value: ``ρ = 0.61 (P = 0.004)``."""
    return f"{name} = {num(r)} ({pvalue(p)})"


def ratio(x, digits: int = 1) -> str:
    """A multiplicative ratio: ``3.2×``."""
    if _missing(x):
        return "—"
    return f"{float(x):.{digits}f}×"


def count(x) -> str:
    """A whole count with thousands separators (``78506`` → ``78,506``); ``—`` for NaN/None."""
    if _missing(x):
        return "—"
    return f"{int(round(float(x))):,}"
