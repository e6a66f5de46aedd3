"""Progress of a population as tqdm bars in the driver: one for the seeds, one per seed in
training. With Ray the tasks' events reach :class:`Report` through a relay
(:class:`prunecxr.cluster.RelayReport`). The same moments become progress events for the
runner's live line (:mod:`prunecxr.events`)."""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

from .. import events

__all__ = ["Report", "bar", "interactive", "seed_label"]


def seed_label(seed: int) -> str:
    """How a seed in training is named in bars and progress events (``"seed 3"``)."""
    return f"seed {seed}"


def interactive() -> bool:
    """Whether stderr is a terminal (bars redraw in place there)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(progress: bool, *, transient: bool = False, **kwargs):
    """A tqdm bar. In a terminal, ``transient`` bars vanish when done; elsewhere (notebooks,
    logs) each such bar stays as one final line, and redraws are rarer."""
    tty = interactive()
    with warnings.catch_warnings():  # tqdm.auto warns on import when ipywidgets is absent
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

        return tqdm(
            disable=not progress,
            mininterval=0.5 if tty else 5.0,
            dynamic_ncols=True,
            leave=not (transient and tty),
            **kwargs,
        )


class Report:
    """The bars of a population. Training calls :meth:`start` when a seed starts or resumes,
    :meth:`epoch` after each of its epochs, :meth:`final` when it is final and :meth:`stop`
    when it leaves (final or not).

    Each call also emits a progress event (task ``"train"``, in seeds): the final seeds plus,
    for each seed in training, its epochs done over ``max_epochs``; the detail names the
    seeds in training and their epochs. Events are emitted whether or not bars are shown.
    """

    def __init__(self, progress: bool, *, total: int, done: int, max_epochs: int):
        self.progress, self.max_epochs = progress, max_epochs
        self.total, self.done = total, done
        self.seeds = bar(progress, total=total, initial=done, desc="seeds", unit="seed")
        self.running: dict[str, Any] = {}
        self.epochs: dict[str, int] = {}  # epochs done of each seed in training, not yet final
        self._emit()

    def _emit(self) -> None:
        partial = sum(min(e, self.max_epochs) / self.max_epochs for e in self.epochs.values())
        detail = ", ".join(
            f"{label} epoch {min(e + 1, self.max_epochs)}/{self.max_epochs}"
            for label, e in self.epochs.items()
        )
        events.emit(
            "train",
            done=min(self.done + partial, self.total),
            total=self.total,
            unit="seed",
            detail=detail,
        )

    def start(self, label: str, epoch: int) -> None:
        self.stop(label)  # a seed started again (a Ray task retried after its worker died)
        self.running[label] = bar(
            self.progress,
            total=self.max_epochs,
            initial=epoch,
            desc=label,
            unit="epoch",
            transient=True,
        )
        self.epochs[label] = epoch
        self._emit()

    def epoch(self, label: str, train_loss: float, val_loss: float, val_ap: float) -> None:
        b = self.running[label]
        b.update(1)
        b.set_postfix(
            train_loss=f"{train_loss:.4f}",
            val_loss=f"{val_loss:.4f}",
            val_mAP="n/a" if math.isnan(val_ap) else f"{val_ap:.3f}",
        )
        if label in self.epochs:
            self.epochs[label] += 1
            self._emit()

    def final(self, seed: int, best_loss: float, best_epoch: int) -> None:
        self.seeds.update(1)
        self.seeds.set_postfix(
            seed=seed, best_val_loss=f"{best_loss:.4f}", best_epoch=best_epoch, refresh=False
        )
        self.done += 1
        self.epochs.pop(seed_label(seed), None)
        self._emit()

    def stop(self, label: str) -> None:
        b = self.running.pop(label, None)
        if b is not None:
            b.close()
        if self.epochs.pop(label, None) is not None:
            self._emit()

    def close(self) -> None:
        for label in list(self.running):
            self.stop(label)
        self.seeds.close()
