"""Decoding images, and where a split's pixels come from (files or the phantom renderer).

Images are decoded once, converted to 8-bit grayscale and resized to the profile's
resolution *without cropping* (the whole film is squeezed into an ``R × R`` square, as the
authors' ``cv2.resize(x, (256, 256))`` does); :mod:`prunecxr.data.cache` stores the result.

Grayscale conversion, for every format Pillow reads (PNG, JPEG, ...):

* 8-bit gray (``L``) is kept as is; palette, RGB and RGBA images are converted with
  Pillow's ITU-R 601-2 luma (alpha is ignored; X-ray PNGs carry an opaque one);
* 16-bit (and 32-bit integer or float) images are rescaled linearly from their own
  minimum–maximum range to 0–255 (their stored bit depth varies: 10, 12, 14 or 16 bits);
* JPEGs are decoded at a reduced DCT scale when that is still at least ``R`` pixels.

:func:`check_image` tells, faster than decoding, whether :func:`load_image` will read a
file (``python -m prunecxr check-data`` runs it on every image).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import phantom

_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


class ImageReadError(OSError):
    """An image file exists but cannot be decoded."""


def check_resolution(resolution) -> int:
    """Validate the ``resolution`` parameter (an int from 8 to 2048)."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(f"parameter resolution must be an int, got {resolution!r}")
    if not 8 <= int(resolution) <= 2048:
        raise ValueError(f"parameter resolution must be from 8 to 2048 pixels, got {resolution}")
    return int(resolution)


def to_grayscale(image: Image.Image) -> tuple[Image.Image, bool]:
    """Pillow image → (``L`` or ``F`` image, whether it is ``F`` in 0–255 floats)."""
    mode = image.mode
    if mode == "L":
        return image, False
    if mode in _WIDE_MODES:
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled, mode="F"), True
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image.convert("L"), False


def load_image(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """Decode one image file into uint8 ``[R, R]`` grayscale (see the module docstring).

    Raises
    ------
    FileNotFoundError : the file does not exist.
    ImageReadError : the file exists but is not a readable image (the message names it).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("L", (resolution, resolution))
            gray, wide = to_grayscale(im)
            small = gray.resize(
                (resolution, resolution), Image.Resampling.BILINEAR, reducing_gap=3.0
            )
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from None
    arr = np.asarray(small)
    if wide:
        arr = np.clip(np.rint(arr), 0, 255)
    return arr.astype(np.uint8, copy=False)


#: the smallest side a check decodes a JPEG at (a reduced DCT scale: cheap, yet it reads the
#: whole stream, so a truncated file fails as it does in :func:`load_image`)
_CHECK_SIDE = 8


def check_image(path: str | os.PathLike) -> None:
    """Raise what :func:`load_image` would raise for ``path``, without a full decode where
    a cheaper read decides.

    A PNG is verified chunk by chunk (every chunk's CRC, up to the end marker), a JPEG is
    decoded at 1/8 scale, any other format is decoded. A PNG that fails verification is
    decoded as :func:`load_image` does, so a file the cache would accept (e.g. one that lacks
    only its end marker) is never reported.

    Raises
    ------
    FileNotFoundError, ImageReadError : as :func:`load_image`.
    """
    path = Path(path)
    fmt = None
    try:
        with Image.open(path) as im:
            fmt = im.format
            if fmt == "PNG":
                im.verify()
                return
            if fmt == "JPEG":
                im.draft("L", (_CHECK_SIDE, _CHECK_SIDE))
            im.load()
            return
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as err:
        if fmt == "PNG":
            load_image(path, _CHECK_SIDE)  # the verdict of a real decode
            return
        raise ImageReadError(f"cannot read image {path}: {err}") from None


def image_problem(path: str | os.PathLike) -> str:
    """Why :func:`load_image` would refuse ``path`` (empty when it reads it)."""
    try:
        check_image(path)
    except (FileNotFoundError, ImageReadError) as err:
        return str(err)
    return ""


# -- image sources -------------------------------------------------------------------------


class ImageSource(Protocol):
    """Where a split's pixels come from: files, or the phantom renderer."""

    def fingerprint(self) -> dict:
        """A JSON-able description of every input the pixels depend on."""

    def read_into(self, out: np.ndarray, resolution: int) -> None:
        """Fill ``out`` (uint8 ``[N, R, R]``) with the images, in row order."""


@dataclass(frozen=True)
class FileImages:
    """Image files ``root / relpath`` for each row (``relpaths`` already checked to be inside).

    ``workers``: decoding threads (0: up to 4, as many as there are cores).
    """

    root: Path
    relpaths: tuple[str, ...]
    workers: int = 0

    def fingerprint(self) -> dict:
        h = hashlib.sha256()
        for rel in self.relpaths:
            st = (self.root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"kind": "files", "files_sha256": h.hexdigest()}

    def _map(self, fn, chunk: int = 256) -> Iterator[tuple[int, object]]:
        """``(k, fn(file k))`` in row order; Pillow releases the GIL while it decodes and
        resizes, so threads help; chunks bound the memory held by results in flight."""
        files = [self.root / rel for rel in self.relpaths]
        workers = self.workers or min(4, os.cpu_count() or 1)
        if workers <= 1:
            yield from ((k, fn(f)) for k, f in enumerate(files))
            return
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            for start in range(0, len(files), chunk):
                part = files[start : start + chunk]
                for k, result in enumerate(pool.map(fn, part)):
                    yield start + k, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def read_into(self, out: np.ndarray, resolution: int) -> None:
        for k, arr in self._map(lambda f: load_image(f, resolution)):
            out[k] = arr

    def unreadable(self) -> list[tuple[Path, str]]:
        """The files :func:`load_image` would refuse, with why (:func:`image_problem`)."""
        return [(self.root / self.relpaths[k], why) for k, why in self._map(image_problem) if why]


@dataclass(frozen=True)
class PhantomImages:
    """Phantom images drawn from rows of :func:`prunecxr.data.phantom.load_table`, with the
    findings' strengths of :func:`prunecxr.data.phantom.strengths` (``difficulty``)."""

    meta: pd.DataFrame
    difficulty: dict = field(default_factory=lambda: phantom.strengths("calibrated"))

    def fingerprint(self) -> dict:
        cols = list(phantom.META_COLUMNS + phantom.FINDINGS)
        rows = pd.util.hash_pandas_object(self.meta[cols], index=False).to_numpy()
        return {
            "kind": "phantom",
            **phantom.fingerprint(self.difficulty),
            "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest(),
        }

    def read_into(self, out: np.ndarray, resolution: int) -> None:
        phantom.render(self.meta, resolution=resolution, difficulty=self.difficulty, out=out)

    def locate(self, images: np.ndarray, resolution: int) -> pd.DataFrame:
        """Where each finding was drawn in ``images`` (:func:`prunecxr.data.phantom.locate`)."""
        return phantom.locate(self.meta, images, resolution=resolution, difficulty=self.difficulty)
