"""Benchmark of notebook 01's data path: phantom rendering and the image cache.

1. Phantom rendering throughput (images/s) at the default profile's resolution (with the time
   all 112,120 images take at that rate; goal: at most a minute), 64×64 and 256×256.
2. On generated 1024×1024 8-bit PNGs (chest-like phantom content plus noise, so they
   compress like real films): the read speed of one training epoch
   - decoding and resizing every image at every access (the way the authors' code reads
     images: ``cv2.imread`` + ``cv2.resize`` in ``__getitem__``; here Pillow, one core), and
   - reading shuffled mini-batches from the uint8 memory-mapped cache that
     :func:`prunecxr.data.cache.build_cache` writes once.
   The ratio cache / decode is printed last (goal: at least 10×).

Usage: ``python benchmarks/bench_data.py [--files 96] [--resolution 256]``. Everything is
written to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _phantom_throughput(resolution: int, n: int) -> float:
    from prunecxr.data import phantom

    rows = phantom.load_table().iloc[:n]
    phantom.render(rows.iloc[:8], resolution=resolution)  # warm-up
    start = time.perf_counter()
    phantom.render(rows, resolution=resolution)
    return n / (time.perf_counter() - start)


def _make_pngs(folder: Path, n: int, size: int = 1024) -> list[str]:
    from prunecxr.data import phantom

    rows = phantom.load_table().iloc[: max(1, n // 4)]
    base = phantom.render(rows, resolution=size // 4)
    rng = np.random.default_rng(0)
    names = []
    for k in range(n):
        big = np.asarray(
            Image.fromarray(base[k % len(base)]).resize((size, size), Image.Resampling.BICUBIC),
            dtype=np.float32,
        )
        big += rng.normal(0, 6, big.shape).astype(np.float32)
        name = f"{k:05d}.png"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(folder / name, compress_level=6)
        names.append(name)
    return names


def _decode_epoch(folder: Path, names: list[str], resolution: int, order: np.ndarray) -> float:
    """Decode + grayscale + resize each image at access, one core: images/s."""
    start = time.perf_counter()
    for k in order:
        with Image.open(folder / names[k]) as im:
            small = im.convert("L").resize((resolution, resolution), Image.Resampling.BILINEAR)
            np.asarray(small)
    return len(order) / (time.perf_counter() - start)


def _cache_epoch(array: np.ndarray, order: np.ndarray, batch: int = 64) -> float:
    """Shuffled mini-batches copied out of the memory map: images/s."""
    start = time.perf_counter()
    for i in range(0, len(order), batch):
        idx = np.sort(order[i : i + batch])
        np.ascontiguousarray(array[idx])
    return len(order) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=96, help="generated 1024×1024 PNGs")
    parser.add_argument(
        "--resolution", type=int, default=256, help="cache resolution (the paper's 256)"
    )
    parser.add_argument(
        "--render",
        type=int,
        default=1024,
        help="images rendered at the default resolution and 64×64",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        os.environ["PRUNECXR_HOME"] = str(tmp / "home")
        os.environ["PRUNECXR_CACHE"] = str(tmp / "cache")
        from prunecxr import config
        from prunecxr.data import cache, images

        res = config.load_profile("default")["resolution"]
        rdef = _phantom_throughput(res, args.render)
        print(
            f"phantom rendering {res:3d}×{res}: {rdef:8.0f} images/s (the default resolution): all 112,120 "
            f"images in {112_120 / rdef:.0f} s (goal <= 60 s)"
        )
        r64 = _phantom_throughput(64, args.render)
        print(f"phantom rendering   64×64: {r64:8.0f} images/s")
        r256 = _phantom_throughput(256, max(16, args.render // 16))
        print(f"phantom rendering 256×256: {r256:8.0f} images/s")

        folder = tmp / "pngs"
        folder.mkdir()
        start = time.perf_counter()
        names = _make_pngs(folder, args.files)
        size_mb = sum((folder / n).stat().st_size for n in names) / len(names) / 2**20
        print(
            f"generated {len(names)} PNGs of 1024×1024 ({size_mb:.2f} MB each) "
            f"in {time.perf_counter() - start:.1f} s"
        )

        order = np.random.default_rng(1).permutation(len(names))
        decode = _decode_epoch(folder, names, args.resolution, order)
        print(f"epoch, decode + resize at every access (1 core): {decode:8.1f} images/s")

        start = time.perf_counter()
        entry = cache.build_cache(
            images.FileImages(folder, tuple(names), workers=1),
            names,
            dataset="bench",
            split="train",
            resolution=args.resolution,
        )
        build = time.perf_counter() - start
        print(
            f"cache built once in {build:.1f} s ({len(names) / build:.1f} images/s, 1 core; "
            f"uses up to 4 threads by default)"
        )
        array = cache.open_cache(entry.record())
        _cache_epoch(array, order)  # the first epoch may come from disk; later ones from RAM
        cached = _cache_epoch(array, order)
        print(f"epoch, memory-mapped uint8 cache:               {cached:8.0f} images/s")
        del array
        print(f"cache / decode-every-access read speed: {cached / decode:.0f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
