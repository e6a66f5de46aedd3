"""Train the population of dense models: notebook ``02_train``.

The recipe (Holste et al., MICCAI 2023, and the authors' released ``src/main.py``): 8-bit
grayscale images, resized once to a square without cropping by the image cache of
``01_data``, replicated to 3 channels; for training a random horizontal flip and a random
rotation of up to ±15° (nearest neighbour, black fill, torchvision's defaults); ImageNet
normalization (:func:`prunecxr.models.preprocess`); binary cross-entropy on the logits;
Adam (lr 1e-4, no weight decay); batches of 256; at most 60 epochs, stopping once the
validation loss has not improved for 15 epochs (:class:`EarlyStopping`) and keeping the
weights of the lowest validation loss. :class:`TrainConfig` holds these settings.

Population. A seed alone decides a model's initialization (``torch.manual_seed(seed)``
around :func:`prunecxr.models.create_model`), its data order and its augmentation (a
``torch.Generator`` of its own, derived from the seed and saved with every epoch). Seeds
are trained *sequentially*, one model after another; *grouped*, several seeds as one
stacked network (:func:`prunecxr.models.stack_models`: grouped convolutions), each with its
own data order, augmentation, Adam step count (:class:`StackedAdam`) and early stopping,
which keeps a GPU busy with small models; or, on a CPU, in *parallel* worker processes of
one thread each (a process per core, each seed trained as in ``sequential`` with one thread,
so bit for bit alike). All ways compute the same training up to floating-point rounding.
``population="auto"`` measures on the device (one training step with one thread and with
all cores, :func:`measure_cpu_threads`; one step of a stack,
:func:`measure_population_speedup`, cached per machine), estimates each way's time and
takes the fastest (worker processes only where more threads measured faster, that is where
cores are free: on a busy machine they would only compete); the run records its choice in
``models/train.json`` and keeps it when resumed.

Files (``ARTIFACTS.md``), per seed ``s`` under ``runs/<run>/models/seed-<s>/``:

``model.pt``
    the selected weights (lowest validation loss), a plain ``state_dict``; its presence
    marks the seed as final, and a final seed is skipped when training runs again;
``history.csv``
    one row per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss``,
    ``val_mean_ap``, ``seconds`` (wall time of the epoch, validation included; grouped
    seeds share their group's time);
``last.pt``
    the resume point of an unfinished seed after each epoch: model, optimizer, data
    generator, early-stopping state, best weights so far and the history; removed once
    the seed is final.

``models/train.json`` records the training configuration, the number of classes, the image
size and the population plan; training refuses to continue a run's population with another
configuration. Every file is written atomically (:mod:`prunecxr.io`) and every checkpoint
loads with ``torch.load(..., weights_only=True)``. Killing training at any moment and
running it again loses at most the epoch in flight and ends with the same weights as an
uninterrupted run on the same machine (same device, thread count and population plan).

Compatibility switch. The released script calls ``model.eval()`` to validate and never
switches back, so from its second epoch on BatchNorm layers train in eval mode (running
statistics, frozen). ``TrainConfig(bn_eval_compat=True)`` reproduces that; it is off by
default. (The released script also stops only after ``patience + 1`` epochs without
improvement; this module stops after ``patience``, as the paper describes.)
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import mmap
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import artifacts, paths, runtime
from .. import models as _models
from ..metrics import ranking_metrics

__all__ = [
    "EarlyStopping",
    "POPULATION_MODES",
    "StackedAdam",
    "TrainConfig",
    "augment",
    "class_ap_figure",
    "draw_augmentation",
    "fit_population",
    "headline_text",
    "learning_curves_figure",
    "load_model",
    "mean_average_precision",
    "measure_population_speedup",
    "measure_cpu_threads",
    "per_class_average_precision",
    "plan_text",
    "predict",
    "read_histories",
    "resolve_device",
    "summarize_test_ap",
    "test_average_precision",
    "train_population",
    "trained_seeds",
    "training_threads",
]

#: how a population is trained: ``auto`` measures the others on the device and picks
POPULATION_MODES = ("auto", "sequential", "grouped", "parallel")
#: most seeds in one stacked network (memory grows linearly with it)
MAX_GROUP = 16
#: another way must be estimated at least this much faster than ``sequential`` for ``auto``
MIN_GROUPED_SPEEDUP = 1.1
#: ``parallel`` copies the images to every worker: only for data up to this size
PARALLEL_MAX_BYTES = 1 << 30
#: columns of ``history.csv`` (ARTIFACTS.md)
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mean_ap", "seconds"]
#: the recipe's RandomRotation(15)
MAX_ROTATION = 15.0
_STATE_FORMAT = 1
_CALIBRATION_FILE = "train_calibration.json"


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How every seed of a population is trained; the defaults are the paper's recipe.

    Parameters
    ----------
    model : a key of :data:`prunecxr.models.MODELS`.
    pretrained : start from ImageNet weights (from the local torch cache only).
    max_epochs : most epochs per seed.
    patience : stop once the validation loss has not improved for this many epochs.
    batch_size : training (and validation) batch size.
    lr : Adam's learning rate (no weight decay).
    augment : random horizontal flip and rotation (±15°) of training images.
    bn_eval_compat : reproduce the released script, whose BatchNorm layers run in eval mode
        from the second epoch on (see the module docstring). Off by default.
    """

    model: str = "resnet50"
    pretrained: bool = True
    max_epochs: int = 60
    patience: int = 15
    batch_size: int = 256
    lr: float = 1e-4
    augment: bool = True
    bn_eval_compat: bool = False

    def __post_init__(self):
        if self.model not in _models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(_models.MODELS)}")
        for name in ("pretrained", "augment", "bn_eval_compat"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("max_epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (
            math.isfinite(self.lr) and self.lr > 0
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
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


# -- devices ---------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    """The device to use: ``"auto"`` is CUDA if available, then Apple MPS, then the CPU.

    Any other name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is taken as given, and
    refused with a clear message when that device is not available.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"device must be 'auto' or a torch device name, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA devices exist"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} asked for, but Apple MPS is not available here")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda[:i]' or 'mps'")
    return device


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _channels_last(device: torch.device) -> bool:
    return device.type == "cuda"


def _adam(params, *, lr: float, device: torch.device) -> torch.optim.Adam:
    """torch.optim.Adam, fused on CUDA and CPU (on 2 CPU cores 3.7x faster than the default)."""
    return torch.optim.Adam(params, lr=lr, fused=True if device.type in ("cuda", "cpu") else None)


def _sum_dtype(device: torch.device) -> torch.dtype:
    """Loss sums on the device: float64, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


@contextlib.contextmanager
def _deterministic(device: torch.device):
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


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@contextlib.contextmanager
def _num_threads(n: int | None):
    """Run with ``n`` intra-op threads (None: leave as is), then restore the previous count."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_cpu_threads(
    model: str, num_classes: int, image_shape: tuple[int, int], *, batch_size: int, repeats: int = 2
) -> dict[str, Any]:
    """The faster intra-op thread count for training ``model`` on this CPU now: 1 or all cores.

    Small models run many short parallel regions, and on a shared machine a second thread
    that the scheduler has parked stalls every one of them: on 2 busy cores one thread was
    measured 20x faster than two, on 2 idle cores two were 1.7x faster than one. So the
    count is measured (one training step each, alternating, fastest of ``repeats``), not
    assumed. Returns ``{"threads": n, "step_s": {count: seconds}}``.
    """
    cores = _usable_cores()
    if cores < 2:
        return {"threads": 1, "step_s": {}}
    runtime.keep_freed_memory()  # measure the steps as training will run them
    h, w = image_shape
    with torch.random.fork_rng(devices=[]), _num_threads(None):
        torch.manual_seed(0)
        net = _models.create_model(model, num_classes)
        opt = _adam(net.parameters(), lr=1e-4, device=torch.device("cpu"))
        x = _models.preprocess(torch.randint(0, 256, (batch_size, h, w), dtype=torch.uint8))
        y = torch.randint(0, 2, (batch_size, num_classes)).float()
        cpu = torch.device("cpu")
        times: dict[int, float] = {}
        for r in range(repeats):
            for n in (1, cores):
                torch.set_num_threads(n)
                first = _time_step(net, opt, x, y, 1, cpu, 1)  # a warm-up on the first round
                if r == 0 and n == cores and first > 3 * times[1]:
                    times[n] = first  # clearly slower even counting its warm-up: stop here
                    break
                times[n] = min(times.get(n, math.inf), first if r else _time_step(net, opt, x, y, 1, cpu, 1))
            else:
                continue
            break
    return {"threads": min(times, key=times.get), "step_s": {str(k): v for k, v in times.items()}}


# -- metrics ---------------------------------------------------------------------------


def per_class_average_precision(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each class.

    Parameters
    ----------
    labels : array ``[N, C]`` of 0/1.
    scores : array ``[N, C]`` of scores (probabilities or logits).

    Returns
    -------
    ndarray float64 ``[C]``: :func:`prunecxr.metrics.ranking_metrics`'s AP (scikit-learn's
    ``average_precision_score``) of each column, NaN for a class without a positive (its AP
    is undefined).
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(f"labels and scores must both be [N, C]; got {labels.shape} and {scores.shape}")
    return ranking_metrics(labels, scores)[0]


def mean_average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes with at least one positive of :func:`per_class_average_precision`.

    NaN when no class has a positive.
    """
    ap = per_class_average_precision(labels, scores)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else math.nan


# -- augmentation ----------------------------------------------------------------------


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
        raise ValueError(f"expected uint8 images [..., H, W], got {images.dtype} {tuple(images.shape)}")
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


# -- the stacked optimizer -------------------------------------------------------------


class StackedAdam:
    """Adam for the parameters of ``n`` stacked models, each with its own step count.

    Each parameter holds the ``n`` models' tensors concatenated along dimension 0 (see
    :func:`prunecxr.models.stack_models`). ``step(active)`` applies torch.optim.Adam's
    update (no weight decay, no AMSGrad) to the active models only,

    .. math:: m \\leftarrow \\beta_1 m + (1-\\beta_1) g,\\quad
              v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2,\\quad
              p \\leftarrow p - \\frac{lr}{1-\\beta_1^t}\\,
              \\frac{m}{\\sqrt{v}/\\sqrt{1-\\beta_2^t} + \\epsilon},

    with ``t`` the model's own step count, and leaves the other models' parameters and
    moments untouched. :meth:`model_state_dict` and :meth:`load_model_state_dict` convert
    one model's part to and from the ``state_dict`` of ``torch.optim.Adam`` over that
    model's own parameters, so a seed can resume either way.
    """

    def __init__(self, params: Iterable[nn.Parameter], n: int, *, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.n, self.lr, self.betas, self.eps = int(n), float(lr), tuple(betas), float(eps)
        if not self.params:
            raise ValueError("StackedAdam got no parameters")
        for i, p in enumerate(self.params):
            if p.ndim == 0 or p.shape[0] % self.n:
                raise ValueError(f"parameter {i} {tuple(p.shape)} is not a stack of {self.n} models")
            if p.device != self.params[0].device:
                raise ValueError("StackedAdam needs all parameters on one device")
        self.device = self.params[0].device
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        # step counts stay on the device: no host-device copy (and no GPU sync) per step
        self.steps = torch.zeros(self.n, dtype=_sum_dtype(self.device), device=self.device)
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _mask(self, active: tuple[int, ...]) -> torch.Tensor:
        if active not in self._masks:
            mask = torch.zeros(self.n, dtype=torch.bool)
            mask[list(active)] = True
            self._masks[active] = mask.to(self.device)
        return self._masks[active]

    @torch.no_grad()
    def step(self, active: Sequence[int]) -> None:
        """One Adam step of the models ``active`` (indices into the stack)."""
        active = tuple(sorted(set(int(k) for k in active)))
        mask = self._mask(active)
        every = len(active) == self.n
        self.steps += mask
        b1, b2 = self.betas
        t = self.steps.clamp(min=1.0)
        step_size = (self.lr / (1.0 - b1**t)).to(torch.float32)
        bc2_sqrt = torch.sqrt(1.0 - b2**t).to(torch.float32)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            g = p.grad
            if g is None:
                continue
            shape = (self.n,) + (1,) * p.ndim
            dmask, dstep, dbc2 = mask.view(shape), step_size.view(shape), bc2_sqrt.view(shape)
            P, G, M, V = (x.unflatten(0, (self.n, -1)) for x in (p, g, m, v))
            G = G.to(M.dtype)
            if every:  # the same arithmetic as below, without the selections
                M.lerp_(G, 1 - b1)
                V.mul_(b2).addcmul_(G, G, value=1 - b2)
                P.sub_(M / (V.sqrt() / dbc2 + self.eps) * dstep)
                continue
            M.copy_(torch.where(dmask, torch.lerp(M, G, 1 - b1), M))
            V.copy_(torch.where(dmask, torch.addcmul(V * b2, G, G, value=1 - b2), V))
            update = M / (V.sqrt() / dbc2 + self.eps) * dstep
            P.sub_(torch.where(dmask, update, torch.zeros((), device=p.device, dtype=p.dtype)))

    def _template(self) -> dict[str, Any]:
        dummy = [nn.Parameter(torch.zeros(1)) for _ in self.params]
        return torch.optim.Adam(dummy, lr=self.lr, betas=self.betas, eps=self.eps).state_dict()

    def model_state_dict(self, k: int) -> dict[str, Any]:
        """Model ``k``'s part, as ``torch.optim.Adam(model_k.parameters()).state_dict()``."""
        sd = self._template()
        step = float(self.steps[k])
        if step > 0:
            sd["state"] = {
                i: {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": m.detach().unflatten(0, (self.n, -1))[k].to("cpu", copy=True).contiguous(),
                    "exp_avg_sq": v.detach().unflatten(0, (self.n, -1))[k].to("cpu", copy=True).contiguous(),
                }
                for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq))
            }
        return sd

    @torch.no_grad()
    def load_model_state_dict(self, k: int, state_dict: dict[str, Any]) -> None:
        """Set model ``k``'s part from a ``torch.optim.Adam`` state of that model alone."""
        state = state_dict.get("state", {})
        if not state:
            for m, v in zip(self.exp_avg, self.exp_avg_sq):
                m.unflatten(0, (self.n, -1))[k].zero_()
                v.unflatten(0, (self.n, -1))[k].zero_()
            self.steps[k] = 0.0
            return
        if sorted(state) != list(range(len(self.params))):
            raise ValueError(f"optimizer state has {len(state)} parameters, the model {len(self.params)}")
        steps = {float(s["step"]) for s in state.values()}
        if len(steps) != 1:
            raise ValueError(f"optimizer state has unequal step counts {sorted(steps)}")
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            m.unflatten(0, (self.n, -1))[k].copy_(state[i]["exp_avg"])
            v.unflatten(0, (self.n, -1))[k].copy_(state[i]["exp_avg_sq"])
        self.steps[k] = steps.pop()


# -- data --------------------------------------------------------------------------------


def _check_split(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{what} images must be a uint8 array [N, H, W], got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{what} labels must be [N, C] with N = {images.shape[0]}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 1):
        raise ValueError(f"{what} labels must be 0/1, found values in [{labels.min()}, {labels.max()}]")
    if images.shape[0] == 0:
        raise ValueError(f"{what} split is empty")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


class _Images:
    """A split's uint8 images and 0/1 labels, served as device tensors by index.

    Images live on the device when they fit (a quarter of the RAM for the CPU, half the
    free memory of a GPU); otherwise every batch is gathered from the (memory-mapped) array
    in this process and copied over, through pinned memory on CUDA.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, device: torch.device):
        self.n, self.h, self.w = images.shape
        self.device = device
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
        nbytes = images.nbytes
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            resident = nbytes <= free // 2
        else:
            resident = nbytes <= _memory_bytes() // 4
        if resident:
            self.images = torch.from_numpy(np.array(images, copy=True)).to(device)
            self.array = None
        else:
            self.images = None
            self.array = images

    def __len__(self) -> int:
        return self.n

    def take(
        self, idx: torch.Tensor, dev_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``[len(idx), H, W]`` and float labels ``[len(idx), C]`` on the device.

        ``idx`` is a CPU index tensor; ``dev_idx``, if given, the same on the device.
        """
        if dev_idx is None:
            dev_idx = idx.to(self.device, non_blocking=True)
        if self.images is not None:
            return self.images.index_select(0, dev_idx), self.labels.index_select(0, dev_idx)
        batch = torch.from_numpy(np.take(self.array, idx.numpy(), axis=0))
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True), self.labels.index_select(0, dev_idx)

    def ordered(self, batch_size: int):
        """The split in order, in batches: ``(images, labels)`` device tensors."""
        idx = torch.arange(self.n)
        dev_idx = idx.to(self.device)
        for start in range(0, self.n, batch_size):
            sl = slice(start, min(start + batch_size, self.n))
            yield self.take(idx[sl], dev_idx[sl])


# -- per-seed state --------------------------------------------------------------------


def _derived_seed(seed: int, purpose: str) -> int:
    digest = hashlib.blake2b(f"prunecxr:{purpose}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _init_state(config: TrainConfig, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """The initial weights of ``seed``: only the seed decides them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _models.create_model(config.model, num_classes, pretrained=config.pretrained)
    return model.state_dict()


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True).contiguous()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def _bn_count(state: dict[str, torch.Tensor]) -> int:
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            return int(value)
    return 0


def _set_bn_count(state: dict[str, torch.Tensor], count: int) -> None:
    for key in state:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(count, dtype=torch.long)


def _save(path: Path, obj) -> None:
    with artifacts.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"cannot load {path}: {err}") from err


@dataclass
class _Seed:
    """One seed of a group: its own data generator, early stopping and records."""

    seed: int
    epoch: int  # epochs completed
    generator: torch.Generator
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor] | None
    history: list[dict[str, float]]
    bn_count: int


def _meta(config: TrainConfig, num_classes: int, image_shape: tuple[int, int]) -> dict[str, Any]:
    return {"config": config.to_dict(), "num_classes": int(num_classes), "image_shape": list(image_shape)}


def _check_meta(found: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    for key in ("config", "num_classes", "image_shape"):
        old, new = found.get(key), expected[key]
        if key == "config" and isinstance(old, dict):
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            if diff:
                shown = ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items())
                raise ValueError(
                    f"{where} was trained with {shown}. A population is trained with one "
                    "configuration: use another run name, or delete the run's models/ folder "
                    "to start over."
                )
        elif old != new:
            raise ValueError(
                f"{where} was trained with {key}={old!r}, this data has {new!r}. Use another "
                "run name, or delete the run's models/ folder to start over."
            )


def _start_seed(seed: int, rp: paths.RunPaths, meta: dict[str, Any], config: TrainConfig):
    """(seed record, model state, optimizer state or None) from last.pt or a fresh start."""
    state_path = rp.train_state(seed)
    _remove_stale_temporaries(rp.seed_dir(seed))
    if state_path.exists():
        saved = _load(state_path)
        if not isinstance(saved, dict) or saved.get("format") != _STATE_FORMAT or saved.get("seed") != seed:
            raise ValueError(f"{state_path} is not a training state of seed {seed} (format {_STATE_FORMAT})")
        _check_meta(saved, meta, state_path)
        gen = torch.Generator()
        gen.set_state(saved["generator"])
        stopper = EarlyStopping(config.patience)
        stopper.load_state_dict(saved["early_stopping"])
        record = _Seed(
            seed=seed, epoch=int(saved["epoch"]), generator=gen, stopper=stopper,
            best_state=saved["best_model"], history=list(saved["history"]),
            bn_count=_bn_count(saved["model"]),
        )
        return record, saved["model"], saved["optimizer"]
    state = _init_state(config, meta["num_classes"], seed)
    gen = torch.Generator().manual_seed(_derived_seed(seed, "data"))
    record = _Seed(
        seed=seed, epoch=0, generator=gen, stopper=EarlyStopping(config.patience),
        best_state=None, history=[], bn_count=_bn_count(state),
    )
    return record, state, None


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of writes that a killed process left behind."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    artifacts.write_csv(path, pd.DataFrame(rows, columns=HISTORY_COLUMNS))


def _save_progress(rp, rec: _Seed, model_state, optim_state, meta) -> None:
    _save(rp.train_state(rec.seed), {
        "format": _STATE_FORMAT,
        "seed": rec.seed,
        "epoch": rec.epoch,
        **meta,
        "model": model_state,
        "optimizer": optim_state,
        "generator": rec.generator.get_state(),
        "early_stopping": rec.stopper.state_dict(),
        "best_model": rec.best_state,
        "history": rec.history,
    })
    _write_history(rp.history(rec.seed), rec.history)


def _finalize(rp, rec: _Seed) -> None:
    if rec.best_state is None:
        raise RuntimeError(
            f"seed {rec.seed}: the validation loss was never finite in {rec.epoch} epochs "
            "(training diverged); lower lr or check the data"
        )
    _write_history(rp.history(rec.seed), rec.history)
    _save(rp.checkpoint(rec.seed), rec.best_state)
    rp.train_state(rec.seed).unlink(missing_ok=True)


# -- one group of seeds ----------------------------------------------------------------


def _interactive() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _progress(progress: bool, *, transient: bool = False, **kwargs):
    """A tqdm bar. In a terminal, ``transient`` bars vanish when done; elsewhere (notebooks,
    logs) each such bar stays as one final line, and redraws are rarer."""
    tty = _interactive()
    with warnings.catch_warnings():  # tqdm.auto warns on import when ipywidgets is absent
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

        return tqdm(disable=not progress, mininterval=0.5 if tty else 5.0, dynamic_ncols=True,
                    leave=not (transient and tty), **kwargs)


def _bn_modules(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


class _Report:
    """Progress of a population as tqdm bars: one for the seeds, one per group in training."""

    def __init__(self, progress: bool, *, total: int, done: int, max_epochs: int):
        self.progress, self.max_epochs = progress, max_epochs
        self.seeds = _progress(progress, total=total, initial=done, desc="seeds", unit="seed")
        self.groups: dict[str, Any] = {}

    def start(self, label: str, epoch: int) -> None:
        self.groups[label] = _progress(self.progress, total=self.max_epochs, initial=epoch, desc=label,
                                       unit="epoch", transient=True)

    def epoch(self, label: str, train_loss: float, val_loss: float, val_ap: float) -> None:
        bar = self.groups[label]
        bar.update(1)
        bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}",
                        val_mAP="n/a" if math.isnan(val_ap) else f"{val_ap:.3f}")

    def final(self, seed: int, best_loss: float, best_epoch: int) -> None:
        self.seeds.update(1)
        self.seeds.set_postfix(seed=seed, best_val_loss=f"{best_loss:.4f}", best_epoch=best_epoch,
                               refresh=False)

    def stop(self, label: str) -> None:
        bar = self.groups.pop(label, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        for label in list(self.groups):
            self.stop(label)
        self.seeds.close()


class _QueueReport:
    """A worker process's :class:`_Report`: the events go to the parent through a queue."""

    def __init__(self, queue, parent: int):
        self.queue, self.parent = queue, parent

    def __getattr__(self, name):
        if name not in ("start", "epoch", "final", "stop"):
            raise AttributeError(name)

        def send(*args):
            if os.getppid() != self.parent:  # the parent died: stop at this epoch boundary
                os._exit(1)
            self.queue.put((name, args))

        return send


def _train_group(
    seeds: Sequence[int | None],
    train: _Images,
    val: _Images,
    *,
    config: TrainConfig,
    meta: dict[str, Any],
    rp: paths.RunPaths,
    device: torch.device,
    progress: bool,
    report,
) -> list[_Seed]:
    """Train the seeds of one group (``None`` marks an unused slot) until each is final."""
    n = len(seeds)
    num_classes = meta["num_classes"]
    records: list[_Seed | None] = []
    states, optim_states = [], []
    for seed in seeds:
        if seed is None:
            records.append(None)
            states.append(None)
            optim_states.append(None)
            continue
        rec, state, opt_state = _start_seed(seed, rp, meta, config)
        records.append(rec)
        states.append(state)
        optim_states.append(opt_state)
    filler = next(s for s in states if s is not None)
    states = [s if s is not None else filler for s in states]

    template = _models.create_model(config.model, num_classes, pretrained=False)
    if n == 1:  # one model trains as itself (stacking one would only copy it)
        template.load_state_dict(states[0])
        net = template.to(device)
    else:
        members = []
        for state in states:
            member = copy.deepcopy(template)
            member.load_state_dict(state)
            members.append(member)
        net = _models.stack_models(members).to(device)
        del members
    if _channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    if n == 1:
        optimizer = _adam(net.parameters(), lr=config.lr, device=device)
        if optim_states[0] is not None:
            fresh = optimizer.state_dict()
            fresh["state"] = optim_states[0]["state"]
            optimizer.load_state_dict(fresh)
    else:
        optimizer = StackedAdam(net.parameters(), n, lr=config.lr)
        for k, opt_state in enumerate(optim_states):
            if opt_state is not None:
                optimizer.load_model_state_dict(k, opt_state)

    label = f"seed {seeds[0]}" if n == 1 else f"seeds {','.join(str(s) for s in seeds if s is not None)}"
    active = {k for k, rec in enumerate(records) if rec is not None}
    report.start(label, min(records[k].epoch for k in active))
    try:
        while active:
            epoch = min(records[k].epoch for k in active)
            cohort = sorted(k for k in active if records[k].epoch == epoch)
            frozen = [k for k in range(n) if k not in cohort]
            t0 = time.perf_counter()
            train_mode = not (config.bn_eval_compat and epoch >= 1)
            net.train(train_mode)
            saved_bn = _snapshot_bn(net, n, frozen) if train_mode and frozen and n > 1 else None
            train_loss = _train_epoch(
                net, optimizer, train, [records[k] for k in cohort], cohort, n,
                config=config, device=device, progress=progress, desc=f"{label} epoch {epoch + 1}",
            )
            if saved_bn is not None:
                _restore_bn(n, saved_bn)
            if train_mode:
                for k in cohort:
                    records[k].bn_count += math.ceil(len(train) / config.batch_size)
            val_loss, val_ap = _validate(net, val, n, batch_size=config.batch_size, device=device)
            seconds = time.perf_counter() - t0
            for j, k in enumerate(cohort):
                if not (math.isfinite(val_loss[k]) and math.isfinite(train_loss[j])):
                    raise FloatingPointError(
                        f"seed {records[k].seed} diverged in epoch {records[k].epoch + 1}: training "
                        f"loss {train_loss[j]}, validation loss {val_loss[k]}. Lower lr (now "
                        f"{config.lr}) under another run name, or delete the run's models/ "
                        "folder and train again."
                    )

            model_states = _unstack_net_state(net, n)
            for j, k in enumerate(cohort):
                rec = records[k]
                rec.epoch += 1
                state = model_states[k]
                _set_bn_count(state, rec.bn_count)
                rec.history.append({
                    "epoch": rec.epoch, "train_loss": train_loss[j], "val_loss": val_loss[k],
                    "val_mean_ap": val_ap[k], "seconds": seconds,
                })
                if rec.stopper.update(rec.epoch, val_loss[k]):
                    rec.best_state = state
                if rec.stopper.should_stop or rec.epoch >= config.max_epochs:
                    _finalize(rp, rec)
                    active.discard(k)
                    report.final(rec.seed, rec.stopper.best_loss, rec.stopper.best_epoch)
                else:
                    opt_state = (
                        _to_cpu(optimizer.state_dict()) if n == 1 else optimizer.model_state_dict(k)
                    )
                    _save_progress(rp, rec, state, opt_state, meta)
            aps = [val_ap[k] for k in cohort if np.isfinite(val_ap[k])]
            report.epoch(label, float(np.mean(train_loss)), float(np.mean([val_loss[k] for k in cohort])),
                         float(np.mean(aps)) if aps else math.nan)
    finally:
        report.stop(label)
    return [r for r in records if r is not None]


def _unstack_net_state(net: nn.Module, n: int) -> list[dict[str, torch.Tensor]]:
    """The ``n`` models' ``state_dict`` s (on the CPU) of a stacked network."""
    state = _to_cpu(net.state_dict())
    if n == 1:
        return [{k: v.contiguous() for k, v in state.items()}]
    return _models.unstack_state_dict(state, n)


def _snapshot_bn(net: nn.Module, n: int, slots: list[int]):
    """BatchNorm running statistics of the models ``slots`` of a stack (to undo an epoch)."""
    return [
        (m, k, m.running_mean.unflatten(0, (n, -1))[k].clone(),
         m.running_var.unflatten(0, (n, -1))[k].clone())
        for m in _bn_modules(net) for k in slots
    ]


@torch.no_grad()
def _restore_bn(n: int, saved) -> None:
    for m, k, mean, var in saved:
        m.running_mean.unflatten(0, (n, -1))[k].copy_(mean)
        m.running_var.unflatten(0, (n, -1))[k].copy_(var)


def _train_epoch(net, optimizer, train: _Images, records: list[_Seed], cohort: list[int], n: int, *,
                 config: TrainConfig, device: torch.device, progress: bool, desc: str) -> list[float]:
    """One epoch of the seeds ``cohort`` (indices into the stack); their mean training losses."""
    size, bsz = len(train), config.batch_size
    perms, flips, angles = [], [], []
    for rec in records:  # the seed's generator alone decides order and augmentation
        perms.append(torch.randperm(size, generator=rec.generator))
        if config.augment:
            flip, angle = draw_augmentation(size, rec.generator)
            flips.append(flip)
            angles.append(angle)
    perm = torch.stack(perms)  # [c, N]
    perm_dev = perm.to(device)
    flip = torch.stack(flips).to(device) if flips else None
    angle = torch.stack(angles).to(device) if angles else None
    c = len(cohort)
    every = c == n
    cohort_t = torch.tensor(cohort, device=device)
    cl = _channels_last(device)
    total = torch.zeros(c, dtype=_sum_dtype(device), device=device)
    steps = math.ceil(size / bsz)
    # batches: in a terminal only (a notebook would store every redraw)
    bar = _progress(progress and steps > 1 and _interactive(), total=steps, desc=desc, unit="batch",
                    transient=True)
    try:
        for step in range(steps):
            sl = slice(step * bsz, min((step + 1) * bsz, size))
            idx = perm[:, sl]  # [c, b]
            b = idx.shape[1]
            images, labels = train.take(idx.reshape(-1), perm_dev[:, sl].reshape(-1))
            images = images.view(c, b, train.h, train.w)
            if flip is not None:
                images = augment(images, flip=flip[:, sl], angle=angle[:, sl])
            if n == 1:
                x = _models.preprocess(images[0], channels_last=cl)
            else:
                stack = images.transpose(0, 1).contiguous()  # [b, c, H, W]
                if not every:
                    full = torch.zeros(b, n, train.h, train.w, dtype=torch.uint8, device=device)
                    full[:, cohort_t] = stack
                    stack = full
                x = _models.preprocess(stack, channels_last=cl)
            y = labels.view(c, b, -1).transpose(0, 1)  # [b, c, C]
            with _autocast(device):
                logits = net(x)
            logits = logits.float().view(b, n, -1)
            if not every:
                logits = logits.index_select(1, cohort_t)
            losses = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=(0, 2))
            optimizer.zero_grad()
            losses.sum().backward()
            if n == 1:
                optimizer.step()
            else:
                optimizer.step(cohort)
            total += losses.detach().to(total.dtype) * b
            if progress and (step % 10 == 9 or step == steps - 1):
                bar.set_postfix(loss=f"{(total.sum() / (c * sl.stop)).item():.4f}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return (total.double().cpu() / size).tolist()


@torch.no_grad()
def _validate(net, val: _Images, n: int, *, batch_size: int, device: torch.device):
    """Per model of the stack: mean BCE over all validation images and classes, and mean AP."""
    net.eval()
    cl = _channels_last(device)
    loss_sum = torch.zeros(n, dtype=_sum_dtype(device), device=device)
    probs, labels = [], []
    for images, y in val.ordered(batch_size):
        b = images.shape[0]
        x = _models.preprocess(images, channels_last=cl)
        if n > 1:
            x = x.repeat(1, n, 1, 1)
        with _autocast(device):
            logits = net(x)
        logits = logits.float().view(b, n, -1)
        target = y.unsqueeze(1).expand_as(logits)
        losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss_sum += losses.sum(dim=(0, 2)).to(loss_sum.dtype)
        probs.append(torch.sigmoid(logits))
        labels.append(y)
    p = torch.cat(probs).cpu().numpy()  # [N, n, C]
    t = torch.cat(labels).cpu().numpy()
    val_loss = (loss_sum.double().cpu() / (len(val) * t.shape[1])).tolist()
    val_ap = [mean_average_precision(t, p[:, k]) if np.isfinite(p[:, k]).all() else math.nan
              for k in range(n)]
    return val_loss, val_ap


# -- seeds in worker processes (CPU) ---------------------------------------------------

_WORKER: dict[str, Any] = {}


def _die_with_parent(parent: int) -> None:
    """Make this worker die with its parent, so a killed run leaves no writer behind."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _array_handles(arrays, folder: Path) -> list[tuple]:
    """How a helper process opens each array again, without receiving its data.

    An array that is a whole memory-mapped file (the image cache) is mapped again from that
    file; any other is saved once to ``folder`` as ``.npy``. Spawn sends a helper's arguments
    through a pipe, and a helper that dies before reading a large argument leaves the
    sending thread blocked for good; handles keep that message small.
    """
    handles = []
    for i, a in enumerate(arrays):
        if (isinstance(a, np.memmap) and isinstance(a.base, mmap.mmap) and a.filename
                and a.flags.c_contiguous):
            handles.append(("memmap", str(a.filename), a.dtype.str, tuple(a.shape), int(a.offset)))
        else:
            path = folder / f"array-{i}.npy"
            np.save(path, np.ascontiguousarray(a), allow_pickle=False)
            handles.append(("npy", str(path)))
    return handles


def _open_array(handle: tuple) -> np.ndarray:
    if handle[0] == "memmap":
        _, filename, dtype, shape, offset = handle
        return np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset)
    return artifacts.load_npy(handle[1], mmap=True)


def _worker_init(queue, handles, parent: int) -> None:
    torch.set_num_threads(1)
    runtime.keep_freed_memory()
    _die_with_parent(parent)
    tx, ty, vx, vy = (_open_array(h) for h in handles)
    cpu = torch.device("cpu")
    _WORKER.update(queue=queue, parent=parent, train=_Images(tx, ty, cpu), val=_Images(vx, vy, cpu))
    queue.put(("_pid", (os.getpid(),)))


def _worker_train(group, config: TrainConfig, meta: dict[str, Any], rp: paths.RunPaths) -> None:
    _train_group(
        group, _WORKER["train"], _WORKER["val"], config=config, meta=meta, rp=rp,
        device=torch.device("cpu"), progress=False,
        report=_QueueReport(_WORKER["queue"], _WORKER["parent"]),
    )


class _LockedReport:
    """A :class:`_Report` shared by this process's training and the worker events."""

    def __init__(self, report: _Report):
        self.report, self.lock = report, threading.Lock()

    def __getattr__(self, name):
        method = getattr(self.report, name)

        def call(*args):
            with self.lock:
                return method(*args)

        return call


def _train_parallel(groups, arrays, *, config, meta, rp, workers: int, report: _Report) -> None:
    """Train the groups in this process and ``workers - 1`` helper processes, one thread each.

    Whoever is free takes the next group, so this process trains from the start while the
    helpers start up (spawn, imports), and a slow start costs nothing but their share.
    """
    import multiprocessing
    import queue as queue_module
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    remaining, lock = deque(groups), threading.Lock()

    def take():
        with lock:
            return remaining.popleft() if remaining else None

    shared = _LockedReport(report)
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    pids: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    fed = threading.Event()  # the feeder has nothing more to hand out, or stopped
    # The helpers are started by the feeder thread (ProcessPoolExecutor spawns them in
    # submit), and PR_SET_PDEATHSIG kills them when the thread that started them ends, not
    # the process: so the feeder stays until the pool has shut its helpers down cleanly.
    release = threading.Event()

    def drain():
        while True:
            try:
                name, args = events.get_nowait()
            except queue_module.Empty:
                return
            if name == "_pid":
                pids.append(args[0])
            else:
                getattr(shared, name)(*args)

    pool = None
    scratch = tempfile.TemporaryDirectory(prefix="prunecxr-train-")
    if workers > 1:
        handles = _array_handles(arrays, Path(scratch.name))
        pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=ctx, initializer=_worker_init,
                                   initargs=(events, handles, os.getpid()))

    def feed():  # keeps every helper busy, relays their progress, notes their errors
        running = set()
        try:
            while not stop.is_set():
                while len(running) < workers - 1:
                    group = take()
                    if group is None:
                        break
                    running.add(pool.submit(_worker_train, group, config, meta, rp))
                if not running:
                    return
                done, running = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    future.result()
        except BrokenProcessPool as err:
            errors.append(RuntimeError(
                "a helper training process died before finishing its seed. Helpers are started "
                "with spawn, which imports the calling script again: a script that trains with "
                "population='parallel' or 'auto' must keep its top level under "
                "`if __name__ == '__main__':` (or train with population='sequential')."
            ).with_traceback(err.__traceback__))
        except BaseException as err:  # a helper failed: this process stops at its next group
            errors.append(err)
        finally:
            drain()
            fed.set()
            release.wait()

    feeder = threading.Thread(target=feed, name="prunecxr-train-feeder", daemon=True)
    if pool is not None:
        feeder.start()
    try:
        cpu = torch.device("cpu")
        with _num_threads(1):
            train, val = _Images(arrays[0], arrays[1], cpu), _Images(arrays[2], arrays[3], cpu)
            while not errors:
                group = take()
                if group is None:
                    break
                _train_group(group, train, val, config=config, meta=meta, rp=rp, device=cpu,
                             progress=False, report=shared)
        if pool is not None:
            fed.wait()
        if errors:
            raise errors[0]
        if pool is not None:
            pool.shutdown(wait=True)  # the helpers exit on their own
    except BaseException:
        # interrupted, or a helper failed: stop the helpers now (every write is atomic)
        stop.set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        release.set()
        scratch.cleanup()
    if pool is not None:
        feeder.join()
    events.close()
    events.join_thread()


# -- choosing how to train the population ----------------------------------------------


def _time_step(net, optimizer, x, y, n, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with _autocast(device):
            logits = net(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()
        if n == 1:
            optimizer.step()
        else:
            optimizer.step(range(n))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_population_speedup(
    model: str,
    num_classes: int,
    image_shape: tuple[int, int],
    *,
    batch_size: int,
    n_models: int,
    device: str | torch.device = "auto",
    repeats: int = 2,
) -> dict[str, Any]:
    """Time one training step of one model and of ``n_models`` stacked, on ``device``.

    Both are warmed up first; each time is the fastest of ``repeats`` steps (forward,
    backward and optimizer step on random inputs of the real shape, with bf16 autocast and
    channels_last on CUDA).

    Returns
    -------
    dict with ``single_s`` and ``stacked_s`` (seconds per step) and ``speedup``
    (``n_models * single_s / stacked_s``: above 1 when grouped training is faster; 0 when
    the stacked network does not fit in memory).
    """
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    h, w = image_shape
    result: dict[str, Any] = {"n_models": int(n_models), "batch_size": int(batch_size)}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(0)
        cl = _channels_last(dev)
        single = _models.create_model(model, num_classes).to(dev)
        if cl:
            single = single.to(memory_format=torch.channels_last)
        opt1 = _adam(single.parameters(), lr=1e-4, device=dev)
        x1 = _models.preprocess(
            torch.randint(0, 256, (batch_size, h, w), dtype=torch.uint8, device=dev), channels_last=cl
        )
        y1 = torch.randint(0, 2, (batch_size, num_classes), device=dev).float()
        _time_step(single, opt1, x1, y1, 1, dev, 1)  # warm-up
        single_s = _time_step(single, opt1, x1, y1, 1, dev, repeats)
        try:
            members = [_models.create_model(model, num_classes) for _ in range(n_models)]
            stacked = _models.stack_models(members).to(dev)
            del members
            if cl:
                stacked = stacked.to(memory_format=torch.channels_last)
            optn = StackedAdam(stacked.parameters(), n_models, lr=1e-4)
            xn = _models.preprocess(
                torch.randint(0, 256, (batch_size, n_models, h, w), dtype=torch.uint8, device=dev),
                channels_last=cl,
            )
            yn = torch.randint(0, 2, (batch_size, n_models * num_classes), device=dev).float()
            _time_step(stacked, optn, xn, yn, n_models, dev, 1)  # warm-up
            stacked_s = _time_step(stacked, optn, xn, yn, n_models, dev, repeats)
            del stacked, optn, xn, yn
        except torch.OutOfMemoryError:
            stacked_s = math.inf
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        # time the single model again: the machine's load may have changed meanwhile
        single_s = min(single_s, _time_step(single, opt1, x1, y1, 1, dev, repeats))
    result.update(single_s=single_s, stacked_s=stacked_s, speedup=n_models * single_s / stacked_s)
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu x{torch.get_num_threads()} threads"
    return device.type


def _grouped_speedup(config: TrainConfig, num_classes, image_shape, group_size, device) -> dict[str, Any]:
    """How much faster ``group_size`` seeds train stacked: measured once per machine and setup."""
    key = "|".join(str(x) for x in (
        platform.node(), _device_name(device), torch.__version__, config.model, num_classes,
        *image_shape, config.batch_size, group_size,
    ))
    cache = paths.cache_root() / _CALIBRATION_FILE
    known = {}
    if cache.exists():
        try:
            known = artifacts.read_json(cache)
        except ValueError:
            known = {}
    if key not in known:
        known[key] = measure_population_speedup(
            config.model, num_classes, image_shape, batch_size=config.batch_size,
            n_models=group_size, device=device,
        )
        known[key]["measured"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        artifacts.write_json(cache, known)
    return dict(known[key])


def _chunk(seeds: list[int], size: int) -> list[list[int]]:
    """``seeds`` in consecutive groups of at most ``size``, as equal as possible."""
    if not seeds:
        return []
    k = math.ceil(len(seeds) / size)
    bounds = np.linspace(0, len(seeds), k + 1).round().astype(int)
    return [seeds[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _plan(
    pending: list[int], *, population: str, config: TrainConfig, num_classes: int,
    image_shape: tuple[int, int], n_train: int, data_bytes: int, device: torch.device,
    rp: paths.RunPaths, previous: dict | None, threads: int | None,
) -> dict[str, Any]:
    """How to train the pending seeds: mode, groups, thread count, and the measurements."""
    spec = _models.MODELS[config.model]
    previous = previous or {}
    in_progress = [s for s in pending if rp.train_state(s).exists()]
    if population == "grouped" and not spec.stackable:
        raise ValueError(
            f"model {config.model!r} cannot be trained grouped; use population='sequential' or 'auto'"
        )
    if population == "parallel" and device.type != "cpu":
        raise ValueError(f"population='parallel' trains seeds in CPU processes; the device is {device}")
    resume = bool(in_progress) and previous.get("mode") in POPULATION_MODES[1:]
    mode = previous["mode"] if population == "auto" and resume else population
    cpu = device.type == "cpu"
    cores = _usable_cores()
    measured = calibration = estimates = None
    recorded = resume and previous.get("threads")
    if cpu and (mode == "auto" or (threads is None and mode != "parallel" and not recorded)):
        measured = measure_cpu_threads(config.model, num_classes, image_shape, batch_size=config.batch_size)
    if not cpu:
        threads = None
    elif mode == "parallel":
        threads = 1
    elif threads is None:
        threads = int(previous["threads"]) if recorded else measured["threads"]

    if mode == "auto":
        # whole-population estimates from measured step times (validation scales alike)
        steps = len(pending) * config.max_epochs * math.ceil(n_train / config.batch_size)
        estimates = {}
        step_s = None
        if cpu:
            step_s = measured["step_s"].get(str(threads)) or measured["step_s"].get("1")
            estimates["sequential"] = steps * step_s
            workers = min(cores, len(pending))
            # only where more threads measured faster: then cores are free now; on a busy
            # machine a second process would only compete with the first
            if workers > 1 and data_bytes <= PARALLEL_MAX_BYTES and measured["threads"] > 1:
                # this process starts at once; the helpers join after their start-up, and the
                # last seeds may leave a core idle for about half a seed
                per_seed = steps * measured["step_s"]["1"] / len(pending)
                estimates["parallel"] = steps * measured["step_s"]["1"] / workers + per_seed / 2
        if spec.stackable and len(pending) > 1:
            size = len(_chunk(pending, MAX_GROUP)[0])  # the largest group
            with _num_threads(threads):
                calibration = _grouped_speedup(config, num_classes, image_shape, size, device)
            if step_s is None:
                step_s = calibration["single_s"]
                estimates["sequential"] = steps * step_s
            if calibration["speedup"] > 0:
                estimates["grouped"] = steps * step_s / calibration["speedup"]
        estimates.setdefault("sequential", 0.0)
        mode = "sequential"  # unless another way is clearly faster
        for other in ("parallel", "grouped"):
            if other in estimates and estimates[other] * MIN_GROUPED_SPEEDUP <= estimates[mode]:
                mode = other
        if mode == "parallel":
            threads = 1

    if mode in ("sequential", "parallel"):
        groups = [[s] for s in pending]
    else:
        groups, placed = [], set()
        if previous.get("mode") == "grouped" and in_progress:
            # keep the slots of unfinished groups, so a resumed group is the same network
            for old in previous.get("groups", []):
                if any(s in in_progress for s in old):
                    groups.append([s if s in pending else None for s in old])
                    placed.update(s for s in old if s in pending)
        groups += _chunk([s for s in pending if s not in placed], MAX_GROUP)
    return {
        "mode": mode, "groups": groups, "threads": threads,
        "workers": min(cores, len(pending)) if mode == "parallel" else None,
        "threads_measured": measured, "calibration": calibration, "estimates_s": estimates,
    }


# -- the population --------------------------------------------------------------------


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        seeds = range(int(seeds))
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r}")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out}")
    if not out:
        raise ValueError("no seeds to train")
    return out


def fit_population(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    seeds: Iterable[int] | int,
    config: TrainConfig,
    out: paths.RunPaths,
    classes: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    population: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train (or resume) one model per seed on in-memory or memory-mapped arrays.

    Parameters
    ----------
    train_images, val_images : uint8 arrays ``[N, H, W]`` (the image cache).
    train_labels, val_labels : 0/1 arrays ``[N, C]``.
    seeds : the seeds, or their number ``n`` for seeds ``0 .. n-1``.
    config : the training recipe.
    out : the paths of the run whose ``models/`` folder receives the checkpoints
        (:func:`prunecxr.paths.run_paths`).
    classes : class names, recorded in ``models/train.json``.
    device : ``"auto"`` (CUDA, then MPS, then CPU) or a device name.
    population : ``"sequential"``, ``"grouped"``, ``"parallel"`` (CPU worker processes, one
        thread each), or ``"auto"``: the fastest on this device, measured (see the module
        docstring).
    threads : intra-op threads on a CPU; None measures the faster of 1 and all cores
        (:func:`measure_cpu_threads`). The count changes the floating-point rounding, so it
        is recorded, and a resumed run reuses it. Ignored on a GPU.
    progress : show tqdm bars (seeds, epochs, batches) with the losses.

    ``parallel`` starts its helper processes with ``spawn``, which imports the calling
    script again: call it from a notebook, or from a script under
    ``if __name__ == "__main__":``.

    Returns
    -------
    DataFrame, one row per seed: ``seed``, ``status`` (``trained``, ``resumed`` or
    ``already trained``), ``epochs``, ``best_epoch``, ``best_val_loss``,
    ``best_val_mean_ap``.
    """
    seeds = _seed_list(seeds)
    _check_split(train_images, train_labels, "train")
    _check_split(val_images, val_labels, "val")
    if train_images.shape[1:] != val_images.shape[1:] or train_labels.shape[1] != val_labels.shape[1]:
        raise ValueError(
            f"train and val differ in shape: images {train_images.shape[1:]} vs {val_images.shape[1:]}, "
            f"classes {train_labels.shape[1]} vs {val_labels.shape[1]}"
        )
    if population not in POPULATION_MODES:
        raise ValueError(f"unknown population mode {population!r}; choose one of {list(POPULATION_MODES)}")
    if classes is not None and len(classes) != train_labels.shape[1]:
        raise ValueError(f"{len(classes)} class names for {train_labels.shape[1]} label columns")
    rp = out
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cpu":
        runtime.keep_freed_memory()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    num_classes = int(train_labels.shape[1])
    image_shape = (int(train_images.shape[1]), int(train_images.shape[2]))
    meta = _meta(config, num_classes, image_shape)

    config_path = rp.train_config
    started = [s for s in _all_seed_dirs(rp) if rp.checkpoint(s).exists() or rp.train_state(s).exists()]
    previous = None
    if config_path.exists():
        previous = artifacts.read_json(config_path)
        if started:
            _check_meta(previous, meta, config_path)
    elif started:
        # checkpoints without a record: at least refuse a different recipe for resumed seeds
        for s in started:
            if rp.train_state(s).exists():
                _check_meta(_load(rp.train_state(s)), meta, rp.train_state(s))
    final_before = {s for s in seeds if rp.checkpoint(s).exists()}
    pending = [s for s in seeds if s not in final_before]
    for s in final_before:  # a kill between writing model.pt and removing last.pt
        rp.train_state(s).unlink(missing_ok=True)

    plan = None
    if pending:
        plan = _plan(
            pending, population=population, config=config, num_classes=num_classes,
            image_shape=image_shape, n_train=int(train_images.shape[0]),
            data_bytes=int(train_images.nbytes + val_images.nbytes), device=dev, rp=rp,
            previous=(previous or {}).get("plan"), threads=threads,
        )
    if plan is not None or previous is None:
        record = dict(meta)
        record["classes"] = list(classes) if classes is not None else (previous or {}).get("classes")
        record["plan"] = None if plan is None else {"device": str(dev), **plan}
        artifacts.write_json(config_path, record)

    resumed = {s for s in pending if rp.train_state(s).exists()}
    report = _Report(progress, total=len(seeds), done=len(final_before), max_epochs=config.max_epochs)
    try:
        if pending and plan["mode"] == "parallel":
            _train_parallel(
                plan["groups"], (train_images, train_labels, val_images, val_labels),
                config=config, meta=meta, rp=rp, workers=plan["workers"], report=report,
            )
        elif pending:
            train = _Images(train_images, train_labels, dev)
            val = _Images(val_images, val_labels, dev)
            with _deterministic(dev), _num_threads(plan["threads"]):
                for group in plan["groups"]:
                    _train_group(
                        group, train, val, config=config, meta=meta, rp=rp, device=dev,
                        progress=progress, report=report,
                    )
    finally:
        report.close()

    rows = []
    for s in seeds:
        hist = pd.read_csv(rp.history(s))
        best = hist.loc[hist["val_loss"].idxmin()]
        status = "already trained" if s in final_before else ("resumed" if s in resumed else "trained")
        rows.append({
            "seed": s, "status": status, "epochs": int(hist["epoch"].max()),
            "best_epoch": int(best["epoch"]), "best_val_loss": float(best["val_loss"]),
            "best_val_mean_ap": float(best["val_mean_ap"]),
        })
    return pd.DataFrame(rows)


def _all_seed_dirs(rp: paths.RunPaths) -> list[int]:
    if not rp.models.is_dir():
        return []
    out = []
    for d in rp.models.iterdir():
        m = re.fullmatch(r"seed-(\d+)", d.name)
        if m and d.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def train_population(
    run: str,
    *,
    seeds: Iterable[int] | int,
    model: str,
    pretrained: bool,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    bn_eval_compat: bool = False,
    device: str = "auto",
    population: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train (or resume) the population of run ``run`` on its train and val splits.

    Reads the image cache through :func:`prunecxr.data.open_split`; see
    :func:`fit_population` for the parameters and the returned table, and
    :class:`TrainConfig` for the recipe.
    """
    from .. import data

    config = TrainConfig(
        model=model, pretrained=pretrained, max_epochs=max_epochs, patience=patience,
        batch_size=batch_size, lr=lr, bn_eval_compat=bn_eval_compat,
    )
    tr = data.open_split(run, "train")
    va = data.open_split(run, "val")
    if list(tr.classes) != list(va.classes):
        raise ValueError(f"run {run!r}: train and val splits have different classes")
    return fit_population(
        tr.images, tr.labels, va.images, va.labels, seeds=seeds, config=config,
        out=paths.run_paths(run), classes=list(tr.classes), device=device,
        population=population, threads=threads, progress=progress,
    )


# -- using trained models --------------------------------------------------------------


def trained_seeds(run: str) -> list[int]:
    """The seeds of ``run`` whose final checkpoint (``model.pt``) exists, sorted."""
    rp = paths.run_paths(run)
    return [s for s in _all_seed_dirs(rp) if rp.checkpoint(s).exists()]


def _training_record(run: str) -> dict[str, Any]:
    rp = paths.run_paths(run)
    if rp.train_config.exists():
        return artifacts.read_json(rp.train_config)
    raise FileNotFoundError(
        f"{rp.train_config} does not exist: train run {run!r} with notebook 02_train first"
    )


def training_threads(run: str) -> int | None:
    """The intra-op CPU thread count that training measured and used for ``run``.

    On a shared 2-core machine this can be 1: a second thread then slows small models down
    by an order of magnitude (see :func:`measure_cpu_threads`), in inference as well. None
    when the run was trained on a GPU or has no record.
    """
    try:
        plan = _training_record(run).get("plan") or {}
    except FileNotFoundError:
        return None
    threads = plan.get("threads")
    return int(threads) if threads else None


def load_model(run: str, seed: int, *, device: str | torch.device = "cpu") -> nn.Module:
    """Seed ``seed``'s selected model of run ``run``, in eval mode on ``device``.

    The architecture and number of classes come from the run's training record
    (``models/train.json``); the weights from ``models/seed-<seed>/model.pt``, loaded with
    ``torch.load(..., weights_only=True)``. ImageNet weights are never needed here.
    """
    rp = paths.run_paths(run)
    ckpt = rp.checkpoint(seed)
    if not ckpt.exists():
        raise FileNotFoundError(
            f"{ckpt} does not exist: seed {seed} of run {run!r} is not trained "
            f"(trained seeds: {trained_seeds(run)}); run notebook 02_train"
        )
    record = _training_record(run)
    model = _models.create_model(record["config"]["model"], int(record["num_classes"]), pretrained=False)
    state = _load(ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{ckpt} does not fit model {record['config']['model']!r}: {err}") from None
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    return model.to(dev).eval()


@torch.inference_mode()
def predict(
    model: nn.Module, images_uint8: np.ndarray, *, batch_size: int, device: str | torch.device
) -> np.ndarray:
    """Sigmoid probabilities of ``model`` for uint8 images.

    Parameters
    ----------
    model : a classifier of the registry (moved to ``device``, and on CUDA to channels_last;
        evaluated in eval mode, its train/eval mode is restored afterwards).
    images_uint8 : uint8 array ``[N, H, W]`` (may be memory-mapped).
    batch_size : images per forward pass.
    device : device name or ``torch.device`` (``"auto"`` allowed).

    Returns
    -------
    float32 array ``[N, C]``. Inputs go through :func:`prunecxr.models.preprocess`; on CUDA
    with bf16 autocast and channels_last.
    """
    if not isinstance(images_uint8, np.ndarray) or images_uint8.dtype != np.uint8 or images_uint8.ndim != 3:
        kind = getattr(images_uint8, "dtype", type(images_uint8).__name__)
        raise ValueError(
            f"images must be a uint8 array [N, H, W], got {kind} {getattr(images_uint8, 'shape', '')}"
        )
    if images_uint8.shape[0] == 0:
        raise ValueError("no images to predict")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cpu":
        runtime.keep_freed_memory()
    was_training = model.training
    model.to(dev).eval()
    cl = _channels_last(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    out = []
    try:
        for start in range(0, images_uint8.shape[0], batch_size):
            batch = torch.from_numpy(np.array(images_uint8[start:start + batch_size]))  # a writable copy
            if dev.type == "cuda":
                batch = batch.pin_memory()
            x = _models.preprocess(batch.to(dev, non_blocking=True), channels_last=cl)
            with _autocast(dev):
                logits = model(x)
            out.append(torch.sigmoid(logits.float()).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def read_histories(run: str, seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """The ``history.csv`` of every seed (default: all that have one), with a ``seed`` column."""
    rp = paths.run_paths(run)
    seeds = _all_seed_dirs(rp) if seeds is None else _seed_list(seeds)
    frames = []
    for s in seeds:
        path = rp.history(s)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: seed {s} of run {run!r} has not trained an epoch"
            )
        df = pd.read_csv(path)
        missing = set(HISTORY_COLUMNS) - set(df.columns)
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}")
        frames.append(df.assign(seed=s)[["seed", *HISTORY_COLUMNS]])
    if not frames:
        raise FileNotFoundError(f"run {run!r} has no trained seeds; run notebook 02_train")
    return pd.concat(frames, ignore_index=True)


def test_average_precision(
    run: str, *, seeds: Iterable[int] | None = None, batch_size: int = 256, device: str = "auto"
) -> pd.DataFrame:
    """Per-class test AP of the dense (unpruned) models.

    Returns
    -------
    DataFrame, one row per (seed, class): ``seed``, ``class``, ``ap`` (NaN for a class
    without a positive test image), ``n_pos`` (positive test images), ``train_count``
    (positive training images); classes in the dataset's canonical order.
    """
    from .. import data

    seeds = trained_seeds(run) if seeds is None else _seed_list(seeds)
    if not seeds:
        raise FileNotFoundError(f"run {run!r} has no trained seeds; run notebook 02_train")
    test = data.open_split(run, "test")
    train_counts = np.asarray(data.open_split(run, "train").labels, dtype=np.int64).sum(axis=0)
    labels = np.asarray(test.labels)
    dev = resolve_device(device)
    rows = []
    for s in seeds:
        with _num_threads(training_threads(run) if dev.type == "cpu" else None):
            probs = predict(load_model(run, s, device=dev), test.images, batch_size=batch_size, device=dev)
        ap = per_class_average_precision(labels, probs)
        for c, name in enumerate(test.classes):
            rows.append({"seed": s, "class": name, "ap": ap[c], "n_pos": int(labels[:, c].sum()),
                         "train_count": int(train_counts[c])})
    return pd.DataFrame(rows)


def summarize_test_ap(ap: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of :func:`test_average_precision`'s table.

    ``mean_ap`` and ``sd_ap``: mean and standard deviation over seeds of each seed's mean AP
    over the classes with a test positive; ``rarest`` and ``commonest``: the classes with
    the fewest and most positive training images (among those with a test positive), each
    with its ``train_count`` and mean AP over seeds.
    """
    per_seed = ap.groupby("seed")["ap"].mean()
    per_class = ap.dropna(subset=["ap"]).groupby("class").agg(
        ap=("ap", "mean"), train_count=("train_count", "first")
    )
    ordered = per_class.sort_values("train_count")

    def row(name):
        return {"class": name, "train_count": int(ordered.loc[name, "train_count"]),
                "ap": float(ordered.loc[name, "ap"])}
    return {
        "n_seeds": int(per_seed.size),
        "mean_ap": float(per_seed.mean()),
        "sd_ap": float(per_seed.std(ddof=1)) if per_seed.size > 1 else math.nan,
        "rarest": row(ordered.index[0]),
        "commonest": row(ordered.index[-1]),
    }


def plan_text(run: str) -> str:
    """One sentence on how the run's population was trained (sequential or grouped, why)."""
    from .. import fmt

    record = _training_record(run)
    plan = record.get("plan") or {}
    mode, groups = plan.get("mode", "unknown"), plan.get("groups", [])
    way = {"sequential": "one seed after another", "grouped": "in stacked groups",
           "parallel": f"in {plan.get('workers')} worker processes"}.get(mode, mode)
    text = f"Trained {way} on {plan.get('device', 'an unknown device')}"
    if plan.get("threads"):
        text += f" with {plan['threads']} thread(s)"
        measured = (plan.get("threads_measured") or {}).get("step_s") or {}
        if len(measured) > 1:
            shown = ", ".join(f"{k} thread(s) {v * 1000:.0f} ms" for k, v in measured.items())
            text += f" (one training step: {shown})"
    if mode == "grouped":
        text += f", {len(groups)} group(s) of up to {max(len(g) for g in groups)} seeds"
    cal = plan.get("calibration")
    if cal:
        text += (
            f"; a step of {cal['n_models']} stacked models ran "
            f"{fmt.ratio(cal['speedup'], 2)} the speed of one model after another"
        )
    est = plan.get("estimates_s")
    if est:
        text += "; estimated: " + ", ".join(f"{k} {v:.0f} s" for k, v in est.items())
    return text + "."


def headline_text(summary: dict[str, Any]) -> str:
    """:func:`summarize_test_ap`'s numbers as one sentence."""
    from .. import fmt

    r, c = summary["rarest"], summary["commonest"]
    return (
        f"Dense models ({summary['n_seeds']} seeds): mean test AP {fmt.num(summary['mean_ap'], 3)} "
        f"(SD {fmt.num(summary['sd_ap'], 3)} across seeds); commonest class {c['class']} "
        f"({c['train_count']} training images) AP {fmt.num(c['ap'], 3)}; rarest class "
        f"{r['class']} ({r['train_count']}) AP {fmt.num(r['ap'], 3)}."
    )


# -- figures ---------------------------------------------------------------------------


def learning_curves_figure(history: pd.DataFrame):
    """Validation loss and validation mean AP per epoch, one line per seed.

    ``history`` is :func:`read_histories`'s table; a marker shows each seed's selected
    (lowest validation loss) epoch.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation loss", "Validation mean AP"))
    palette = _palette(history["seed"].nunique())
    for color, (seed, df) in zip(palette, history.groupby("seed")):
        df = df.sort_values("epoch")
        best = df.loc[df["val_loss"].idxmin()]
        for col, key in ((1, "val_loss"), (2, "val_mean_ap")):
            fig.add_trace(go.Scatter(
                x=df["epoch"], y=df[key], mode="lines", name=f"seed {seed}", legendgroup=str(seed),
                showlegend=col == 1, line=dict(color=color, width=1.5),
            ), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=[best["epoch"]], y=[best[key]], mode="markers", legendgroup=str(seed), showlegend=False,
                marker=dict(color=color, size=8, symbol="circle-open", line=dict(width=2)),
                hovertext=f"seed {seed}: selected epoch {int(best['epoch'])}",
            ), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="BCE loss", row=1, col=1)
    fig.update_yaxes(title_text="mean AP", row=1, col=2)
    fig.update_layout(title="Learning curves of the dense population (circle: selected epoch)")
    return fig


def class_ap_figure(ap: pd.DataFrame):
    """Per-class test AP across seeds (box and points), classes from most to least frequent.

    ``ap`` is :func:`test_average_precision`'s table; the axis labels give each class's
    number of positive training images.
    """
    import plotly.graph_objects as go

    order = (ap.groupby("class")["train_count"].first().sort_values(ascending=False))
    labels = {c: f"{c} ({n})" for c, n in order.items()}
    fig = go.Figure()
    for c in order.index:
        df = ap[ap["class"] == c]
        fig.add_trace(go.Box(
            x=[labels[c]] * len(df), y=df["ap"], name=labels[c], boxpoints="all", jitter=0.4,
            pointpos=0, marker=dict(size=4, color="#1f77b4"), line=dict(color="#1f77b4"),
            showlegend=False, hovertext=[f"seed {s}" for s in df["seed"]],
        ))
    fig.update_layout(
        title="Test AP of the dense models per class, across seeds (classes by training frequency)",
        xaxis_title="class (positive training images)", yaxis_title="average precision",
        yaxis_range=[0, 1],
    )
    fig.update_xaxes(tickangle=-40)
    return fig


def _palette(n: int) -> list[str]:
    import plotly.colors

    base = plotly.colors.qualitative.Dark24
    return [base[i % len(base)] for i in range(max(n, 1))]
