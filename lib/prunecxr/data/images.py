"""Decoding images and the image cache: one uint8 memory-mapped array per split.

Images are decoded once, converted to 8-bit grayscale and resized to the profile's
resolution *without cropping* (the whole film is squeezed into an ``R × R`` square, as the
authors' ``cv2.resize(x, (256, 256))`` does), then stored as
``<cache>/<dataset>/<R>px/<split>-<key>.npy`` beside ``<split>-<key>.json``, the manifest of
the inputs that ``<key>`` hashes: the dataset, the resolution, the image ids in row order and,
for files, each file's relative path, size and modification time (for the phantom, the
renderer's fingerprint and the rows it draws from). Any change of input gives a new key, so
a stale cache is never read; an unchanged input reuses the file, for every seed and rerun.

Grayscale conversion, for every format Pillow reads (PNG, JPEG, ...):

* 8-bit gray (``L``) is kept as is; palette, RGB and RGBA images are converted with
  Pillow's ITU-R 601-2 luma (alpha is ignored; X-ray PNGs carry an opaque one);
* 16-bit (and 32-bit integer or float) images are rescaled linearly from their own
  minimum–maximum range to 0–255 (their stored bit depth varies: 10, 12, 14 or 16 bits);
* JPEGs are decoded at a reduced DCT scale when that is still at least ``R`` pixels.

Writes are atomic: a cache file is complete or absent, never half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .. import artifacts, paths

#: Bump when decoding or the cache layout changes: it is part of every cache key.
CACHE_VERSION = 1

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
            small = gray.resize((resolution, resolution), Image.Resampling.BILINEAR, reducing_gap=3.0)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from None
    arr = np.asarray(small)
    if wide:
        arr = np.clip(np.rint(arr), 0, 255)
    return arr.astype(np.uint8, copy=False)


# -- image sources -------------------------------------------------------------------------


class ImageSource(Protocol):
    """Where a split's pixels come from: files, or the phantom renderer."""

    def fingerprint(self) -> dict:
        """A JSON-able description of every input the pixels depend on."""

    def read_into(self, out: np.ndarray, resolution: int) -> None:
        """Fill ``out`` (uint8 ``[N, R, R]``) with the images, in row order."""


@dataclass(frozen=True)
class FileImages:
    """Image files ``root / relpath`` for each row (``relpaths`` already checked to be inside)."""

    root: Path
    relpaths: tuple[str, ...]
    workers: int = 0

    def fingerprint(self) -> dict:
        h = hashlib.sha256()
        for rel in self.relpaths:
            st = (self.root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"kind": "files", "files_sha256": h.hexdigest()}

    def read_into(self, out: np.ndarray, resolution: int, *, chunk: int = 256) -> None:
        workers = self.workers or min(4, os.cpu_count() or 1)
        files = [self.root / rel for rel in self.relpaths]
        if workers <= 1:
            for k, f in enumerate(files):
                out[k] = load_image(f, resolution)
            return
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            # Pillow releases the GIL while decoding and resizing; chunks bound the memory
            for start in range(0, len(files), chunk):
                part = files[start : start + chunk]
                for k, arr in enumerate(pool.map(lambda f: load_image(f, resolution), part)):
                    out[start + k] = arr
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class PhantomImages:
    """Phantom images drawn from rows of :func:`prunecxr.phantom.load_table`."""

    meta: pd.DataFrame

    def fingerprint(self) -> dict:
        from . import phantom

        cols = list(phantom.META_COLUMNS + phantom.FINDINGS)
        rows = pd.util.hash_pandas_object(self.meta[cols], index=False).to_numpy()
        return {"kind": "phantom", **phantom.fingerprint(),
                "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest()}

    def read_into(self, out: np.ndarray, resolution: int) -> None:
        from . import phantom

        phantom.render(self.meta, resolution=resolution, out=out)


# -- the cache -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    """One split's cached images: ``<cache_root>/<relpath>`` and its manifest key."""

    relpath: str
    key: str
    n: int
    resolution: int
    reused: bool = False
    seconds: float = 0.0

    @property
    def path(self) -> Path:
        return paths.cache_root() / self.relpath

    @property
    def manifest_path(self) -> Path:
        return self.path.with_suffix(".json")

    def record(self) -> dict:
        """What ``run.json`` keeps about this entry."""
        return {"path": self.relpath, "key": self.key, "n": self.n, "resolution": self.resolution}


def _manifest(*, dataset: str, split: str, resolution: int, image_ids, source: ImageSource) -> dict:
    ids = [str(i) for i in image_ids]
    return {
        "cache_version": CACHE_VERSION,
        "dataset": dataset,
        "split": split,
        "resolution": resolution,
        "n_images": len(ids),
        "image_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "source": source.fingerprint(),
    }


def manifest_key(manifest: dict) -> str:
    """The cache key: SHA-256 of the canonical JSON manifest, first 16 hex digits."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_cache(
    source: ImageSource,
    image_ids,
    *,
    dataset: str,
    split: str,
    resolution: int,
) -> CacheEntry:
    """Build (or reuse) the cache of one split.

    Parameters
    ----------
    source : where the pixels come from, one image per id, in the order of ``image_ids``.
    image_ids : the split's image ids in row order (``labels.parquet`` filtered to the split).
    dataset, split : names that go into the folder and the file name.
    resolution : side ``R`` of the cached square images.

    Returns
    -------
    CacheEntry whose ``path`` holds uint8 ``[N, R, R]`` (``reused`` tells whether it existed).
    """
    resolution = check_resolution(resolution)
    ids = [str(i) for i in image_ids]
    manifest = _manifest(dataset=dataset, split=split, resolution=resolution, image_ids=ids,
                         source=source)
    key = manifest_key(manifest)
    rel = f"{dataset}/{resolution}px/{split}-{key}.npy"
    entry = CacheEntry(rel, key, len(ids), resolution)
    if entry.path.exists() and entry.manifest_path.exists():
        return CacheEntry(rel, key, len(ids), resolution, reused=True)
    start = time.perf_counter()
    with artifacts.atomic_path(entry.path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(ids), resolution, resolution))
        try:
            source.read_into(arr, resolution)
            arr.flush()
        finally:
            del arr
    artifacts.write_json(entry.manifest_path, {**manifest, "key": key, "image_ids": ids})
    return CacheEntry(rel, key, len(ids), resolution, seconds=time.perf_counter() - start)


def open_cache(record: dict, image_ids=None) -> np.ndarray:
    """Memory-map a cache entry recorded in ``run.json`` (read-only uint8 ``[N, R, R]``).

    ``image_ids``, when given, must equal the ids the cache was built for, in order.
    """
    path = paths.cache_root() / record["path"]
    manifest_path = path.with_suffix(".json")
    if not path.exists() or not manifest_path.exists():
        raise FileNotFoundError(
            f"image cache {path} is missing (cache folder moved or cleared?): "
            "re-run notebook 01_data for this run to rebuild it"
        )
    arr = artifacts.load_npy(path, mmap=True)
    expected = (int(record["n"]), int(record["resolution"]), int(record["resolution"]))
    if arr.dtype != np.uint8 or arr.shape != expected:
        raise ValueError(f"image cache {path} holds {arr.dtype} {arr.shape}, expected uint8 {expected}")
    if image_ids is not None:
        cached = artifacts.read_json(manifest_path).get("image_ids", [])
        if [str(i) for i in image_ids] != cached:
            raise ValueError(
                f"image cache {path} was built for other images than labels.parquet lists: "
                "re-run notebook 01_data for this run"
            )
    return arr
