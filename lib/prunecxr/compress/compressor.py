"""What every compression method is: a dense model and a level in, a model ready for inference out.

A registry entry (:class:`CompressionMethod`, in :data:`prunecxr.compress.methods.METHODS`)
names a method, its level axis (:mod:`prunecxr.levels`: ``sparsity``, ``bits``,
``channel_fraction``), the levels it can take, and a factory: ``create(model, seed=,
calibration=)`` returns a :class:`Compressor` for one dense model. A compressor is called once
per level and returns the compressed model, in eval mode:

* :meth:`Compressor.compress` — the model as deployed (masked weights, quantized weights, a
  physically smaller network, an int8 graph);
* :meth:`Compressor.for_recovery` — the same compression as a float model whose training keeps
  it (masks and quantization grids stay through ``torch.nn.utils.parametrize``; int8 as
  quantization-aware training), with the function that turns it into the deployed model
  after :mod:`prunecxr.compress.recovery` has re-estimated its BatchNorm statistics or
  fine-tuned it.

:class:`CalibrationSet` is the training data a method or a recovery may look at: calibration
images for static int8 quantization, batches for BatchNorm re-estimation and fine-tuning.
Batches are drawn with a generator seeded by the model's seed, so they are the same on every
run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .. import levels, models

#: how a calibration set is drawn: uniformly, or enriched with images of rare classes
CALIBRATIONS = ("random", "rare")


class UnsupportedModel(ValueError):
    """A method cannot compress this architecture; the message says why, in one line."""


def attention_blocks(model: nn.Module) -> list[str]:
    """The names of ``model``'s attention modules (``nn.MultiheadAttention``, or a module class
    named ``*Attention``, as timm's and torchvision's transformers name theirs)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")
    ]


class Compressor(Protocol):
    """One dense model's compressor (see the module docstring)."""

    def compress(self, level: float) -> nn.Module:
        """The model compressed to ``level``, in eval mode, ready for inference."""

    def for_recovery(self, level: float) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
        """``(float model whose training keeps the compression, finish)``; ``finish(model)``
        is the deployed model (eval mode)."""


@dataclass(frozen=True)
class CompressionMethod:
    """A registry entry.

    Attributes
    ----------
    name : the method's name (``prune/<name>/`` holds its store).
    level_name : its level axis (a key of :data:`prunecxr.levels.AXES`).
    create : ``create(model, *, seed, calibration)`` → :class:`Compressor`; ``calibration``
        is a :class:`CalibrationSet` or None (then a method that needs one raises).
    description : what the method does, one line.
    supported : the levels it can take besides the dense one (None: any level of its axis).
    needs_calibration : whether it reads training images itself (int8 calibration).
    options : fixed options of this entry (e.g. ``{"calibration": "rare"}``), shown in tables.
    cpu_only : whether its models run on the CPU only (int8 kernels for x86).
    """

    name: str
    level_name: str
    create: Callable[..., Compressor]
    description: str
    supported: tuple[float, ...] | None = None
    needs_calibration: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    cpu_only: bool = False

    @property
    def axis(self) -> levels.Axis:
        return levels.axis(self.level_name)

    def levels(self, requested: Sequence[float]) -> list[float]:
        """The levels of ``requested`` (the notebook's list for this axis) that this method
        computes: all of them, or those it supports; the dense level first."""
        axis = self.axis
        values = axis.check_levels(
            requested, dense_first=True, name=f"{axis.name} levels of {self.name}"
        )
        if self.supported is None:
            return values
        keep = [
            v for v in values if axis.is_dense(v) or any(abs(v - s) < 1e-9 for s in self.supported)
        ]
        if len(keep) < 2:
            raise ValueError(
                f"method {self.name!r} computes {axis.name} {list(self.supported)} only, and none of them "
                f"is among the requested {values}"
            )
        return keep


# =========================================================================================
# Training data for calibration and recovery
# =========================================================================================
@dataclass(frozen=True)
class CalibrationSet:
    """Training images and labels, drawn from in seeded batches.

    Attributes
    ----------
    images : uint8 ``[N, H, W]`` (the training split, possibly memory-mapped).
    labels : 0/1 ``[N, C]``.
    batch_size : images per batch.
    n_images : images a calibration draws (int8 observers see them).
    """

    images: np.ndarray
    labels: np.ndarray
    batch_size: int = 32
    n_images: int = 256

    def __post_init__(self):
        if self.images.ndim != 3 or len(self.images) != len(self.labels) or len(self.images) == 0:
            raise ValueError(
                f"a calibration set needs uint8 images [N, H, W] with labels [N, C]; got "
                f"{getattr(self.images, 'shape', None)} and {getattr(self.labels, 'shape', None)}"
            )
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")

    def indices(self, n_images: int, *, seed: int, draw: str = "random") -> np.ndarray:
        """``n_images`` training rows (all of them if fewer), drawn without replacement by a
        generator seeded by ``seed``.

        ``draw="random"``: uniformly. ``draw="rare"``: with probability proportional to
        ``max_c y_c / n_c`` over the image's classes (``n_c`` training images of class ``c``),
        so an image of a class ten times rarer is ten times as likely; images without a
        label weigh as those of the commonest class.
        """
        if draw not in CALIBRATIONS:
            raise ValueError(
                f"unknown calibration draw {draw!r}; choose one of {list(CALIBRATIONS)}"
            )
        n = len(self.images)
        k = min(int(n_images), n)
        gen = torch.Generator().manual_seed(int(seed))
        if draw == "random":
            return np.sort(torch.randperm(n, generator=gen)[:k].numpy())
        y = np.asarray(self.labels, dtype=np.float64)
        counts = y.sum(axis=0)
        inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        weight = (y * inverse[None, :]).max(axis=1)
        weight[weight == 0] = inverse[inverse > 0].min() if (inverse > 0).any() else 1.0
        picked = torch.multinomial(torch.from_numpy(weight), k, replacement=False, generator=gen)
        return np.sort(picked.numpy())

    def batches(self, n_batches: int, *, seed: int, draw: str = "random") -> list[torch.Tensor]:
        """``n_batches`` preprocessed float32 batches ``[B, 3, H, W]`` of :meth:`indices`."""
        idx = self.indices(int(n_batches) * self.batch_size, seed=seed, draw=draw)
        images = torch.from_numpy(np.take(self.images, idx, axis=0))
        return [
            models.preprocess(images[i : i + self.batch_size])
            for i in range(0, len(idx), self.batch_size)
        ]

    def labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every training image (uint8 ``[N, H, W]``) and its float labels ``[N, C]``."""
        return (
            torch.from_numpy(np.array(self.images, copy=True)),
            torch.from_numpy(np.asarray(self.labels, dtype=np.float32)),
        )


def require_calibration(method: str, calibration: CalibrationSet | None) -> CalibrationSet:
    """``calibration``, or a ValueError saying that ``method`` needs training images."""
    if calibration is None:
        raise ValueError(
            f"method {method!r} needs training images (a CalibrationSet) to calibrate or recover"
        )
    return calibration
