"""The recipe: how every seed is trained, and the pieces that make it up.

Holste et al., MICCAI 2023, and the authors' released ``src/main.py``: 8-bit grayscale images,
resized once to a square without cropping by the image cache of ``01_data``, replicated to 3
channels; for training a random horizontal flip and a random rotation of up to ±15° (nearest
neighbour, black fill, torchvision's defaults); ImageNet normalization
(:func:`prunecxr.models.preprocess`); binary cross-entropy on the logits; Adam (lr 1e-4, no
weight decay); batches of 256; at most 60 epochs, stopping once the validation loss has not
improved for 15 epochs (:class:`EarlyStopping`) and keeping the weights of the lowest
validation loss. :class:`TrainConfig` holds these settings.

Compatibility switch. The released script calls ``model.eval()`` to validate and never
switches back, so from its second epoch on BatchNorm layers train in eval mode (running
statistics, frozen). ``TrainConfig(bn_eval_compat=True)`` reproduces that; it is off by
default. (The released script also stops only after ``patience + 1`` epochs without
improvement; this package stops after ``patience``, as the paper describes.)

Two settings go beyond the paper's recipe, for CPU budgets (the ``default`` profile):
``schedule = "onecycle"`` (:func:`learning_rate`: a warm-up to ``lr`` over the first quarter
of the steps, then a cosine decay to nearly zero) lets a few epochs converge; ``precision``
chooses the arithmetic (:func:`resolve_precision`: bf16 autocast where the hardware computes
bf16 natively, CUDA or a CPU with AVX512-BF16 or AMX, else float32).

The arithmetic per device (:func:`autocast`, :func:`uses_channels_last`): channels_last on
CUDA and CPUs; Adam fused on CUDA and CPU (:func:`adam`); deterministic cuDNN kernels while
training (:func:`deterministic`). Measured on the 2-core AVX-512 VM (``small_resnet``, 48 px,
2 threads, ``benchmarks/bench_train.py``), each added to the one before: batches of 128 instead
of 64 1.15x, channels_last 1.23x, bf16 autocast 1.25x; 1.77x together.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .. import models, runtime

__all__ = [
    "MAX_ROTATION",
    "PRECISIONS",
    "SCHEDULES",
    "EarlyStopping",
    "TrainConfig",
    "adam",
    "augment",
    "autocast",
    "deterministic",
    "draw_augmentation",
    "learning_rate",
    "resolve_precision",
    "sum_dtype",
    "uses_channels_last",
]

#: the recipe's RandomRotation(15), in degrees
MAX_ROTATION = 15.0
#: learning-rate schedules: the paper's constant rate, or one cycle over all epochs
SCHEDULES = ("constant", "onecycle")
#: arithmetic of training: "auto" (bf16 where the hardware computes it natively), or as named
PRECISIONS = ("auto", "bf16", "fp32")
#: one cycle: share of the steps spent warming up, and the start and end rates as fractions of lr
ONECYCLE_WARMUP = 0.25
ONECYCLE_START = 1 / 25
ONECYCLE_END = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """How every seed of a population is trained; the defaults are the paper's recipe.

    Parameters
    ----------
    model : a key of :data:`prunecxr.models.MODELS`, ``torchvision/<name>``, ``timm/<name>`` or
        ``module:factory`` (:func:`prunecxr.models.check_model`).
    pretrained : start from ImageNet weights (from the local torch cache only).
    max_epochs : most epochs per seed.
    patience : stop once the validation loss has not improved for this many epochs.
    batch_size : training (and validation) batch size.
    lr : Adam's learning rate (no weight decay).
    augment : random horizontal flip and rotation (±15°) of training images.
    bn_eval_compat : reproduce the released script, whose BatchNorm layers run in eval mode
        from the second epoch on (see the module docstring). Off by default.
    schedule : ``"constant"`` (the paper's) or ``"onecycle"`` over ``max_epochs``
        (:func:`learning_rate`).
    precision : ``"auto"``, ``"bf16"`` or ``"fp32"`` (:func:`resolve_precision`).
    """

    model: str = "resnet50"
    pretrained: bool = True
    max_epochs: int = 60
    patience: int = 15
    batch_size: int = 256
    lr: float = 1e-4
    augment: bool = True
    bn_eval_compat: bool = False
    schedule: str = "constant"
    precision: str = "auto"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}"
            )
        models.check_model(self.model)
        for name in ("pretrained", "augment", "bn_eval_compat"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("max_epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        object.__setattr__(self, "lr", float(self.lr))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EarlyStopping:
    """Stop once the validation loss has not improved for ``patience`` epochs.

    An epoch improves when its validation loss is strictly below the best so far (NaN never
    improves); the weights of the best epoch are the ones kept.

    Attributes
    ----------
    best_loss : lowest validation loss so far (``inf`` before the first epoch).
    best_epoch : its 1-based epoch (0 before the first epoch).
    bad_epochs : epochs since the last improvement.
    """

    patience: int
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record ``val_loss`` of ``epoch``; True when it is a new best."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch, self.bad_epochs = float(val_loss), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


# -- augmentation ----------------------------------------------------------------------------


def draw_augmentation(
    n: int, generator: torch.Generator, *, max_angle: float = MAX_ROTATION
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and angles for ``n`` images, drawn from ``generator`` (on the CPU).

    Returns ``flip`` (bool ``[n]``, each True with probability 1/2) and ``angle`` (float32
    ``[n]``, degrees, uniform in ``[-max_angle, max_angle]``).
    """
    flip = torch.rand(n, generator=generator) < 0.5
    angle = torch.empty(n).uniform_(-max_angle, max_angle, generator=generator)
    return flip, angle


def augment(images: torch.Tensor, *, flip: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Flip, then rotate, each image of a batch with its own parameters.

    torchvision's ``RandomHorizontalFlip()`` followed by ``RandomRotation(15)`` applied to
    every image separately, done for the whole batch at once on the images' device:
    a horizontal flip where ``flip``, then a rotation by ``angle`` degrees counter-clockwise
    about the image centre, nearest-neighbour, with black (0) outside the image.

    Parameters
    ----------
    images : uint8 tensor ``[..., H, W]``.
    flip : bool tensor with the leading shape of ``images``.
    angle : float tensor (degrees) with the leading shape of ``images``.

    Returns
    -------
    uint8 tensor shaped like ``images``.
    """
    if images.dtype != torch.uint8 or images.ndim < 3:
        raise ValueError(
            f"expected uint8 images [..., H, W], got {images.dtype} {tuple(images.shape)}"
        )
    lead = images.shape[:-2]
    if flip.shape != lead or angle.shape != lead:
        raise ValueError(
            f"flip {tuple(flip.shape)} and angle {tuple(angle.shape)} must have the images' "
            f"leading shape {tuple(lead)}"
        )
    h, w = images.shape[-2:]
    x = images.reshape(-1, 1, h, w).to(torch.float32)
    n, dev = x.shape[0], x.device
    a = torch.deg2rad(angle.reshape(-1).to(device=dev, dtype=torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    sx = 1.0 - 2.0 * flip.reshape(-1).to(device=dev, dtype=torch.float32)
    # input point = Flip · Rotation · output point, in pixel units about the centre; the
    # sampling grid is in units of half the width/height, hence the aspect factors:
    # grid[k, i, j] = ax[k] · gx[j] + ay[k] · gy[i], computed plane by plane ([n, 2, H, W])
    # and handed over as a permuted view. On 64 px batches of 64 this made the function 2.4x
    # (2 CPU threads) to 5x (1 thread) faster than F.affine_grid's batched matrix product;
    # an interleaved [n, H, W, 2] broadcast is 3x slower than planes.
    ax = torch.stack((sx * cos, sin * (w / h)), dim=1).view(n, 2, 1, 1)
    ay = torch.stack((-sx * sin * (h / w), cos), dim=1).view(n, 2, 1, 1)
    gx = torch.linspace(-1, 1, w, device=dev).mul_(w - 1).div_(w).view(1, 1, 1, w)  # pixel centres
    gy = torch.linspace(-1, 1, h, device=dev).mul_(h - 1).div_(h).view(1, 1, h, 1)
    grid = (ax * gx + ay * gy).permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.to(torch.uint8).reshape(images.shape)


# -- the arithmetic per device ---------------------------------------------------------------


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic training runs in on ``device``: ``"bf16"`` (autocast) or ``"fp32"``.

    ``"auto"`` is bf16 where the hardware computes it natively, a CUDA GPU with bf16 or a CPU
    with AVX512-BF16 or AMX (:func:`prunecxr.runtime.cpu_has_bf16`), and float32 elsewhere
    (emulated bf16 is slower than float32). The choice changes the rounding, so it is recorded
    with the population (``models/train.json``, ``execution.precision``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if runtime.cpu_has_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast on ``device`` when ``precision`` (resolved) is ``"bf16"``; else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(device: torch.device) -> bool:
    """Whether models and batches use the channels_last memory format (CUDA and CPUs)."""
    return device.type in ("cuda", "cpu")


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps`` in all.

    ``constant``: ``config.lr``. ``onecycle``: a cosine rise from ``lr/25`` to ``lr`` over the
    first quarter of the steps, then a cosine fall to ``lr·1e-4`` (the shape of PyTorch's
    ``OneCycleLR``). A pure function of the step, so a resumed seed continues on the same
    curve with no scheduler state to save.
    """
    if config.schedule == "constant":
        return config.lr
    warm = max(int(round(ONECYCLE_WARMUP * total_steps)), 1)
    lo, hi, end = config.lr * ONECYCLE_START, config.lr, config.lr * ONECYCLE_END
    if step < warm:
        a, b, t = lo, hi, step / warm
    else:
        a, b, t = hi, end, min((step - warm) / max(total_steps - 1 - warm, 1), 1.0)
    return b + (a - b) * (1 + math.cos(math.pi * t)) / 2


def adam(params, *, lr: float, device: torch.device) -> torch.optim.Adam:
    """torch.optim.Adam, fused on CUDA and CPU (on 2 CPU cores 3.7x faster than the default)."""
    return torch.optim.Adam(params, lr=lr, fused=True if device.type in ("cuda", "cpu") else None)


def sum_dtype(device: torch.device) -> torch.dtype:
    """Loss sums on the device: float64, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic cuDNN kernels while training (resumed runs must match uninterrupted ones)."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old
