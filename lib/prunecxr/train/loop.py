"""Training one seed: its epochs, each followed by validation, a resume point and early stopping.

A seed alone decides its model's initialization (``torch.manual_seed(seed)`` around
:func:`prunecxr.models.create_model`), its data order and its augmentation (a
``torch.Generator`` of its own, derived from the seed and saved with every epoch). On a CPU,
given the intra-op thread count, the weights are therefore the same bit for bit however the
seeds are scheduled (:mod:`prunecxr.train.population`) and however often training was
interrupted: a resumed seed continues from the state its last epoch saved. On CUDA, cuDNN is
set to deterministic kernels (:func:`prunecxr.train.recipe.deterministic`), but a few CUDA
kernels (adaptive average pooling's backward among them) add in a varying order, so GPU runs
agree only up to rounding.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import models, paths
from ..metrics import mean_average_precision
from . import checkpoints
from .feed import DeviceSplit
from .progress import bar, interactive, seed_label
from .recipe import (
    TrainConfig,
    adam,
    augment,
    autocast,
    draw_augmentation,
    learning_rate,
    resolve_precision,
    sum_dtype,
    uses_channels_last,
)

__all__ = ["check_weights", "train_epoch", "train_seed", "validate", "weighted_bce"]


def train_seed(
    seed: int,
    train: DeviceSplit,
    val: DeviceSplit,
    *,
    config: TrainConfig,
    meta: dict,
    rp: paths.RunPaths,
    device: torch.device,
    progress: bool,
    report,
    weigher=None,
    branch: checkpoints.Branch | None = None,
) -> checkpoints.SeedState:
    """Train (or resume) seed ``seed`` until it is final; return its record.

    ``weigher``, when given, is called as ``weigher(net, seed, epoch)`` at the start of every
    epoch (``epoch`` 0-based) and returns the loss weights of that epoch's training images
    (``[N]`` or ``[N, C]``, see :func:`train_epoch`) or None. It must be a function of the
    weights it is given, the seed and the epoch only (:mod:`prunecxr.attend.weights`), so
    that a resumed seed draws the same weights as an uninterrupted one; it must not draw from
    the seed's data generator, so that the data order stays the seed's.

    After every epoch the seed's resume point and history are written
    (:func:`prunecxr.train.checkpoints.save_progress`); once early stopping ends it or
    ``config.max_epochs`` is reached, its best weights become ``model.pt``
    (:func:`prunecxr.train.checkpoints.finalize`). ``report`` receives the progress (a
    :class:`prunecxr.train.progress.Report` or a stand-in with its methods).

    ``branch`` (a :class:`prunecxr.train.checkpoints.Branch` with its execution set): a seed
    without a resume point of its own starts from the branch point when one fits; a seed that
    does not, writes it after epoch ``branch.epoch`` for the populations that follow, provided
    its loss was unweighted until then (a branch point is plain training: ``weigher`` must return
    None before ``branch.epoch`` in every population that shares it).
    """
    branched = None
    if branch is not None and not rp.train_state(seed).exists():
        branched = checkpoints.read_branch(branch, seed, meta)
    rec, state, opt_state = checkpoints.start_seed(seed, rp, meta, config, branch_state=branched)
    net = models.create_model(config.model, meta["num_classes"], pretrained=False)
    net.load_state_dict(state)
    net = net.to(device)
    if uses_channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    optimizer = adam(net.parameters(), lr=config.lr, device=device)
    if opt_state is not None:
        fresh = optimizer.state_dict()
        fresh["state"] = opt_state["state"]
        optimizer.load_state_dict(fresh)
        _match_layouts(optimizer)

    label = seed_label(seed)
    report.start(label, rec.epoch)
    plain = rec.epoch == 0  # every epoch so far trained without loss weights (known from 0 only)
    try:
        while True:
            t0 = time.perf_counter()
            weights = None if weigher is None else weigher(net, seed, rec.epoch)
            plain = plain and weights is None
            net.train(not (config.bn_eval_compat and rec.epoch >= 1))
            train_loss = train_epoch(
                net,
                optimizer,
                train,
                rec.generator,
                config=config,
                device=device,
                progress=progress,
                desc=f"{label} epoch {rec.epoch + 1}",
                epoch=rec.epoch,
                weights=weights,
            )
            val_loss, val_ap = validate(
                net,
                val,
                batch_size=config.batch_size,
                device=device,
                precision=resolve_precision(config.precision, device),
            )
            seconds = time.perf_counter() - t0
            if not (math.isfinite(val_loss) and math.isfinite(train_loss)):
                raise FloatingPointError(
                    f"seed {seed} diverged in epoch {rec.epoch + 1}: training loss {train_loss}, "
                    f"validation loss {val_loss}. Lower lr (now {config.lr}) under another run "
                    "name, or delete the run's models/ folder and train again."
                )
            rec.epoch += 1
            weights = checkpoints.to_cpu(net.state_dict())
            rec.history.append(
                {
                    "epoch": rec.epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_mean_ap": val_ap,
                    "seconds": seconds,
                }
            )
            if rec.stopper.update(rec.epoch, val_loss):
                rec.best_state = weights
            done = rec.stopper.should_stop or rec.epoch >= config.max_epochs
            if done:
                checkpoints.finalize(rp, rec)
                report.final(seed, rec.stopper.best_loss, rec.stopper.best_epoch)
            else:
                optim_state = checkpoints.to_cpu(optimizer.state_dict())
                checkpoints.save_progress(rp, rec, weights, optim_state, meta)
                if branch is not None and plain and branched is None and rec.epoch == branch.epoch:
                    checkpoints.save_branch(branch, rec, weights, optim_state, meta)
            report.epoch(label, train_loss, val_loss, val_ap)
            if done:
                return rec
    finally:
        report.stop(label)


def _match_layouts(optimizer) -> None:
    """Give the resumed optimizer moments their parameters' memory layout (channels_last).

    Checkpoints store contiguous tensors; an uninterrupted run keeps Adam's moments in the
    layout of their parameters, and the fused Adam step rounds differently when the two
    differ, so a resumed seed would drift from the uninterrupted one.
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if (
                isinstance(value, torch.Tensor)
                and value.shape == param.shape
                and value.stride() != param.stride()
            ):
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def train_epoch(
    net: nn.Module,
    optimizer,
    train: DeviceSplit,
    generator: torch.Generator,
    *,
    config: TrainConfig,
    device: torch.device,
    progress: bool,
    desc: str,
    epoch: int = 0,
    weights: torch.Tensor | None = None,
) -> float:
    """Epoch ``epoch`` (0-based) over ``train`` in the order and with the augmentation
    ``generator`` draws, each step at the schedule's learning rate.

    ``weights`` (optional) weighs each training image's loss: float ``[N]`` (one weight per
    image, :mod:`prunecxr.attend`'s hard-to-learn images) or ``[N, C]`` (one per image and
    class: class-balanced weighting), rows in the order of ``train``. A step's loss is then
    ``mean_{i, c}(w_ic · BCE(logit_ic, y_ic))`` over the batch (:func:`weighted_bce`);
    without weights it is the plain mean binary cross-entropy, computed exactly as before.

    Returns the mean (weighted) binary cross-entropy over the epoch's images and classes.
    """
    size, bsz = len(train), config.batch_size
    precision = resolve_precision(config.precision, device)
    perm = torch.randperm(size, generator=generator)
    flip = angle = None
    if config.augment:
        flip, angle = (t.to(device) for t in draw_augmentation(size, generator))
    perm_dev = perm.to(device)
    if weights is not None:
        weights = check_weights(weights, len(train), train.labels.shape[1]).to(device)
    cl = uses_channels_last(device)
    total = torch.zeros((), dtype=sum_dtype(device), device=device)
    steps = math.ceil(size / bsz)
    total_steps = steps * config.max_epochs
    # batches: in a terminal only (a notebook would store every redraw)
    batches = bar(
        progress and steps > 1 and interactive(),
        total=steps,
        desc=desc,
        unit="batch",
        transient=True,
    )
    try:
        for step in range(steps):
            sl = slice(step * bsz, min((step + 1) * bsz, size))
            images, labels = train.take(perm[sl], perm_dev[sl])
            if flip is not None:
                images = augment(images, flip=flip[sl], angle=angle[sl])
            if config.schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, epoch * steps + step, total_steps)
            with autocast(device, precision):
                logits = net(models.preprocess(images, channels_last=cl))
            if weights is None:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
            else:
                loss = weighted_bce(logits.float(), labels, weights[perm_dev[sl]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach().to(total.dtype) * images.shape[0]
            if progress and (step % 10 == 9 or step == steps - 1):
                batches.set_postfix(loss=f"{(total / sl.stop).item():.4f}", refresh=False)
            batches.update(1)
    finally:
        batches.close()
    return float(total.double().cpu()) / size


def check_weights(weights, n_images: int, n_classes: int) -> torch.Tensor:
    """``weights`` as a float32 tensor ``[n_images]`` or ``[n_images, n_classes]``, finite and
    non-negative; a clear error naming the shape or value otherwise."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape not in ((n_images,), (n_images, n_classes)):
        raise ValueError(
            f"loss weights must have shape ({n_images},) or ({n_images}, {n_classes}); "
            f"got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"loss weights must be finite and non-negative; got min {float(w.min())}")
    return w


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_{i, c}(w_ic · BCE(logit_ic, y_ic))`` for ``logits``/``labels`` ``[B, C]`` and
    ``weights`` ``[B]`` (broadcast over classes) or ``[B, C]``."""
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    w = weights[:, None] if weights.dim() == 1 else weights
    return (per * w).mean()


@torch.no_grad()
def validate(
    net: nn.Module,
    val: DeviceSplit,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[float, float]:
    """Mean binary cross-entropy over all validation images and classes, and the mean AP
    over classes with a positive (:func:`prunecxr.metrics.mean_average_precision`; NaN when
    a probability is not finite)."""
    net.eval()
    cl = uses_channels_last(device)
    loss_sum = torch.zeros((), dtype=sum_dtype(device), device=device)
    probs, labels = [], []
    for images, y in val.ordered(batch_size):
        with autocast(device, precision):
            logits = net(models.preprocess(images, channels_last=cl))
        logits = logits.float()
        loss_sum += F.binary_cross_entropy_with_logits(logits, y, reduction="sum").to(
            loss_sum.dtype
        )
        probs.append(torch.sigmoid(logits))
        labels.append(y)
    p = torch.cat(probs).cpu().numpy()
    t = torch.cat(labels).cpu().numpy()
    val_loss = float(loss_sum.double().cpu()) / t.size
    val_ap = mean_average_precision(t, p) if np.isfinite(p).all() else math.nan
    return val_loss, val_ap
