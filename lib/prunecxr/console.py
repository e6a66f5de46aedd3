"""The runner's live progress line, drawn from the events a stage emits (:mod:`prunecxr.events`).

While a notebook runs, :class:`LiveProgress` follows its progress file and shows where the
stage is: the notebook, the task's count (seeds, models), where it is inside it, the time
elapsed and an estimate of the time left. Three modes:

``"line"``
    a terminal: one line redrawn in place (``\\r``), cleared when the notebook finishes;
``"log"``
    not a terminal (CI, a log file): a full line every ``interval`` seconds (10 by default);
``"off"``
    nothing (``--quiet``, or ``-v`` that streams the notebooks' own output).

The estimate of the time left is the task's rate so far (its progress since its first
event, over the time since this process read that event) applied to what remains of it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .events import Event, read_events

__all__ = ["MODES", "LOG_INTERVAL", "LiveProgress", "format_duration", "resolve_mode"]

#: the modes of :class:`LiveProgress`
MODES = ("auto", "line", "log", "off")
#: seconds between two lines in ``"log"`` mode
LOG_INTERVAL = 10.0


def resolve_mode(mode: str, stream: TextIO) -> str:
    """``"auto"`` as ``"line"`` on a terminal and ``"log"`` elsewhere; other modes as given."""
    if mode not in MODES:
        raise ValueError(f"unknown progress mode {mode!r}; choose one of {list(MODES)}")
    if mode != "auto":
        return mode
    return "line" if getattr(stream, "isatty", lambda: False)() else "log"


def format_duration(seconds: float) -> str:
    """``"0:42"``, ``"12:05"``, ``"1:02:05"``: minutes and seconds, hours when needed."""
    s = max(int(round(seconds)), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


class LiveProgress:
    """The progress of one notebook, from its events file.

    Parameters
    ----------
    label : the notebook as the runner names it (``"[2/8] 02_train"``).
    path : the events file the notebook's kernel appends to.
    mode : ``"line"``, ``"log"`` or ``"off"`` (:func:`resolve_mode` turns ``"auto"`` into one).
    stream : where the line goes.
    interval : seconds between two lines in ``"log"`` mode (default :data:`LOG_INTERVAL`).
    clock : the time (``time.time``; tests pass their own).

    Use it as a context manager (a thread polls the file), or call :meth:`poll` yourself.
    """

    def __init__(
        self,
        label: str,
        path: str | os.PathLike,
        *,
        mode: str,
        stream: TextIO = sys.stdout,
        interval: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.label, self.path, self.stream = label, Path(path), stream
        self.mode = resolve_mode(mode, stream)
        self.interval = float(LOG_INTERVAL if interval is None else interval)
        self.clock = clock
        self.started = clock()
        self.next_log = self.started + self.interval
        self.offset = 0
        self.last: Event | None = None
        self.first: Event | None = None  # the current task's first event
        self.first_at = self.started  # when this process read it (its clock, not the kernel's)
        self.drawn = 0  # width of the line drawn in place
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what is shown ----------------------------------------------------------------------
    def text(self, now: float | None = None) -> str:
        """The progress line at time ``now``."""
        now = self.clock() if now is None else now
        parts = [self.label]
        e = self.last
        running = e is not None and e.done < e.total  # a finished task no longer says where it is
        if running:
            count = f"{e.task}: {_count(e.done)}/{_count(e.total)} {e.unit}s"
            parts.append(count + (f" ({e.detail})" if e.detail else ""))
        parts.append(f"{format_duration(now - self.started)} elapsed")
        left = self.seconds_left(now) if running else None
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        return " · ".join(parts)

    def seconds_left(self, now: float) -> float | None:
        """The estimated seconds left of the current task, or None before there is a rate."""
        first, last = self.first, self.last
        if first is None or last is None or last.total <= 0:
            return None
        progressed, spent = last.done - first.done, now - self.first_at
        if progressed <= 0 or spent <= 0:
            return None
        return max(last.total - last.done, 0.0) * spent / progressed

    # -- following the file -----------------------------------------------------------------
    def poll(self) -> None:
        """Read new events; redraw the line (``"line"``) or print one if it is time (``"log"``)."""
        events, self.offset = read_events(self.path, self.offset)
        now = self.clock()
        for e in events:
            # a task started again (notebook 09 trains one population per arm, each a "train"
            # from 0) goes back below where it was: its rate so far no longer applies
            again = self.last is not None and e.task == self.last.task and e.done < self.last.done
            if self.first is None or e.task != self.first.task or again:
                self.first, self.first_at = (
                    e,
                    now,
                )  # a new task (or one started again): a new estimate
            self.last = e
        if self.mode == "off":
            return
        if self.mode == "line":
            self._draw(self.text(now))
        elif now >= self.next_log:
            print(self.text(now), file=self.stream, flush=True)
            while self.next_log <= now:
                self.next_log += self.interval

    def _draw(self, text: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = text if len(text) <= width else text[: width - 1] + "…"
        self.stream.write("\r" + text + " " * max(self.drawn - len(text), 0))
        self.stream.flush()
        self.drawn = len(text)

    def clear(self) -> None:
        """Erase the line drawn in place (``"line"`` mode)."""
        if self.mode == "line" and self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()
            self.drawn = 0

    def _loop(self) -> None:
        period = 0.5 if self.mode == "line" else min(1.0, self.interval)
        while not self._stop.wait(period):
            try:
                self.poll()
            except OSError:  # a vanished file or a closed stream ends the line, not the run
                return

    def __enter__(self) -> LiveProgress:
        if self.mode != "off":
            self._thread = threading.Thread(
                target=self._loop, name="prunecxr-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.clear()
