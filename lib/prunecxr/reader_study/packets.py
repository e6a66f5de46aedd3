"""The reader packets of notebook 07: one self-contained HTML form per reader.

Each packet is built from ``templates/reader_packet.html``, with images embedded as base64 PNG
(:func:`prunecxr.figures.png_base64`) and no script or style from elsewhere, so it opens
offline. Each image is shown with its dataset labels and the three questions of
:data:`~prunecxr.reader_study.questions.QUESTIONS`. Answers are kept in the browser's
``localStorage`` under the packet id (so they survive reloading and closing the page), and a
"Download CSV" button exports them. PIE status, image ids and the method never appear in a
packet. Packets of real data contain patient images; they are written into the run directory
only, never into ``figures/`` or the report.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts, config, data, figures, paths
from .answers import response_files
from .design import check_key, read_key
from .questions import QUESTION_NAMES, QUESTIONS

TEMPLATE_FILE = Path(__file__).with_name("templates") / "reader_packet.html"


@dataclass(frozen=True)
class PacketItem:
    """One image of a packet: its code, the labels shown with it, the image as base64 PNG
    (:func:`prunecxr.figures.png_base64`)."""

    code: str
    labels: tuple[str, ...]
    png: str  # empty: the run holds no pixels (imported predictions); the packet names the image
    size: tuple[int, int] = (0, 0)  # (height, width) in pixels
    image_id: str = ""


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
    small = ' class="small"' if 0 < max(item.size) < 256 else ""
    labels = ", ".join(html.escape(x) for x in item.labels) or "(no label)"
    parts = [
        f'<section class="item" id="item-{code}" data-code="{code}">',
        f'<h2>Image {number} of {total}<span class="code">code {code}</span></h2>',
        '<div class="body">',
        f'<img{small} src="data:image/png;base64,{item.png}" alt="Chest X-ray {number}">'
        if item.png
        else f'<p class="missing">Open image <code>{html.escape(item.image_id)}</code> of your dataset: this run '
        "holds its predictions only, not its pixels.</p>",
        '<div class="questions">',
        f'<p class="labels"><b>Given label(s):</b> {labels}</p>',
    ]
    for k, q in enumerate(QUESTIONS, start=1):
        parts.append(
            f'<fieldset data-question="{q.name}"><legend>{k}. {html.escape(q.prompt)}</legend>'
        )
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


def _shown_labels(run: str, image_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    rp = paths.run_paths(run)
    labels = artifacts.read_labels(run)
    labels = labels.assign(image_id=labels["image_id"].astype(str)).set_index("image_id")
    wanted = list(dict.fromkeys(image_ids))
    missing = [i for i in wanted if i not in labels.index]
    if missing:
        raise ValueError(
            f"{rp.labels}: {len(missing)} image(s) of the study are not there, e.g. {missing[:3]}"
        )
    classes = artifacts.class_names(labels)
    values = labels.loc[wanted, classes].to_numpy()
    return {i: tuple(c for c, v in zip(classes, row) if v == 1) for i, row in zip(wanted, values)}


def has_pixels(run: str) -> bool:
    """Whether the run has an image cache (notebook 01); a run of imported predictions has none."""
    path = paths.run_paths(run).run_json
    return path.exists() and "cache" in (artifacts.read_json(path).get("data") or {})


def _test_images(run: str, split: Any, image_ids: Sequence[str]) -> dict[str, np.ndarray]:
    if split is None:
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
        ``prunecxr.data.open_split(run, "test")``; a run without an image cache (imported
        predictions, :func:`has_pixels`) gets packets that name each image instead of showing it.
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
    key = check_key(key, where="key")
    if rp.reader_key.exists() and response_files(rp.reader_responses):
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
    if split is None and not has_pixels(run):
        images, pngs = {}, {}
    else:
        images = _test_images(run, split, list(key["image_id"]))
        pngs = {i: figures.png_base64(img) for i, img in images.items()}

    written = {}
    for reader, group in key.groupby("reader", sort=False):
        group = group.sort_values("position")
        items = [
            PacketItem(
                code=c,
                labels=labels[i],
                png=pngs.get(i, ""),
                size=images[i].shape[:2] if i in images else (0, 0),
                image_id=i,
            )
            for c, i in zip(group["code"], group["image_id"])
        ]
        text = render_packet(
            items, reader=reader, packet_id=group["packet_id"].iloc[0], title=title
        )
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
