"""Rendering rows of the label table into images, and what the rendering depends on."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

import numpy as np
import pandas as pd

from .difficulty import strengths
from .draw import HERNIA_SIZE, NOISE_LEVEL, RENDERER_VERSION, Scene, render_batch
from .labels import FINDINGS, META_COLUMNS, TABLE_FILE, WHEEL


def check_meta(meta: pd.DataFrame) -> None:
    missing = [c for c in META_COLUMNS + FINDINGS if c not in meta.columns]
    if missing:
        raise ValueError(f"phantom metadata is missing columns {missing}")


def check_resolution(resolution) -> int:
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, (int, np.integer))
        or not 8 <= resolution <= 2048
    ):
        raise ValueError(f"resolution must be an int from 8 to 2048, got {resolution!r}")
    return int(resolution)


def render(
    meta: pd.DataFrame,
    *,
    resolution: int,
    difficulty: str | Mapping[str, float] = "calibrated",
    out: np.ndarray | None = None,
    batch_pixels: int = 1 << 20,
    progress=None,
) -> np.ndarray:
    """Render the phantom images of ``meta``'s rows.

    Parameters
    ----------
    meta : rows of :func:`load_table` (or any table with its columns: ``image_id``,
        ``patient_id``, ``view``, ``sex``, ``age`` and the 14 finding columns).
    resolution : side ``R`` of the square images, in pixels (8 to 2048).
    difficulty : the findings' strengths, a condition name or a table (:func:`strengths`).
    out : optional uint8 ``[N, R, R]`` array (e.g. a memory map) to draw into.
    batch_pixels : pixels drawn per vectorized batch (memory ~ 60 bytes per pixel).
    progress : optional callable ``progress(n_done)`` called after each batch.

    Returns
    -------
    uint8 array ``[N, R, R]``: ``out`` when given. Row ``k`` depends only on row ``k`` of
    ``meta`` (and ``resolution`` and the strengths), never on the batch it was drawn in.
    """
    check_meta(meta)
    resolution = check_resolution(resolution)
    strength = strengths(difficulty)
    n = len(meta)
    if out is None:
        out = np.empty((n, resolution, resolution), np.uint8)
    elif out.shape != (n, resolution, resolution) or out.dtype != np.uint8:
        raise ValueError(
            f"out must be uint8 {(n, resolution, resolution)}, got {out.dtype} {out.shape}"
        )
    batch = max(1, batch_pixels // (resolution * resolution))
    meta = meta.reset_index(drop=True)
    for start in range(0, n, batch):
        part = meta.iloc[start : start + batch]
        render_batch(Scene(part, resolution, strength), out[start : start + len(part)])
        if progress is not None:
            progress(start + len(part))
    return out


def fingerprint(difficulty: str | Mapping[str, float] = "calibrated") -> dict:
    """What the rendering depends on besides the rows: part of the image cache key."""
    return {
        "renderer_version": RENDERER_VERSION,
        "strength": strengths(difficulty),
        "hernia_size": HERNIA_SIZE,
        "noise_level": NOISE_LEVEL,
        "table_file": TABLE_FILE,
        "wheel_version": metadata.version(WHEEL),
    }
