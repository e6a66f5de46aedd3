"""Where each finding was drawn: the box of the pixels that change without it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .difficulty import strengths
from .draw import Scene, render_batch
from .labels import FINDINGS
from .render import check_meta, check_resolution

#: A pixel belongs to a finding's drawn signature when taking the finding away changes it by
#: at least this many grey levels and by at least :data:`LOCATION_RELATIVE` of the largest
#: change the finding makes in that image (the far tails of soft signatures stay outside).
LOCATION_MIN_CHANGE = 2
LOCATION_RELATIVE = 0.1
#: the columns of :func:`locate`'s table (``locations.parquet``)
LOCATION_COLUMNS = ("image_id", "class", "x0", "y0", "x1", "y1", "pixels", "max_change")


def drawn_mask(with_finding: np.ndarray, without: np.ndarray) -> np.ndarray:
    """The pixels that belong to a finding's signature: bool ``[..., R, R]``.

    ``with_finding`` and ``without`` are uint8 renders of the same images with and without
    the finding; see :data:`LOCATION_MIN_CHANGE` and :data:`LOCATION_RELATIVE`.
    """
    change = np.abs(with_finding.astype(np.int16) - without.astype(np.int16))
    peak = change.reshape(change.shape[:-2] + (-1,)).max(axis=-1)
    floor = np.maximum(LOCATION_MIN_CHANGE, np.ceil(LOCATION_RELATIVE * peak))
    return change >= floor[..., None, None]


def locate(
    meta: pd.DataFrame,
    images: np.ndarray,
    *,
    resolution: int,
    difficulty: str | Mapping[str, float] = "calibrated",
    batch_pixels: int = 1 << 20,
) -> pd.DataFrame:
    """Where every finding of ``meta``'s rows was drawn in ``images``: one box per positive.

    Each positive (image, finding) is rendered again without that finding; the finding's
    signature is the set of pixels that change (:func:`drawn_mask`), and its location is
    the smallest box holding them. For focal findings the box is the lesion; for findings
    that change the anatomy (Cardiomegaly, Emphysema, Atelectasis, Fibrosis) it is the region
    the change reaches.

    Parameters
    ----------
    meta : the rows ``images`` were rendered from (:func:`render`), in the same order.
    images : uint8 ``[N, R, R]``, ``render(meta, resolution=resolution, difficulty=difficulty)``.
    resolution, difficulty : as for :func:`render`.

    Returns
    -------
    DataFrame with :data:`LOCATION_COLUMNS`: ``image_id``, ``class`` (a finding), the box
    ``x0, y0, x1, y1`` in pixels of the ``R × R`` image (columns ``x0 <= x < x1``, rows
    ``y0 <= y < y1``), ``pixels`` (how many pixels the signature has) and ``max_change``
    (grey levels). A signature too faint to change any pixel by
    :data:`LOCATION_MIN_CHANGE` levels has ``pixels`` 0 and the box ``-1, -1, -1, -1``.
    Rows are ordered by image (``meta``'s order), then finding (:data:`FINDINGS` order).
    """
    check_meta(meta)
    resolution = check_resolution(resolution)
    strength = strengths(difficulty)
    if images.shape != (len(meta), resolution, resolution) or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 {(len(meta), resolution, resolution)}, "
            f"got {images.dtype} {images.shape}"
        )
    meta = meta.reset_index(drop=True)
    flags = meta[list(FINDINGS)].to_numpy(bool)
    batch = max(1, batch_pixels // (resolution * resolution))
    rows, finding_idx, boxes, counts, peaks = [], [], [], [], []
    for k, finding in enumerate(FINDINGS):
        idx = np.flatnonzero(flags[:, k])
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            rows_meta = meta.iloc[part].copy()
            rows_meta[finding] = 0
            without = np.empty((len(part), resolution, resolution), np.uint8)
            render_batch(Scene(rows_meta, resolution, strength), without)
            mask = drawn_mask(images[part], without)
            cols_any, rows_any = mask.any(axis=1), mask.any(axis=2)  # [B, R] over x, over y
            has = cols_any.any(axis=1)
            x0 = np.where(has, cols_any.argmax(axis=1), -1)
            x1 = np.where(has, resolution - cols_any[:, ::-1].argmax(axis=1), -1)
            y0 = np.where(has, rows_any.argmax(axis=1), -1)
            y1 = np.where(has, resolution - rows_any[:, ::-1].argmax(axis=1), -1)
            change = np.abs(images[part].astype(np.int16) - without.astype(np.int16))
            rows.append(part)
            finding_idx.append(np.full(len(part), k))
            boxes.append(np.stack([x0, y0, x1, y1], axis=1))
            counts.append(mask.sum(axis=(1, 2)))
            peaks.append(change.reshape(len(part), -1).max(axis=1))
    if rows:
        row, fk = np.concatenate(rows), np.concatenate(finding_idx)
        box, count, peak = np.concatenate(boxes), np.concatenate(counts), np.concatenate(peaks)
    else:
        row = fk = count = peak = np.zeros(0, np.int64)
        box = np.zeros((0, 4), np.int64)
    order = np.lexsort((fk, row))
    return pd.DataFrame(
        {
            "image_id": meta["image_id"].to_numpy(str)[row[order]],
            "class": np.asarray(FINDINGS, dtype=object)[fk[order]],
            "x0": box[order, 0].astype(np.int16),
            "y0": box[order, 1].astype(np.int16),
            "x1": box[order, 2].astype(np.int16),
            "y1": box[order, 3].astype(np.int16),
            "pixels": count[order].astype(np.int32),
            "max_change": peak[order].astype(np.int16),
        }
    )
