"""The design of the reader study (notebook 07): which reader sees which image, and the key.

``n_readers`` readers each see ``images_per_reader`` test images (an even number): half PIEs,
half non-PIEs of ``analysis/<method>/pies.parquet``. Images are drawn with a seeded generator
from the image ids sorted, so the draw does not depend on the row order of any file. No image
is shown to two readers unless ``allow_overlap=True``; then each image is shown to as few
readers as possible (the least-used images are drawn first, ties broken at random), and never
twice to one reader. Each packet's order is shuffled with the same seed. Every shown image
(one per reader and image) gets a code such as ``K7QD-2MXA``: a random token from the seeded
generator, drawn independently of the image and of its PIE status, so a code reveals neither.

The key (``reader_study/key.csv``) maps each code to its reader, packet, position, image and
PIE status; it is kept from the readers, and answers are joined with it by code only.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .. import artifacts, paths, published

#: characters of the opaque codes (no 0/O, 1/I/L: easy to read aloud and to type)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
#: the columns of ``key.csv``
KEY_COLUMNS = ("code", "reader", "packet_id", "position", "image_id", "is_pie")
#: the two groups compared
PIE, NON_PIE = "PIE", "non-PIE"


# -- inputs --------------------------------------------------------------------------------
def load_pies(run: str, *, method: str = published.PAPER_METHOD) -> pd.DataFrame:
    """The PIE table of ``method`` in ``run`` (``analysis/<method>/pies.parquet``).

    Parameters
    ----------
    run : the run.
    method : compression method whose PIEs are studied.

    Returns
    -------
    DataFrame with ``image_id`` (str) and ``is_pie`` (bool), one row per test image.

    Raises
    ------
    FileNotFoundError
        When the file is missing; the message lists the methods that do have PIEs.
    ValueError
        When a column is missing, an image id repeats or ``is_pie`` is not boolean.
    """
    rp = paths.run_paths(run)
    path = rp.pies(method)
    if not path.exists():
        found = sorted(p.parent.name for p in (rp.root / "analysis").glob("*/pies.parquet"))
        have = ", ".join(repr(m) for m in found) if found else "none (run notebook 06_pies first)"
        raise FileNotFoundError(
            f"{path} does not exist (written by notebook 06_pies for method {method!r}); "
            f"methods with PIEs in run {run!r}: {have}"
        )
    return _check_pies(artifacts.read_pies(run, method), where=str(path))


def _check_pies(pies: pd.DataFrame, *, where: str) -> pd.DataFrame:
    missing = [c for c in ("image_id", "is_pie") if c not in pies.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; found {list(pies.columns)}")
    out = pies[["image_id", "is_pie"]].reset_index(drop=True)
    out["image_id"] = out["image_id"].astype(str)
    dup = out["image_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        image = out.at[first, "image_id"]
        raise ValueError(
            f"{where}: image_id {image!r} appears {int((out['image_id'] == image).sum())} times "
            f"(first at row {first}, counting from 0)"
        )
    values = set(pd.unique(out["is_pie"]))
    if not values <= {True, False}:
        raise ValueError(
            f"{where}: is_pie must be boolean; found values {sorted(map(str, values))}"
        )
    out["is_pie"] = out["is_pie"].astype(bool)
    return out.reset_index(drop=True)


# -- design --------------------------------------------------------------------------------
def check_integer(name: str, value, minimum: int) -> int:
    """``value`` as an int, refusing booleans, non-integers and values below ``minimum``
    (the message names the parameter ``name``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _draw_balanced(ids: np.ndarray, *, n_readers: int, k: int, rng: np.random.Generator):
    """``k`` distinct ids per reader, least-shown ids first, ties broken at random."""
    shown = np.zeros(len(ids), dtype=int)
    picks = []
    for _ in range(n_readers):
        order = np.lexsort((rng.random(len(ids)), shown))[:k]
        shown[order] += 1
        picks.append(ids[order])
    return picks


def _codes(n: int, rng: np.random.Generator) -> list[str]:
    alphabet = np.array(list(CODE_ALPHABET))
    codes: list[str] = []
    seen: set[str] = set()
    while len(codes) < n:
        chars = alphabet[rng.integers(0, len(alphabet), size=8)]
        code = "".join(chars[:4]) + "-" + "".join(chars[4:])
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def reader_ids(n_readers: int) -> list[str]:
    """``["reader-1", ..., "reader-<n>"]``: the ids used in packets, key and CSVs."""
    return [f"reader-{r}" for r in range(1, check_integer("n_readers", n_readers, 1) + 1)]


def assign_images(
    pies: pd.DataFrame,
    *,
    n_readers: int = 6,
    images_per_reader: int = 40,
    seed: int = 0,
    allow_overlap: bool = False,
    study: str = "prunecxr",
) -> pd.DataFrame:
    """Choose each reader's images, shuffle each packet and give every shown image a code.

    Parameters
    ----------
    pies : DataFrame with ``image_id`` and boolean ``is_pie`` (one row per test image).
    n_readers : number of readers R (one packet each).
    images_per_reader : images M per packet, an even number; half are PIEs.
    seed : seeds the choice, the order and the codes (non-negative integer).
    allow_overlap : let an image be shown to more than one reader when there are fewer than
        R·M/2 PIEs (or non-PIEs); each image is still shown at most once per reader.
    study : a name for the study (the run), part of each packet id.

    Returns
    -------
    The key: one row per (reader, shown image) with ``code``, ``reader``, ``packet_id``,
    ``position`` (1-based), ``image_id``, ``is_pie``; sorted by reader then position.

    Raises
    ------
    ValueError
        When there are too few PIEs or non-PIEs; the message names the parameters and
        ``allow_overlap``.
    """
    n_readers = check_integer("n_readers", n_readers, 1)
    images_per_reader = check_integer("images_per_reader", images_per_reader, 2)
    seed = check_integer("seed", seed, 0)
    if images_per_reader % 2:
        raise ValueError(
            f"images_per_reader must be even (half PIEs, half non-PIEs); got {images_per_reader}"
        )
    pies = _check_pies(pies, where="pies")
    half = images_per_reader // 2
    needed = n_readers * half
    rng = np.random.default_rng([seed, 0])

    picks = {}
    for flag, name in ((True, "PIEs"), (False, "non-PIEs")):
        ids = np.sort(pies.loc[pies["is_pie"] == flag, "image_id"].to_numpy(dtype=str))
        if len(ids) < half:
            raise ValueError(
                f"the test set has {len(ids)} {name}, fewer than images_per_reader/2 = {half} "
                f"that one packet needs (images_per_reader={images_per_reader}); lower "
                "images_per_reader"
            )
        if len(ids) < needed and not allow_overlap:
            raise ValueError(
                f"the test set has {len(ids)} {name}, but n_readers={n_readers} × "
                f"images_per_reader/2={half} = {needed} are needed to show each image to one "
                "reader only; lower n_readers or images_per_reader, or set allow_overlap=True "
                "to show some images to more than one reader"
            )
        picks[flag] = _draw_balanced(ids, n_readers=n_readers, k=half, rng=rng)

    rows = []
    for r, reader in enumerate(reader_ids(n_readers)):
        image_ids = np.concatenate([picks[True][r], picks[False][r]])
        is_pie = np.repeat([True, False], half)
        order = rng.permutation(images_per_reader)
        for position, j in enumerate(order, start=1):
            rows.append((reader, position, str(image_ids[j]), bool(is_pie[j])))
    key = pd.DataFrame(rows, columns=["reader", "position", "image_id", "is_pie"])
    # codes are drawn after the order is fixed, from their own stream: they carry no information
    key.insert(0, "code", _codes(len(key), np.random.default_rng([seed, 1])))
    packet_ids = {
        reader: f"{study}:{reader}:"
        + hashlib.sha256("|".join(group["code"]).encode()).hexdigest()[:10]
        for reader, group in key.groupby("reader", sort=False)
    }
    key.insert(2, "packet_id", key["reader"].map(packet_ids))
    return key[list(KEY_COLUMNS)]


# -- the key -------------------------------------------------------------------------------
def read_key(run: str) -> pd.DataFrame:
    """The key of ``run`` (``reader_study/key.csv``), checked."""
    path = paths.run_paths(run).reader_key
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 07_reader_study first")
    key = check_key(pd.read_csv(path, dtype=str, keep_default_na=False), where=str(path))
    artifacts.note_read(path)
    return key


def check_key(key: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """A key with the columns of :data:`KEY_COLUMNS` in order, ``is_pie`` boolean and
    ``position`` integer; refuses a missing column, a non-boolean ``is_pie`` or a repeated
    code, naming ``where`` (the file) and the row."""
    missing = [c for c in KEY_COLUMNS if c not in key.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; found {list(key.columns)}")
    key = key[list(KEY_COLUMNS)].copy()
    for col in ("code", "reader", "packet_id", "image_id"):
        key[col] = key[col].astype(str)
    if key["is_pie"].dtype != bool:
        text = key["is_pie"].astype(str).str.strip().str.lower()
        bad = ~text.isin(["true", "false"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{where}, row {i + 2}: is_pie = {key['is_pie'].iloc[i]!r} is not true/false"
            )
        key["is_pie"] = text == "true"
    key["position"] = key["position"].astype(int)
    dup = key["code"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{where}, row {i + 2}: code {key['code'].iloc[i]!r} appears twice")
    return key.reset_index(drop=True)
