"""Recovery after compression, for any method: BatchNorm re-estimation or short fine-tuning.

The paper prunes one-shot, without fine-tuning (``recover = "none"``, the default). Two cheap
recoveries ask how much of what a compression forgets comes back:

* ``"bn"`` — BatchNorm re-estimation: every BatchNorm layer's running mean and variance are
  reset and recomputed as the plain average over ``batches`` training batches seen by the
  *compressed* network (``momentum = None``, train mode, no gradient). The batches are drawn
  by a generator seeded by the model's seed, so the result is the same on every run (the same
  bits on one machine with one thread count). Weights are not touched.
* ``"finetune"`` — ``epochs`` passes over the training split (Adam at ``lr``, binary
  cross-entropy, no augmentation, batches in an order seeded by the model's seed) with the
  compression kept: pruned weights stay 0 and quantized weights stay on their grid (the
  compressor's :meth:`~prunecxr.compress.compressor.Compressor.for_recovery` model:
  parametrizations with a straight-through gradient; int8 as quantization-aware training;
  channel pruning's smaller network as it is).

Recovery applies to the compressed levels; the dense level stays the dense model, the
baseline of every comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .. import artifacts, levels, models
from .compressor import CalibrationSet, Compressor, require_calibration

RECOVERIES = artifacts.RECOVERIES


@dataclass(frozen=True)
class Recovery:
    """How compressed models are recovered (module docstring).

    Attributes
    ----------
    kind : ``"none"``, ``"bn"`` or ``"finetune"``.
    batches : training batches of a BatchNorm re-estimation.
    epochs : passes over the training split of a fine-tuning.
    lr : Adam's learning rate of a fine-tuning.
    """

    kind: str = "none"
    batches: int = 8
    epochs: int = 1
    lr: float = 1e-4

    def __post_init__(self):
        if self.kind not in RECOVERIES:
            raise ValueError(f"unknown recover {self.kind!r}; choose one of {list(RECOVERIES)}")
        for name in ("batches", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"recover_{name} must be a positive int, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"finetune_lr must be a positive number, got {self.lr!r}")

    def record(self) -> dict[str, Any]:
        """What the sweep records of it (``work/seed-<s>.json``'s ``recover``): the kind and
        the settings that kind uses, so changing an unused setting recomputes nothing."""
        used = {"none": (), "bn": ("batches",), "finetune": ("epochs", "lr")}[self.kind]
        full = asdict(self)
        return {"kind": self.kind, **{k: full[k] for k in used}}


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (those inside int8 training wrappers too)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def reestimate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Reset every BatchNorm's running statistics and recompute them as the plain average over
    ``batches`` (preprocessed float32 ``[B, 3, H, W]``); returns ``model`` in eval mode."""
    layers = batchnorm_layers(model)
    if not layers or not batches:
        return model.eval()
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the plain mean over the batches
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for bn, momentum in zip(layers, momenta):
        bn.momentum = momentum
    return model.eval()


def finetune(
    model: nn.Module, calibration: CalibrationSet, *, epochs: int, lr: float, seed: int
) -> nn.Module:
    """``epochs`` passes of Adam over the training split (binary cross-entropy, batches of
    ``calibration.batch_size`` in an order seeded by ``seed``); returns ``model`` in eval mode."""
    images, labels = calibration.labelled()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(int(seed))
    size = calibration.batch_size
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            if len(idx) < 2:  # BatchNorm needs two images in train mode
                continue
            loss = loss_fn(model(models.preprocess(images[idx])), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def recovered_model(
    compressor: Compressor,
    level: float,
    recovery: Recovery,
    *,
    level_name: str,
    calibration: CalibrationSet | None,
    seed: int,
) -> nn.Module:
    """The model of ``compressor`` at ``level``, recovered by ``recovery``, in eval mode.

    ``recover = "none"`` and the dense level give :meth:`Compressor.compress` itself.
    """
    if recovery.kind == "none" or levels.axis(level_name).is_dense(level):
        return compressor.compress(level)
    calibration = require_calibration(f"recover={recovery.kind!r}", calibration)
    model, finish = compressor.for_recovery(level)
    if recovery.kind == "bn":
        reestimate_batchnorm(model, calibration.batches(recovery.batches, seed=seed))
    else:
        finetune(model, calibration, epochs=recovery.epochs, lr=recovery.lr, seed=seed)
    return finish(model)
