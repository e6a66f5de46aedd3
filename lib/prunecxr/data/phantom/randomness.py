"""Counter-based randomness of the phantom: every number is a hash of (id, stream, counter).

So an image renders the same pixels in any batch and any order. Also the smooth random
fields and the quantum noise drawn from such seeds.
"""

from __future__ import annotations

import functools

import numpy as np

# -- counter-based randomness: a hash of (id, stream, counter) ----------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform(seeds: np.ndarray, n: int, stream: int) -> np.ndarray:
    """float32 ``[len(seeds), n]`` uniforms in [0, 1): value k of stream ``stream`` per seed."""
    counters = _splitmix(np.uint64(stream) << np.uint64(32) | np.arange(n, dtype=np.uint64))
    bits = _splitmix(seeds[:, None] ^ counters[None, :])
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


@functools.lru_cache(maxsize=16)
def _smooth_matrix(resolution: int, n: int) -> np.ndarray:
    """Interpolates an ``n``-point lattice onto ``resolution`` pixels (Gaussian weights)."""
    t = (np.arange(resolution) + 0.5) / resolution * n - 0.5
    w = np.exp(-0.5 * ((t[:, None] - np.arange(n)[None, :]) / 0.7) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    # a lattice of unit variance gives pixels of variance (Σ_k w_ik²)(Σ_l w_jl²): undo it
    w /= np.sqrt(np.mean(np.sum(w**2, axis=1)))
    return w.astype(np.float32)


def _gaussian_noise(seeds: np.ndarray, shape: tuple[int, ...], stream: int) -> np.ndarray:
    """Standard normal float32 ``[len(seeds), *shape]``, one PCG64 stream per seed."""
    out = np.empty((len(seeds),) + tuple(shape), np.float32)
    bits = np.random.PCG64()
    rng = np.random.Generator(bits)
    state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0}
    for k, seed in enumerate(seeds.tolist()):
        # PCG64 seeded directly by (seed, stream): setting its state is far cheaper than seeding
        state["state"] = {"state": seed << 64 | seed, "inc": (stream << 1) | 1}
        bits.state = state
        rng.standard_normal(dtype=np.float32, out=out[k])
    return out


@functools.lru_cache(maxsize=8)
def _noise_bank(resolution: int) -> np.ndarray:
    """A fixed standard normal texture of side ``4 R`` from which images take windows."""
    rng = np.random.Generator(np.random.PCG64(0x5EED + resolution))
    return rng.standard_normal((4 * resolution, 4 * resolution), dtype=np.float32)


def pixel_noise(seeds: np.ndarray, resolution: int) -> np.ndarray:
    """Quantum noise ``[B, R, R]``: per image, a window of :func:`_noise_bank` at an offset
    hashed from its seed, flipped and transposed by the hash too (far cheaper than drawing)."""
    bank = _noise_bank(resolution)
    u = uniform(seeds, 3, stream=9)
    span = bank.shape[0] - resolution
    offs = (u[:, :2] * span).astype(np.int64)
    flips = (u[:, 2] * 4).astype(np.int64)
    out = np.empty((len(seeds), resolution, resolution), np.float32)
    for k in range(len(seeds)):
        win = bank[offs[k, 0] : offs[k, 0] + resolution, offs[k, 1] : offs[k, 1] + resolution]
        f = flips[k]
        out[k] = win.T if f & 2 else win
        if f & 1:
            out[k] = out[k, ::-1]
    return out


def noise_field(seeds: np.ndarray, resolution: int, n: int, stream: int) -> np.ndarray:
    """A smooth random field ``[B, R, R]`` of roughly unit variance, with ``n`` lobes a side."""
    b = len(seeds)
    lattice = _gaussian_noise(seeds, (n, n), stream)
    w = _smooth_matrix(resolution, n)
    # W · L · Wᵀ for every image, as two large matrix products
    half = (lattice.reshape(b * n, n) @ w.T).reshape(b, n, resolution)
    full = w @ half.transpose(1, 0, 2).reshape(n, b * resolution)
    return np.ascontiguousarray(full.reshape(resolution, b, resolution).transpose(1, 0, 2))
