"""Keyed hashes of ids: every choice the data stage makes (split, subsample, example
images, the phantom's pixels) derives from them, never from row order or a global RNG.

A keyed hash gives each id a 64-bit number that depends only on the id and the key, so a
patient's split does not change when rows are shuffled, added or removed, and the same
image id renders the same phantom pixels in any batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def id_seeds(ids: Sequence, salt: str) -> np.ndarray:
    """A 64-bit seed per id: BLAKE2b (8-byte digest) of ``str(id)`` keyed with ``salt``.

    Returns
    -------
    uint64 array ``[N]``, one value per id in order.
    """
    key = salt.encode()
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(str(i).encode(), digest_size=8, key=key).digest(), "little"
            )
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def hash_rank(ids: Sequence, key: str) -> np.ndarray:
    """Positions that sort ``ids`` by their keyed hash (ties impossible in practice).

    Returns
    -------
    int array ``[N]``: ``[ids[k] for k in hash_rank(ids, key)]`` is the hash order.
    """
    return np.argsort(id_seeds(list(ids), key), kind="stable")
