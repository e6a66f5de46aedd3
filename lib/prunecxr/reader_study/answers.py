"""The readers' answers (notebook 07): reading and checking their CSVs, or simulating answers.

Response CSV
------------
Columns ``reader``, ``packet_id``, ``code``, ``agree`` (``yes``/``no``), ``quality`` and
``difficulty`` (integers 1–5); an empty cell is an unanswered question. ``packet_id`` may be
left out by hand-made files; when present it must match the key. :func:`read_responses`
refuses (with :class:`ResponseError`, naming file and row) unknown codes, codes of another
reader's packet, answers out of range, a code answered twice (in one file or across files),
an empty file and a reader who answered nothing. Rows are joined with the key by ``code``;
row order is never used.

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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import artifacts, paths
from .design import NON_PIE, PIE, check_integer, check_key
from .questions import QUESTION_NAMES, QUESTIONS

#: the column order of a response CSV, as exported by a packet
RESPONSE_COLUMNS = ("reader", "packet_id", "code", "agree", "quality", "difficulty")


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
    key = check_key(key, where="key")
    seed = check_integer("seed", seed, 0)
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


# -- finding the answer files -------------------------------------------------------------
def response_files(folder: Path) -> list[Path]:
    """The ``.csv`` files of ``folder``, sorted (none if it does not exist)."""
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
        files = response_files(folder)
        if not files:
            raise FileNotFoundError(
                f"responses_dir={responses_dir!r}: {folder} holds no .csv file; put the readers' "
                "exported CSVs there, or leave responses_dir empty to simulate answers"
            )
        return ResponseFiles(tuple(files), simulated=False, folder=folder)
    files = response_files(rp.reader_responses)
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


def read_responses(
    files: Iterable[str | Path], key: pd.DataFrame, *, source: str = "readers"
) -> pd.DataFrame:
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
    key = check_key(key, where="key")
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
        artifacts.note_read(path)
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
                value, problem = q.parse(_cell(rec, q.name))
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
    cols = [
        "reader",
        "code",
        "image_id",
        "is_pie",
        "group",
        *QUESTION_NAMES,
        "file",
        "row",
        "source",
    ]
    return joined[cols].reset_index(drop=True)


def coverage(answers: pd.DataFrame, key: pd.DataFrame) -> pd.DataFrame:
    """Per reader: images in the packet, rows returned, images with every question answered."""
    key = check_key(key, where="key")
    shown = key.groupby("reader").size().rename("n_images")
    returned = answers.groupby("reader").size().rename("n_returned")
    complete = (
        answers.dropna(subset=list(QUESTION_NAMES)).groupby("reader").size().rename("n_complete")
    )
    out = pd.concat([shown, returned, complete], axis=1).fillna(0).astype(int).reset_index()
    out = out.rename(columns={"index": "reader"})
    return out.sort_values("reader", key=_reader_order).reset_index(drop=True)
