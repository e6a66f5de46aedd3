"""NIH's public bounding boxes (``BBox_List_2017.csv``) as localization targets of a real NIH run.

NIH released, with ChestX-ray14, 984 hand-drawn boxes of 8 findings on 880 images (Wang et
al., CVPR 2017): ``Image Index, Finding Label, Bbox [x,y,w,h]``, in pixels of the released
1024 × 1024 PNGs, the finding "Infiltrate" being the table's "Infiltration". Notebook 09 scores
the class activation maps of a run on real NIH images against them (:func:`run_boxes`), as it
scores a phantom run against where the phantom drew each finding (``locations.parquet``).

The file is looked for, in order: the path the user names (``bbox_file``); ``BBox_List_2017.csv``
in the dataset's folder (``data_access.md``); the copy NIH's file ships as inside the installed
``torchxrayvision`` wheel (``torchxrayvision/data/BBox_List_2017.csv.gz``, the same table, which
the phantom also reads). The image cache squeezes each whole film into ``R × R`` without
cropping (:mod:`prunecxr.data.images`), so a box scales by ``R / 1024`` on both axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "BOX_COLUMNS",
    "NIH_BOX_FILE",
    "NIH_SIDE",
    "boxes_at_resolution",
    "find_box_file",
    "read_nih_boxes",
]

#: the file name NIH released the boxes under
NIH_BOX_FILE = "BBox_List_2017.csv"
#: the side of NIH's released images, the boxes' coordinate frame
NIH_SIDE = 1024
#: NIH's finding names that the label table spells otherwise
BOX_NAMES = {"Infiltrate": "Infiltration"}
#: the columns of :func:`boxes_at_resolution` (those of ``locations.parquet`` that scoring reads)
BOX_COLUMNS = ["image_id", "split", "class", "x0", "y0", "x1", "y1", "pixels"]


def find_box_file(bbox_file: str | Path = "", folder: str | Path | None = None) -> Path:
    """The box list to read: ``bbox_file`` if given, else ``folder/BBox_List_2017.csv`` if it
    exists, else the copy in the installed ``torchxrayvision`` wheel."""
    if bbox_file:
        path = Path(bbox_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"bbox_file {path} does not exist")
        return path
    if folder is not None and (Path(folder) / NIH_BOX_FILE).is_file():
        return Path(folder) / NIH_BOX_FILE
    from .phantom.labels import BBOX_FILE, wheel_file

    return wheel_file(BBOX_FILE)


def read_nih_boxes(path: str | Path, classes=None) -> pd.DataFrame:
    """NIH's box list as ``image`` (file name), ``class``, ``x``, ``y``, ``w``, ``h`` (floats,
    pixels of the 1024 × 1024 images); a clear error naming the file and line of a bad row.

    ``classes``, when given, are the findings allowed (after :data:`BOX_NAMES`).
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the box list {path}: {err}") from None
    if raw.shape[1] < 6:
        raise ValueError(
            f"{path}: expected NIH's columns Image Index, Finding Label, Bbox [x,y,w,h] (6 values a "
            f"row); found {raw.shape[1]} column(s): {list(raw.columns)}"
        )
    raw = raw.iloc[:, :6]
    raw.columns = ["image", "class", "x", "y", "w", "h"]
    out = raw[["image", "class"]].copy()
    out["image"] = out["image"].str.strip()
    out["class"] = out["class"].str.strip().replace(BOX_NAMES)
    for k, c in enumerate(("x", "y", "w", "h")):
        values = pd.to_numeric(raw[c].str.strip(), errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float)) | (
            (values <= 0) if k >= 2 else (values < 0)
        )
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path} line {row + 2}: box {c} must be a "
                f"{'positive' if k >= 2 else 'non-negative'} number; got {raw[c].iloc[row]!r}"
            )
        out[c] = values.astype(float)
    if (out["image"] == "").any():
        row = int(np.flatnonzero((out["image"] == "").to_numpy())[0])
        raise ValueError(f"{path} line {row + 2}: no image name")
    if classes is not None:
        unknown = ~out["class"].isin(list(classes))
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise ValueError(
                f"{path} line {row + 2}: finding {out['class'].iloc[row]!r} is not a class of the "
                f"run ({', '.join(classes)})"
            )
    return out


def boxes_at_resolution(
    boxes: pd.DataFrame, table: pd.DataFrame, resolution: int, *, side: int = NIH_SIDE
) -> pd.DataFrame:
    """The boxes of :func:`read_nih_boxes` on the run's images: :data:`BOX_COLUMNS`.

    Each box is matched to the row of ``table`` (``labels.parquet``: ``image_id``, ``split``)
    whose image file has its name, and scaled from ``side`` to ``resolution`` pixels: the
    smallest box of whole pixels holding it (``x0 = floor(x·s)``, ``x1 = ceil((x+w)·s)``,
    clipped to the image), ``pixels`` its area. Boxes of images the run does not hold (a run on
    a subset) are left out; ``attrs["unmatched"]`` counts them.
    """
    names = table["image_id"].astype(str).map(lambda p: Path(p).name)
    if names.duplicated().any():
        dup = names[names.duplicated()].iloc[0]
        raise ValueError(
            f"two images of the run share the file name {dup!r}: boxes cannot be matched"
        )
    where = pd.Series(np.arange(len(table)), index=names.to_numpy())
    pos = boxes["image"].map(where)
    kept = boxes[pos.notna()]
    pos = pos[pos.notna()].astype(np.int64).to_numpy()
    scale = resolution / side

    def lo(v):
        return np.clip(np.floor(v * scale + 1e-9), 0, resolution - 1).astype(np.int16)

    def hi(v):
        return np.clip(np.ceil(v * scale - 1e-9), 1, resolution).astype(np.int16)

    x0, y0 = lo(kept["x"].to_numpy()), lo(kept["y"].to_numpy())
    x1 = np.maximum(hi((kept["x"] + kept["w"]).to_numpy()), x0 + 1).astype(np.int16)
    y1 = np.maximum(hi((kept["y"] + kept["h"]).to_numpy()), y0 + 1).astype(np.int16)
    out = pd.DataFrame(
        {
            "image_id": table["image_id"].astype(str).to_numpy()[pos],
            "split": table["split"].astype(str).to_numpy()[pos],
            "class": kept["class"].to_numpy(),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "pixels": ((x1.astype(np.int32) - x0) * (y1.astype(np.int32) - y0)).astype(np.int32),
        }
    )
    out.attrs["unmatched"] = int(len(boxes) - len(kept))
    return out.reset_index(drop=True)
