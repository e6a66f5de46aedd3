"""The reader study of notebook 07: packets for radiologists, and the analysis of their answers.

Holste et al. (MICCAI 2023, Fig. 6) asked six radiologists about 240 test images, half of them
pruning-identified exemplars (PIEs), and compared PIEs with non-PIEs by Kruskal–Wallis tests.
The responses were never released, and the authors' analysis script decided which image was a
PIE by its row position. This module lets another group run the study for real: it writes one
offline HTML form per reader, reads the CSVs those forms export, joins them with a separate key
*by opaque code*, and tests each question.

Study design
------------
``n_readers`` readers each see ``images_per_reader`` test images (an even number): half PIEs,
half non-PIEs of ``analysis/<method>/pies.parquet``. Images are drawn with a seeded generator
from the image ids sorted, so the draw does not depend on the row order of any file. No image
is shown to two readers unless ``allow_overlap=True``; then each image is shown to as few
readers as possible (the least-used images are drawn first, ties broken at random), and never
twice to one reader. Each packet's order is shuffled with the same seed. Every shown image
(one per reader and image) gets a code such as ``K7QD-2MXA``: a random token from the seeded
generator, drawn independently of the image and of its PIE status, so a code reveals neither.

Packets
-------
One self-contained HTML file per reader (images embedded as base64 PNG, no script or style
from elsewhere), built from ``templates/reader_packet.html``. Each image is shown with its
dataset labels and the three questions of :data:`QUESTIONS`. Answers are kept in the browser's
``localStorage`` under the packet id (so they survive reloading and closing the page), and a
"Download CSV" button exports them. PIE status, image ids and the method never appear in a
packet. Packets of real data contain patient images; they are written into the run directory
only, never into ``figures/`` or the report.

Files (``runs/<run>/reader_study/``)
------------------------------------
==========================  ===================================================================
``packets/reader-<r>.html`` the form for reader ``reader-<r>`` (``r`` = 1 … ``n_readers``)
``key.csv``                 one row per shown image: ``code``, ``reader``, ``packet_id``,
                            ``position`` (1-based order in the packet), ``image_id``,
                            ``is_pie``. Keep it from the readers.
``study.json``              the design parameters, packet ids and counts
``responses/``              the readers' exported CSVs (real answers; put them here)
``simulated/reader-<r>.csv``  simulated answers, in the same format, written only when
                            ``responses/`` holds no CSV; never mixed with real ones
``answers.parquet``         the validated answers joined with the key: ``reader``, ``code``,
                            ``image_id``, ``is_pie``, ``group``, ``agree`` (1 yes, 0 no),
                            ``quality``, ``difficulty`` (NaN = unanswered), ``file``, ``row``,
                            ``source`` (``readers`` or ``simulated``)
``tests.parquet``           one row per question: ``question``, ``title``, ``n_pie``,
                            ``n_non_pie``, ``mean_pie``, ``sd_pie``, ``mean_non_pie``,
                            ``sd_non_pie``, ``kw_h``, ``kw_p`` (Kruskal–Wallis), ``mwu_u``,
                            ``mwu_p`` (Mann–Whitney U, two-sided), ``welch_t``, ``welch_p``
                            (Welch's t), ``n_readers``, ``n_answers``, ``source``
==========================  ===================================================================

Response CSV
------------
Columns ``reader``, ``packet_id``, ``code``, ``agree`` (``yes``/``no``), ``quality`` and
``difficulty`` (integers 1–5); an empty cell is an unanswered question. ``packet_id`` may be
left out by hand-made files; when present it must match the key. :func:`read_responses`
refuses (with :class:`ResponseError`, naming file and row) unknown codes, codes of another
reader's packet, answers out of range, a code answered twice (in one file or across files),
an empty file and a reader who answered nothing. Rows are joined with the key by ``code``;
row order is never used.

Statistics
----------
Each answer is one observation (as in the paper, where each image had one reader). For each
question the PIE and non-PIE answers are compared by the Kruskal–Wallis H test (the paper's),
the two-sided Mann–Whitney U test and Welch's unequal-variance t test (scipy). Means and
sample SDs (ddof = 1) per group are what Fig. 6 plots. With overlapping packets an image can
contribute several answers; the tests then treat them as independent, which they are not.

Simulation model (every run without real responses)
---------------------------------------------------
:class:`SimulationModel` holds ASSUMPTIONS, not the paper's data (there is none to fit). For
each distinct image ``i`` it draws a latent difficulty ``d_i = image_sd·z + pie_effect·PIE_i``
and a latent quality ``q_i = image_sd·z' − pie_effect·PIE_i`` (``z, z'`` independent standard
normals); for each reader ``r`` and question ``k`` a bias ``b_rk ~ N(0, reader_sd²)``. Then

* difficulty = clip(round(``rating_center`` + d_i + b_r,difficulty + e), 1, 5),
* quality = clip(round(``rating_center`` + q_i + b_r,quality + e), 1, 5),
  with ``e ~ N(0, noise_sd²)`` per answer, and
* agree = "yes" with probability logistic(``agree_logit`` − ``agree_slope``·d_i + b_r,agree).

The defaults (``pie_effect`` 0.5, ``image_sd`` 1, ``reader_sd`` 0.3, ``noise_sd`` 0.5,
``rating_center`` 3 = the middle of the scale, ``agree_logit`` 0 = even odds, ``agree_slope``
1) are round numbers chosen to exercise the analysis, and every figure and table made from
simulated answers says SIMULATED in its title. All draws come from a generator seeded by
``seed``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io as _bytesio
import json
import math
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from .. import artifacts, config, fmt, paths

#: the method whose PIEs are studied unless told otherwise (the paper's)
DEFAULT_METHOD = "global_l1"
#: columns of ``labels.parquet`` that are not classes
_LABEL_META = ("image_id", "patient_id", "split")
#: characters of the opaque codes (no 0/O, 1/I/L: easy to read aloud and to type)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
#: the column order of a response CSV, as exported by a packet
RESPONSE_COLUMNS = ("reader", "packet_id", "code", "agree", "quality", "difficulty")
KEY_COLUMNS = ("code", "reader", "packet_id", "position", "image_id", "is_pie")
PIE, NON_PIE = "PIE", "non-PIE"
#: the word every figure and table made from simulated answers carries in its title
SIMULATED = "SIMULATED"
TEMPLATE_FILE = Path(__file__).with_name("templates") / "reader_packet.html"
PUBLISHED_FILE = Path(__file__).with_name("published.toml")


@dataclass(frozen=True)
class Question:
    """One question of the form.

    ``name`` is the CSV column; ``choices`` are ``(value written to the CSV, text shown)``;
    ``numeric`` maps a CSV value to the number analysed.
    """

    name: str
    title: str
    prompt: str
    choices: tuple[tuple[str, str], ...]
    numeric: Mapping[str, float] = field(repr=False)
    axis: str


def _scale(low: str, high: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(v), f"{v}" + (f" ({low})" if v == 1 else f" ({high})" if v == 5 else ""))
                 for v in range(1, 6))


#: The three questions of the paper's form (wording and anchors of the authors' script).
QUESTIONS: tuple[Question, ...] = (
    Question(
        name="agree",
        title="Label agreement",
        prompt="Do you fully agree with the given label(s)?",
        choices=(("yes", "Yes"), ("no", "No")),
        numeric={"yes": 1.0, "no": 0.0},
        axis="share answering yes (0 = no, 1 = yes)",
    ),
    Question(
        name="quality",
        title="Image quality",
        prompt="How would you rate the image quality?",
        choices=_scale("poor", "excellent"),
        numeric={str(v): float(v) for v in range(1, 6)},
        axis="rating (1 = poor … 5 = excellent)",
    ),
    Question(
        name="difficulty",
        title="Diagnosis difficulty",
        prompt="How difficult is it to diagnose this image?",
        choices=_scale("very easy", "very difficult"),
        numeric={str(v): float(v) for v in range(1, 6)},
        axis="rating (1 = very easy … 5 = very difficult)",
    ),
)
QUESTION_NAMES = tuple(q.name for q in QUESTIONS)


class ResponseError(ValueError):
    """Response CSVs that cannot be analysed; ``problems`` lists each one (file and row)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = self.problems[:25]
        more = len(self.problems) - len(shown)
        text = f"{len(self.problems)} problem(s) in the response files:\n  " + "\n  ".join(shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


# -- inputs --------------------------------------------------------------------------------
def load_pies(run: str, *, method: str = DEFAULT_METHOD) -> pd.DataFrame:
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
    pies = pd.read_parquet(path)
    return _check_pies(pies, where=str(path))


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
        raise ValueError(f"{where}: is_pie must be boolean; found values {sorted(map(str, values))}")
    out["is_pie"] = out["is_pie"].astype(bool)
    return out.reset_index(drop=True)


# -- design --------------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int) -> int:
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
    return [f"reader-{r}" for r in range(1, _check_int("n_readers", n_readers, 1) + 1)]


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
    n_readers = _check_int("n_readers", n_readers, 1)
    images_per_reader = _check_int("images_per_reader", images_per_reader, 2)
    seed = _check_int("seed", seed, 0)
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
        reader: f"{study}:{reader}:" + hashlib.sha256(
            "|".join(group["code"]).encode()
        ).hexdigest()[:10]
        for reader, group in key.groupby("reader", sort=False)
    }
    key.insert(2, "packet_id", key["reader"].map(packet_ids))
    return key[list(KEY_COLUMNS)]


def read_key(run: str) -> pd.DataFrame:
    """The key of ``run`` (``reader_study/key.csv``), checked."""
    path = paths.run_paths(run).reader_key
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 07_reader_study first")
    return _check_key(pd.read_csv(path, dtype=str, keep_default_na=False), where=str(path))


def _check_key(key: pd.DataFrame, *, where: str) -> pd.DataFrame:
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
            raise ValueError(f"{where}, row {i + 2}: is_pie = {key['is_pie'].iloc[i]!r} is not true/false")
        key["is_pie"] = text == "true"
    key["position"] = key["position"].astype(int)
    dup = key["code"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{where}, row {i + 2}: code {key['code'].iloc[i]!r} appears twice")
    return key.reset_index(drop=True)


# -- packets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PacketItem:
    """One image of a packet: its code, the labels shown with it, the image as PNG."""

    code: str
    labels: tuple[str, ...]
    png: bytes
    size: tuple[int, int] = (0, 0)  # (height, width) in pixels


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 image ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) as PNG (no metadata)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(
            f"an image must be uint8 [H, W] or [H, W, 3]; got {arr.dtype} {list(arr.shape)}"
        )
    from PIL import Image

    buf = _bytesio.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _fill(template: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        token = "{{" + name + "}}"
        if token not in template:
            raise ValueError(f"{TEMPLATE_FILE}: placeholder {token} is missing")
        template = template.replace(token, value)
    if "{{" in template.split("<main>")[0]:
        raise ValueError(f"{TEMPLATE_FILE}: an unfilled placeholder remains")
    return template


def _item_html(item: PacketItem, number: int, total: int) -> str:
    code = html.escape(item.code, quote=True)
    data = base64.b64encode(item.png).decode("ascii")
    small = ' class="small"' if 0 < max(item.size) < 256 else ""
    labels = ", ".join(html.escape(x) for x in item.labels) or "(no label)"
    parts = [
        f'<section class="item" id="item-{code}" data-code="{code}">',
        f'<h2>Image {number} of {total}<span class="code">code {code}</span></h2>',
        '<div class="body">',
        f'<img{small} src="data:image/png;base64,{data}" alt="Chest X-ray {number}">',
        '<div class="questions">',
        f'<p class="labels"><b>Given label(s):</b> {labels}</p>',
    ]
    for k, q in enumerate(QUESTIONS, start=1):
        parts.append(f'<fieldset data-question="{q.name}"><legend>{k}. {html.escape(q.prompt)}</legend>')
        for value, text in q.choices:
            parts.append(
                f'<label><input type="radio" name="{code}:{q.name}" value="{html.escape(value)}">'
                f" {html.escape(text)}</label>"
            )
        parts.append("</fieldset>")
    parts += ["</div>", "</div>", "</section>"]
    return "\n".join(parts)


def render_packet(
    items: Sequence[PacketItem],
    *,
    reader: str,
    packet_id: str,
    title: str = "Chest X-ray reader study",
) -> str:
    """The HTML form of one reader: self-contained, offline, answers kept in localStorage.

    Parameters
    ----------
    items : the images in the order shown.
    reader : the reader id written into every exported row.
    packet_id : identifies this packet; answers are stored in the browser under it.
    title : heading of the page.

    Returns
    -------
    The complete HTML document (no external resources).
    """
    if not items:
        raise ValueError(f"packet {packet_id!r} has no image")
    meta = {
        "reader": reader,
        "packet_id": packet_id,
        "codes": [it.code for it in items],
        "questions": list(QUESTION_NAMES),
        "filename": f"{reader}_responses.csv",
    }
    # '<' escaped so no string can close the <script> element
    meta_json = json.dumps(meta).replace("<", "\\u003c")
    body = "\n".join(_item_html(it, i, len(items)) for i, it in enumerate(items, start=1))
    template = TEMPLATE_FILE.read_text(encoding="utf-8")
    return _fill(
        template,
        {
            "TITLE": html.escape(title),
            "READER": html.escape(reader),
            "PACKET_ID": html.escape(packet_id),
            "N_ITEMS": str(len(items)),
            "PACKET_META": meta_json,
            "ITEMS": body,
        },
    )


def _class_columns(labels: pd.DataFrame) -> list[str]:
    return [c for c in labels.columns if c not in _LABEL_META]


def _shown_labels(run: str, image_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    rp = paths.run_paths(run)
    labels = artifacts.read_parquet(rp.labels, "notebook 01_data")
    labels = labels.assign(image_id=labels["image_id"].astype(str)).set_index("image_id")
    wanted = list(dict.fromkeys(image_ids))
    missing = [i for i in wanted if i not in labels.index]
    if missing:
        raise ValueError(
            f"{rp.labels}: {len(missing)} image(s) of the study are not there, e.g. {missing[:3]}"
        )
    classes = _class_columns(labels)
    values = labels.loc[wanted, classes].to_numpy()
    return {i: tuple(c for c, v in zip(classes, row) if v == 1) for i, row in zip(wanted, values)}


def _test_images(run: str, split: Any, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
    if split is None:
        from .. import data  # the data engineer's module; imported only when packets are made

        split = data.open_split(run, "test")
    index = {str(i): k for k, i in enumerate(split.image_ids)}
    missing = [i for i in dict.fromkeys(image_ids) if i not in index]
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) of the study are not in the test split of run {run!r}, "
            f"e.g. {missing[:3]}"
        )
    return {i: np.asarray(split.images[index[i]]) for i in dict.fromkeys(image_ids)}


def write_study(
    run: str,
    key: pd.DataFrame,
    *,
    parameters: Mapping[str, Any] | None = None,
    split: Any = None,
    title: str = "Chest X-ray reader study",
) -> dict[str, Path]:
    """Write the packets, ``key.csv`` and ``study.json`` of ``run``.

    Parameters
    ----------
    run : the run; files go to ``runs/<run>/reader_study/``.
    key : from :func:`assign_images`.
    parameters : the design parameters, recorded in ``study.json``.
    split : the test split (``.images`` uint8 ``[N, H, W]``, ``.image_ids``); by default
        ``prunecxr.data.open_split(run, "test")``.
    title : heading of every packet; on a run with synthetic pixels it says PHANTOM.

    Returns
    -------
    ``{reader: path of its packet}``.

    Raises
    ------
    FileExistsError
        When ``responses/`` already holds readers' CSVs and the new key differs from the one
        they answered: overwriting it would orphan their answers.
    """
    rp = paths.run_paths(run)
    key = _check_key(key, where="key")
    if rp.reader_key.exists() and _real_response_files(rp.reader_responses):
        old = read_key(run)
        if not old.equals(key):
            raise FileExistsError(
                f"{rp.reader_responses} holds readers' answers to the packets of {rp.reader_key}, "
                "and these parameters give a different key; re-run with the parameters in "
                f"{rp.reader_manifest}, or move the responses away first"
            )
    if config.is_synthetic(run):
        title += " — PHANTOM images (synthetic pixels: for trying the form, not for reading)"
    labels = _shown_labels(run, key["image_id"])
    images = _test_images(run, split, list(key["image_id"]))
    pngs = {i: png_bytes(img) for i, img in images.items()}

    written = {}
    for reader, group in key.groupby("reader", sort=False):
        group = group.sort_values("position")
        items = [
            PacketItem(code=c, labels=labels[i], png=pngs[i], size=images[i].shape[:2])
            for c, i in zip(group["code"], group["image_id"])
        ]
        text = render_packet(items, reader=reader, packet_id=group["packet_id"].iloc[0], title=title)
        written[reader] = artifacts.write_text(rp.reader_packet(reader), text)
    # packets of readers that are no longer in the design would be mistaken for current ones
    for old in rp.reader_packet("x").parent.glob("reader-*.html"):
        if old.stem not in written:
            old.unlink()
    artifacts.write_csv(rp.reader_key, key)
    counts = key["image_id"].value_counts()
    artifacts.write_json(
        rp.reader_manifest,
        {
            "run": run,
            "parameters": dict(parameters or {}),
            "readers": {
                reader: {
                    "packet_id": g["packet_id"].iloc[0],
                    "file": str(written[reader].relative_to(rp.reader_study)),
                    "n_images": int(len(g)),
                    "n_pie": int(g["is_pie"].sum()),
                }
                for reader, g in key.groupby("reader", sort=False)
            },
            "n_shown": int(len(key)),
            "n_distinct_images": int(len(counts)),
            "max_readers_per_image": int(counts.max()),
            "created": config.now(),
        },
    )
    return written


# -- simulation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationModel:
    """ASSUMED generator of answers for runs without real ones; not fitted to any data.

    See the module docstring for the model. Latent effects are in units of the rating scale.
    """

    pie_effect: float = 0.5  # PIEs: latent difficulty up, latent quality down by this much
    image_sd: float = 1.0  # SD of the per-image latent difficulty and quality
    reader_sd: float = 0.3  # SD of each reader's bias, per question
    noise_sd: float = 0.5  # SD of per-answer noise on the 1-5 ratings
    rating_center: float = 3.0  # mean rating of an average image (the middle of 1-5)
    agree_logit: float = 0.0  # log-odds of "yes" for an average image and reader
    agree_slope: float = 1.0  # decrease of that log-odds per unit of latent difficulty


def simulate_responses(
    key: pd.DataFrame, *, seed: int = 0, model: SimulationModel = SimulationModel()
) -> pd.DataFrame:
    """Answers to every packet of ``key`` drawn from ``model`` (see the module docstring).

    Parameters
    ----------
    key : from :func:`assign_images` or :func:`read_key`.
    seed : seeds every draw.
    model : the assumptions.

    Returns
    -------
    DataFrame in the response CSV format (:data:`RESPONSE_COLUMNS`), one row per key row,
    by reader and position; every question answered.
    """
    key = _check_key(key, where="key")
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, 2])
    images = np.sort(key["image_id"].unique())
    pie_of = key.drop_duplicates("image_id").set_index("image_id")["is_pie"]
    is_pie = pie_of.loc[images].to_numpy(dtype=float)
    z = rng.standard_normal((2, len(images)))
    difficulty = dict(zip(images, model.image_sd * z[0] + model.pie_effect * is_pie))
    quality = dict(zip(images, model.image_sd * z[1] - model.pie_effect * is_pie))
    readers = sorted(key["reader"].unique())
    bias = dict(zip(readers, model.reader_sd * rng.standard_normal((len(readers), 3))))

    key = key.sort_values(["reader", "position"], key=_reader_order).reset_index(drop=True)
    d = key["image_id"].map(difficulty).to_numpy()
    q = key["image_id"].map(quality).to_numpy()
    b = np.stack([bias[r] for r in key["reader"]])
    noise = model.noise_sd * rng.standard_normal((2, len(key)))
    logit = model.agree_logit - model.agree_slope * d + b[:, 0]
    agree = rng.random(len(key)) < 1.0 / (1.0 + np.exp(-logit))

    def rating(latent, k, e):
        return np.clip(np.rint(model.rating_center + latent + b[:, k] + e), 1, 5).astype(int)

    return pd.DataFrame(
        {
            "reader": key["reader"],
            "packet_id": key["packet_id"],
            "code": key["code"],
            "agree": np.where(agree, "yes", "no"),
            "quality": rating(q, 1, noise[0]),
            "difficulty": rating(d, 2, noise[1]),
        }
    )[list(RESPONSE_COLUMNS)]


def _reader_order(col: pd.Series) -> pd.Series:
    """Sort ``reader-10`` after ``reader-9``."""
    if col.name != "reader":
        return col
    return col.str.extract(r"(\d+)$")[0].astype(float).fillna(-1)


def write_simulated(run: str, responses: pd.DataFrame) -> list[Path]:
    """Write simulated answers as ``reader_study/simulated/<reader>.csv`` (one per reader)."""
    folder = paths.run_paths(run).reader_simulated
    written = []
    for reader, group in responses.groupby("reader", sort=False):
        written.append(artifacts.write_csv(folder / f"{reader}.csv", group))
    for old in folder.glob("*.csv"):
        if old not in written:
            old.unlink()
    return written


def _real_response_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv")) if folder.is_dir() else []


@dataclass(frozen=True)
class ResponseFiles:
    """The answer files an analysis reads, and whether they are simulated."""

    files: tuple[Path, ...]
    simulated: bool
    folder: Path


def collect_responses(
    run: str,
    key: pd.DataFrame,
    *,
    responses_dir: str = "",
    seed: int = 0,
    model: SimulationModel = SimulationModel(),
) -> ResponseFiles:
    """Find the readers' CSVs, or simulate answers when there are none.

    Parameters
    ----------
    run : the run.
    key : the study's key.
    responses_dir : folder of readers' CSVs, absolute or relative to ``reader_study/``.
        ``""`` means ``reader_study/responses/``: its CSVs are used when there are any,
        otherwise answers are simulated from ``model`` and written to ``reader_study/simulated/``.
        A folder named explicitly must hold at least one CSV.
    seed, model : for :func:`simulate_responses`.
    """
    rp = paths.run_paths(run)
    if responses_dir:
        folder = Path(responses_dir).expanduser()
        folder = folder if folder.is_absolute() else rp.reader_study / folder
        files = _real_response_files(folder)
        if not files:
            raise FileNotFoundError(
                f"responses_dir={responses_dir!r}: {folder} holds no .csv file; put the readers' "
                "exported CSVs there, or leave responses_dir empty to simulate answers"
            )
        return ResponseFiles(tuple(files), simulated=False, folder=folder)
    files = _real_response_files(rp.reader_responses)
    if files:
        return ResponseFiles(tuple(files), simulated=False, folder=rp.reader_responses)
    simulated = simulate_responses(key, seed=seed, model=model)
    written = write_simulated(run, simulated)
    return ResponseFiles(tuple(written), simulated=True, folder=rp.reader_simulated)


# -- reading and checking answers ----------------------------------------------------------
def _cell(record: Mapping[str, Any], column: str) -> str:
    """A CSV cell as stripped text; '' for a missing cell (a short row)."""
    value = record.get(column, "")
    return value.strip() if isinstance(value, str) else ""


def _parse_answer(q: Question, raw: str) -> tuple[float, str | None]:
    text = raw.strip()
    if text == "":
        return math.nan, None
    if q.name == "agree":
        value = q.numeric.get(text.lower())
        if value is None:
            return math.nan, f"{q.name} = {raw!r} is not yes or no"
        return value, None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (number.is_integer() and str(int(number)) in q.numeric):
        return math.nan, f"{q.name} = {raw!r} is not an integer from 1 to 5"
    return float(number), None


def read_responses(files: Iterable[str | Path], key: pd.DataFrame, *, source: str = "readers") -> pd.DataFrame:
    """Read, check and join readers' CSVs with the key, by code.

    Parameters
    ----------
    files : response CSVs (any number, any row order; one or more readers each).
    key : the study's key (:func:`read_key`).
    source : recorded in the ``source`` column (``"readers"`` or ``"simulated"``).

    Returns
    -------
    One row per answered image: ``reader``, ``code``, ``image_id``, ``is_pie``, ``group``
    (``"PIE"``/``"non-PIE"``), one float column per question (``agree`` 1 = yes, 0 = no;
    ratings 1–5; NaN = unanswered), ``file``, ``row`` (line in the file, header = 1),
    ``source``. Sorted by reader and position.

    Raises
    ------
    ResponseError
        Listing every problem found, each with its file and row: unreadable file, missing
        column, empty file, empty or unknown code, a code of another reader's packet or
        packet version, an answer out of range, a code answered twice, a reader who answered
        nothing.
    """
    key = _check_key(key, where="key")
    by_code = key.set_index("code")
    problems: list[str] = []
    seen: dict[str, tuple[str, int]] = {}
    rows: list[dict[str, Any]] = []
    files = [Path(f) for f in files]
    if not files:
        raise ResponseError(["no response file was given"])
    required = [c for c in RESPONSE_COLUMNS if c != "packet_id"]
    for path in files:
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except FileNotFoundError:
            problems.append(f"{path}: no such file")
            continue
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            problems.append(f"{path}: cannot be read as CSV ({err})")
            continue
        df.columns = [str(c).strip().lower() for c in df.columns]
        missing = [c for c in required if c not in df.columns]
        if missing:
            problems.append(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
            continue
        if df.empty:
            problems.append(f"{path}: no rows (a reader who answered nothing)")
            continue
        valid: dict[str, int] = {}
        answered: dict[str, int] = {}
        for i, rec in enumerate(df.to_dict("records")):
            line = i + 2
            where = f"{path}, row {line}"
            code = _cell(rec, "code").upper()
            reader = _cell(rec, "reader")
            if not code:
                problems.append(f"{where}: empty code")
                continue
            if code not in by_code.index:
                problems.append(f"{where}: unknown code {code!r} (not in this study's key)")
                continue
            expected = by_code.at[code, "reader"]
            if reader != expected:
                problems.append(
                    f"{where}: code {code!r} belongs to the packet of {expected!r}, "
                    f"but the row says reader {reader!r}"
                )
                continue
            packet = _cell(rec, "packet_id")
            if packet and packet != by_code.at[code, "packet_id"]:
                problems.append(
                    f"{where}: packet_id {packet!r} is not the current packet of {expected!r} "
                    f"({by_code.at[code, 'packet_id']!r}); were the packets made again?"
                )
                continue
            if code in seen:
                first_path, first_line = seen[code]
                problems.append(
                    f"{where}: code {code!r} answered again (first in {first_path}, row {first_line})"
                )
                continue
            seen[code] = (str(path), line)
            valid[reader] = valid.get(reader, 0) + 1
            row: dict[str, Any] = {"code": code, "file": path.name, "row": line}
            for q in QUESTIONS:
                value, problem = _parse_answer(q, _cell(rec, q.name))
                if problem:
                    problems.append(f"{where}: {problem}")
                row[q.name] = value
            if any(not math.isnan(row[q]) for q in QUESTION_NAMES):
                answered[reader] = answered.get(reader, 0) + 1
            rows.append(row)
        for reader in valid:
            if not answered.get(reader):
                problems.append(
                    f"{path}: reader {reader!r} answered nothing (every answer cell is empty)"
                )
    if problems:
        raise ResponseError(problems)
    answers = pd.DataFrame(rows)
    joined = answers.merge(key, on="code", how="left", validate="one_to_one")
    joined["group"] = np.where(joined["is_pie"], PIE, NON_PIE)
    joined["source"] = source
    joined = joined.sort_values(["reader", "position"], key=_reader_order)
    cols = ["reader", "code", "image_id", "is_pie", "group", *QUESTION_NAMES, "file", "row", "source"]
    return joined[cols].reset_index(drop=True)


def coverage(answers: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Per reader: images in the packet, rows returned, images with every question answered."""
    key = _check_key(key, where="key")
    shown = key.groupby("reader").size().rename("n_images")
    returned = answers.groupby("reader").size().rename("n_returned")
    complete = answers.dropna(subset=list(QUESTION_NAMES)).groupby("reader").size().rename("n_complete")
    out = pd.concat([shown, returned, complete], axis=1).fillna(0).astype(int).reset_index()
    out = out.rename(columns={"index": "reader"})
    return out.sort_values("reader", key=_reader_order).reset_index(drop=True)


# -- statistics ----------------------------------------------------------------------------
def _test(fn, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    if len(a) < 2 or len(b) < 2 or np.ptp(np.concatenate([a, b])) == 0:
        return math.nan, math.nan  # undefined: too few answers, or every answer identical
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = fn(a, b)
    return float(res.statistic), float(res.pvalue)


def compare_groups(answers: pd.DataFrame) -> pd.DataFrame:
    """Compare PIEs with non-PIEs on each question (Fig. 6 and its P values).

    Parameters
    ----------
    answers : from :func:`read_responses` (``is_pie`` from the key, joined by code).

    Returns
    -------
    One row per question of :data:`QUESTIONS`: ``question``, ``title``, ``n_pie``,
    ``n_non_pie`` (answered), ``mean_pie``, ``sd_pie``, ``mean_non_pie``, ``sd_non_pie``
    (sample SD, ddof = 1), ``kw_h``, ``kw_p`` (Kruskal–Wallis H test, as in the paper),
    ``mwu_u``, ``mwu_p`` (Mann–Whitney U of the PIE answers, two-sided), ``welch_t``,
    ``welch_p`` (Welch's t, PIE minus non-PIE), ``n_readers``, ``n_answers``, ``source``.
    A test is NaN when a group has fewer than 2 answers or all answers are identical.
    """
    missing = [c for c in ("is_pie", "reader", *QUESTION_NAMES) if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack column(s) {missing}; use read_responses()")
    is_pie = answers["is_pie"].astype(bool).to_numpy()
    source = ",".join(sorted(answers["source"].unique())) if "source" in answers else "readers"
    rows = []
    for q in QUESTIONS:
        values = answers[q.name].to_numpy(dtype=float)
        ok = ~np.isnan(values)
        a, b = values[ok & is_pie], values[ok & ~is_pie]
        kw = _test(scipy.stats.kruskal, a, b)
        mwu = _test(lambda x, y: scipy.stats.mannwhitneyu(x, y, alternative="two-sided"), a, b)
        welch = _test(lambda x, y: scipy.stats.ttest_ind(x, y, equal_var=False), a, b)
        rows.append(
            {
                "question": q.name,
                "title": q.title,
                "n_pie": int(len(a)),
                "n_non_pie": int(len(b)),
                "mean_pie": float(a.mean()) if len(a) else math.nan,
                "sd_pie": float(a.std(ddof=1)) if len(a) > 1 else math.nan,
                "mean_non_pie": float(b.mean()) if len(b) else math.nan,
                "sd_non_pie": float(b.std(ddof=1)) if len(b) > 1 else math.nan,
                "kw_h": kw[0],
                "kw_p": kw[1],
                "mwu_u": mwu[0],
                "mwu_p": mwu[1],
                "welch_t": welch[0],
                "welch_p": welch[1],
                "n_readers": int(answers["reader"].nunique()),
                "n_answers": int(ok.sum()),
                "source": source,
            }
        )
    return pd.DataFrame(rows)


def write_results(run: str, answers: pd.DataFrame, tests: pd.DataFrame) -> dict[str, Path]:
    """Write ``answers.parquet`` and ``tests.parquet`` of ``run``."""
    rp = paths.run_paths(run)
    return {
        "answers": artifacts.write_parquet(rp.reader_answers, answers),
        "tests": artifacts.write_parquet(rp.reader_tests, tests),
    }


# -- presentation --------------------------------------------------------------------------
def headline(text: str, *, simulated: bool) -> str:
    """``text``, prefixed with SIMULATED when the answers are simulated."""
    return f"{SIMULATED} answers, not radiologists': {text}" if simulated else text


def published() -> pd.DataFrame:
    """The paper's reader-study results (``reader_study_published.toml``), one row per question.

    Columns ``question``, ``pie``, ``non_pie``, ``p_kruskal``, ``source``.
    """
    with open(PUBLISHED_FILE, "rb") as fh:
        table = tomllib.load(fh)
    source = table.get("source", "")
    rows = []
    for q in QUESTIONS:
        if q.name not in table:
            raise ValueError(f"{PUBLISHED_FILE}: no table [{q.name}]")
        entry = table[q.name]
        missing = [c for c in ("pie", "non_pie", "p_kruskal") if c not in entry]
        if missing:
            raise ValueError(f"{PUBLISHED_FILE}: [{q.name}] lacks {missing}")
        rows.append({"question": q.name, **{c: float(entry[c]) for c in ("pie", "non_pie", "p_kruskal")},
                     "source": source})
    return pd.DataFrame(rows)


def _value(question: str, x) -> str:
    return fmt.pct(x, 1) if question == "agree" else fmt.num(x, 2)


def paper_comparison(tests: pd.DataFrame, *, simulated: bool) -> pd.DataFrame:
    """This study's group means and Kruskal–Wallis P beside the paper's, formatted.

    Parameters
    ----------
    tests : from :func:`compare_groups`.
    simulated : whether the answers are simulated; the column names then say so.

    Returns
    -------
    One row per question, strings formatted by :mod:`prunecxr.fmt` (agreement as a
    percentage, ratings with 2 decimals).
    """
    ours = SIMULATED if simulated else "This study"
    paper = published().set_index("question")
    rows = []
    for _, t in tests.iterrows():
        q = t["question"]
        p = paper.loc[q]
        rows.append(
            {
                "Question": t["title"],
                "Paper: PIE": _value(q, p["pie"]),
                "Paper: non-PIE": _value(q, p["non_pie"]),
                "Paper: Kruskal–Wallis": fmt.pvalue(p["p_kruskal"]),
                f"{ours}: PIE": _value(q, t["mean_pie"]),
                f"{ours}: non-PIE": _value(q, t["mean_non_pie"]),
                f"{ours}: Kruskal–Wallis": fmt.pvalue(t["kw_p"]),
                f"{ours}: n (PIE / non-PIE)": f"{t['n_pie']} / {t['n_non_pie']}",
            }
        )
    return pd.DataFrame(rows)


def tests_table(tests: pd.DataFrame) -> pd.DataFrame:
    """The three tests per question, formatted (statistic and P)."""
    rows = []
    for _, t in tests.iterrows():
        rows.append(
            {
                "Question": t["title"],
                "PIE mean ± SD": f"{_value(t['question'], t['mean_pie'])} ± {_value(t['question'], t['sd_pie'])}",
                "non-PIE mean ± SD": (
                    f"{_value(t['question'], t['mean_non_pie'])} ± {_value(t['question'], t['sd_non_pie'])}"
                ),
                "Kruskal–Wallis": f"H = {fmt.num(t['kw_h'])}, {fmt.pvalue(t['kw_p'])}",
                "Mann–Whitney": f"U = {fmt.num(t['mwu_u'], 1)}, {fmt.pvalue(t['mwu_p'])}",
                "Welch's t": f"t = {fmt.num(t['welch_t'])}, {fmt.pvalue(t['welch_p'])}",
            }
        )
    return pd.DataFrame(rows)


def figure_data(tests: pd.DataFrame) -> pd.DataFrame:
    """What Fig. 6 plots, long format: ``question``, ``group``, ``n``, ``mean``, ``sd``,
    ``paper_mean``, ``kw_p``, ``source``."""
    paper = published().set_index("question")
    rows = []
    for _, t in tests.iterrows():
        for group, suffix, pcol in ((PIE, "pie", "pie"), (NON_PIE, "non_pie", "non_pie")):
            rows.append(
                {
                    "question": t["question"],
                    "group": group,
                    "n": int(t[f"n_{suffix}"]),
                    "mean": t[f"mean_{suffix}"],
                    "sd": t[f"sd_{suffix}"],
                    "paper_mean": paper.at[t["question"], pcol],
                    "kw_p": t["kw_p"],
                    "source": t["source"],
                }
            )
    return pd.DataFrame(rows)


def fig6(data: pd.DataFrame, *, simulated: bool):
    """Fig. 6: mean ± SD of each question for PIEs and non-PIEs, the paper's means beside.

    Parameters
    ----------
    data : from :func:`figure_data`.
    simulated : whether the answers are simulated; the title then begins with SIMULATED.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    by_q = {q: g.set_index("group") for q, g in data.groupby("question", sort=False)}
    subtitles = [
        f"{q.title}<br><sup>Kruskal–Wallis {fmt.pvalue(by_q[q.name]['kw_p'].iloc[0])}</sup>"
        for q in QUESTIONS
    ]
    fig = make_subplots(rows=1, cols=len(QUESTIONS), subplot_titles=subtitles, horizontal_spacing=0.08)
    groups = [PIE, NON_PIE]
    ours = "simulated" if simulated else "this study"
    for col, q in enumerate(QUESTIONS, start=1):
        g = by_q[q.name].loc[groups]
        fig.add_trace(
            go.Scatter(
                x=g["mean"], y=groups, mode="markers", name=f"{ours} (mean ± SD)",
                marker=dict(size=12, color="#1f4e79"),
                error_x=dict(type="data", array=g["sd"].fillna(0), thickness=2, width=6),
                customdata=np.stack([g["n"], g["sd"]], axis=-1),
                hovertemplate="%{y}: mean %{x:.2f}, SD %{customdata[1]:.2f}, n = %{customdata[0]}<extra></extra>",
                showlegend=col == 1, legendgroup="ours",
            ),
            row=1, col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=g["paper_mean"], y=groups, mode="markers", name="Holste et al. 2023 (mean)",
                marker=dict(size=12, symbol="diamond-open", color="#c0392b", line=dict(width=2)),
                hovertemplate="%{y}: paper mean %{x}<extra></extra>",
                showlegend=col == 1, legendgroup="paper",
            ),
            row=1, col=col,
        )
        # the whole answer scale, widened where mean ± SD reaches beyond it
        low, high = (-0.05, 1.05) if q.name == "agree" else (0.8, 5.2)
        reach = pd.concat([g["mean"] - g["sd"].fillna(0), g["mean"] + g["sd"].fillna(0), g["paper_mean"]])
        pad = 0.05 * (high - low)
        rng = [min(low, float(reach.min()) - pad), max(high, float(reach.max()) + pad)]
        fig.update_xaxes(title_text=q.axis, range=rng, row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=headline("Fig. 6 — ratings of PIEs and non-PIEs (mean ± SD)", simulated=simulated),
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=150),
    )
    return fig
