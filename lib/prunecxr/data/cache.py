"""The image cache: one uint8 memory-mapped array per split (notebook 01).

Decoded images (:mod:`prunecxr.data.images`) are stored as
``<cache>/<dataset>/<R>px/<split>-<key>.npy`` beside ``<split>-<key>.json``, the manifest of
the inputs that ``<key>`` hashes: the dataset, the resolution, the image ids in row order and,
for files, each file's relative path, size and modification time (for the phantom, the
renderer's fingerprint and the rows it draws from). Any change of input gives a new key, so
a stale cache is never read; an unchanged input reuses the file, for every seed and rerun.

Writes are atomic: a cache file is complete or absent, never half-written. A build that is
killed leaves its temporary file (``.<split>-<key>.npy.<random>.tmp``, as large as the
split's images); the next build removes such leftovers (:func:`remove_stale_cache_temporaries`),
never one that another process is still writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import artifacts, paths
from .images import ImageSource, check_resolution

try:
    import fcntl
except ImportError:  # Windows has no flock: stale temporaries are then left alone (safe side)
    fcntl = None

#: Bump when decoding or the cache layout changes: it is part of every cache key.
CACHE_VERSION = 1
#: the lock file in the cache root that builds share while they write (see
#: :func:`remove_stale_cache_temporaries`)
LOCK_FILE = ".build.lock"


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

    @property
    def locations_path(self) -> Path:
        """Where a source that knows where it drew findings (the phantom) keeps them."""
        return self.path.with_suffix(".locations.parquet")

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


# -- temporaries of killed builds -------------------------------------------------------------


@contextlib.contextmanager
def _build_lock(*, exclusive: bool) -> Iterator[bool]:
    """Hold ``<cache_root>/.build.lock``: shared (waits) or exclusive (does not wait).

    Yields whether the lock is held. The lock is released when the holder's file is closed,
    so a killed process never leaves it behind. Where the lock file cannot be opened (a
    read-only cache that is only reused), nothing is locked and nothing is cleaned.
    """
    if fcntl is None:
        yield not exclusive
        return
    root = paths.cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(root / LOCK_FILE, "a+b")
    except OSError:
        yield False
        return
    with fh:
        try:
            fcntl.flock(fh, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
        except OSError:  # held by another process, or a filesystem without locks
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_cache_temporaries() -> int:
    """Remove the temporary files that killed builds left under the cache root; returns how many.

    Every build holds a shared lock on ``<cache_root>/.build.lock`` while it writes; this
    takes the lock exclusively, without waiting, and removes only while it holds it, so a
    temporary that another process is writing right now is never touched (when one is
    writing, cleaning is left to a later build). A rule by age ("older than N minutes") would
    need no lock, but a build at 256 px of a large dataset runs for hours and the
    modification time of its memory-mapped temporary is no reliable sign of life.
    """
    root = paths.cache_root()
    if not root.is_dir():
        return 0
    with _build_lock(exclusive=True) as held:
        return artifacts.remove_stale_temporaries(root, recursive=True) if held else 0


# -- building and opening ------------------------------------------------------------------------


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
    Temporaries that killed builds left are removed first (:func:`remove_stale_cache_temporaries`).
    """
    resolution = check_resolution(resolution)
    ids = [str(i) for i in image_ids]
    manifest = _manifest(
        dataset=dataset, split=split, resolution=resolution, image_ids=ids, source=source
    )
    key = manifest_key(manifest)
    rel = f"{dataset}/{resolution}px/{split}-{key}.npy"
    entry = CacheEntry(rel, key, len(ids), resolution)
    remove_stale_cache_temporaries()
    locates = callable(getattr(source, "locate", None))
    if (
        entry.path.exists()
        and entry.manifest_path.exists()
        and (not locates or entry.locations_path.exists())
    ):
        return CacheEntry(rel, key, len(ids), resolution, reused=True)
    start = time.perf_counter()
    with _build_lock(exclusive=False):
        with artifacts.atomic_path(entry.path) as tmp:
            arr = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(ids), resolution, resolution)
            )
            try:
                source.read_into(arr, resolution)
                arr.flush()
                if locates:  # before the manifest, which marks the entry complete
                    artifacts.write_parquet(entry.locations_path, source.locate(arr, resolution))
            finally:
                del arr
        artifacts.write_json(entry.manifest_path, {**manifest, "key": key, "image_ids": ids})
    return CacheEntry(rel, key, len(ids), resolution, seconds=time.perf_counter() - start)


def read_locations(record: dict) -> pd.DataFrame | None:
    """The drawn locations of a cache entry recorded in ``run.json`` (None: the source has none)."""
    path = (paths.cache_root() / record["path"]).with_suffix(".locations.parquet")
    return artifacts.read_parquet(path, "drawn locations") if path.exists() else None


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
        raise ValueError(
            f"image cache {path} holds {arr.dtype} {arr.shape}, expected uint8 {expected}"
        )
    if image_ids is not None:
        cached = artifacts.read_json(manifest_path).get("image_ids", [])
        if [str(i) for i in image_ids] != cached:
            raise ValueError(
                f"image cache {path} was built for other images than labels.parquet lists: "
                "re-run notebook 01_data for this run"
            )
    return arr
