"""Progress events: how a stage tells the runner how far it is.

A long stage (training the population, the compression sweep) reports its progress as
events, the same moments its own progress bars advance at. When the runner executes a
notebook it names a file in the kernel's environment (:data:`PROGRESS_ENV`); each event is
appended to it as one JSON line, and the runner follows the file to draw its live progress
line (:mod:`prunecxr.console`). Outside the runner (a notebook opened by hand, a test) the
variable is unset and :func:`emit` does nothing.

An event is a JSON object with

``t``
    the time (seconds since the epoch);
``task``
    what is being counted (``"train"``, ``"sweep global_l1"``); a new task starts a new
    estimate of the time left;
``done``, ``total``
    how much of the task is done, in ``unit`` (``done`` may be fractional: a seed half
    trained is half a seed);
``unit``
    what is counted (``"seed"``, ``"model"``);
``detail``
    a short text of where the task is (``"seed 2 epoch 3/4"``).

A leaf of the package: it imports nothing of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROGRESS_ENV", "Event", "emit", "read_events"]

#: the environment variable naming the file a stage appends its progress events to
PROGRESS_ENV = "PRUNECXR_PROGRESS"


@dataclass(frozen=True)
class Event:
    """One progress event (see the module's docstring for the fields)."""

    t: float
    task: str
    done: float
    total: float
    unit: str
    detail: str = ""

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1] (0 for an empty task)."""
        return min(max(self.done / self.total, 0.0), 1.0) if self.total > 0 else 0.0


def emit(task: str, *, done: float, total: float, unit: str, detail: str = "") -> None:
    """Append a progress event to the runner's file, if a runner asked for one.

    Parameters
    ----------
    task : what is counted (``"train"``, ``"sweep random"``).
    done, total : progress of the task in ``unit``; ``0 <= done <= total``.
    unit : what is counted (``"seed"``, ``"model"``).
    detail : where the task is, for the line the runner shows.
    """
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    if total < 0 or not 0 <= done <= max(total, 0) + 1e-9:
        raise ValueError(f"progress of {task!r}: done {done!r} is not within [0, total {total!r}]")
    line = json.dumps(
        {
            "t": round(time.time(), 3),
            "task": task,
            "done": round(float(done), 4),
            "total": float(total),
            "unit": unit,
            "detail": detail,
        }
    )
    # one write of one short line to a file opened for appending: lines never interleave
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:  # progress is a courtesy: a full disk must not stop the stage here
        pass


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[Event], int]:
    """The complete events of ``path`` from byte ``offset`` on, and the offset after them.

    A line still being written (no newline yet) is left for the next call; a line that is not
    an event (a file of something else) is skipped.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    return list(_parse(chunk[:end])), offset + end


def _parse(chunk: bytes) -> Iterator[Event]:
    for raw in chunk.splitlines():
        try:
            obj = json.loads(raw)
            yield Event(
                t=float(obj["t"]),
                task=str(obj["task"]),
                done=float(obj["done"]),
                total=float(obj["total"]),
                unit=str(obj["unit"]),
                detail=str(obj.get("detail", "")),
            )
        except (ValueError, KeyError, TypeError):
            continue
