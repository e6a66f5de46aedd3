"""The up-weighted loss: which training images (or labels) weigh more, epoch by epoch.

Each *weigher* is called by the training loop at the start of every epoch as
``weigher(net, seed, epoch)`` (:func:`prunecxr.train.loop.train_seed`) and returns the loss
weights of that epoch's training images, or None for the plain loss. Every weigher is a
function of the model's current weights, the seed and the epoch only, never of the seed's
data generator: a resumed seed draws the same weights as an uninterrupted one, and the data
order and augmentation stay those of the dense population's seed, so every comparison pairs
by seed.

Arms (:data:`ARMS`):

``htl``
    Jaiswal et al.'s method (WACV 2023): from the second epoch on, the hard-to-learn images
    found anew by pruning a copy of the model (:func:`prunecxr.attend.htl.adaptive_scores`)
    weigh ``weight`` in the loss, every other image 1. The paper attends HTL images through
    an extra loss term whose weight is a hyper-parameter; with one binary cross-entropy per
    label, an extra term on the HTL images is the same as a larger weight on them, which is
    what is done here. The first epoch is not weighted: a model at its random initialization
    has nothing learned for pruning to expose.
``htl_posthoc``
    the post hoc HTL set of the trained population (:func:`prunecxr.attend.htl.posthoc_scores`),
    fixed, weighted the same way from the second epoch on.
``random``
    the control "is it the choice of images, or just re-weighting?": at each epoch from the
    second on, as many images as the HTL arm attends (``int(fraction · N)``), drawn at random
    (a generator of their own per seed and epoch), weigh ``weight``.
``balanced``
    the standard long-tail baseline, class-balanced weighting by the effective number of
    samples (Cui et al., CVPR 2019): class ``c`` with ``n_c`` positive training images gets
    ``α_c = (1 − β) / (1 − β^{n_c})``, normalized to mean 1 over the classes, on its positive
    labels; negative labels keep 1. Cui et al. define it for single-label softmax and sigmoid
    losses (the weight of the image's one class on all its outputs); with several labels per
    image this version weighs each positive label by its own class. From the second epoch on,
    like the other arms: Cao et al.'s deferred re-weighting (LDAM-DRW, NeurIPS 2019) found
    class re-weighting works better after a first phase of plain training than from the
    start, and with every arm's first epoch the plain one, each arm differs from the dense
    seed only in the epochs it attends (and that epoch is trained once for all arms,
    :mod:`prunecxr.attend.arms`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import artifacts, paths
from ..analysis.pies import n_pies
from ..train.checkpoints import derived_seed
from .htl import adaptive_scores

__all__ = [
    "ARMS",
    "AdaptiveHTL",
    "Balanced",
    "FixedHTL",
    "RandomHTL",
    "class_balanced_weights",
    "create_weigher",
    "image_weights",
]

#: the attended arms, in display order; the dense population is the baseline ``dense``
ARMS = ("htl", "htl_posthoc", "random", "balanced")
#: the first epoch (0-based) whose loss attends images: after one epoch of plain training
FIRST_ATTENDED_EPOCH = 1


def check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 1:
        raise ValueError(f"attend_weight must be a number >= 1 (1: no attention); got {weight!r}")
    return float(weight)


def image_weights(flags: np.ndarray, weight: float) -> torch.Tensor:
    """Per-image loss weights ``[N]``: ``weight`` where ``flags``, else 1."""
    flags = np.asarray(flags, dtype=bool)
    return torch.from_numpy(np.where(flags, float(weight), 1.0).astype(np.float32))


def class_balanced_weights(labels: np.ndarray, *, beta: float) -> torch.Tensor:
    """Cui et al.'s class-balanced weights on the positive labels, ``[N, C]`` float32.

    ``α_c = (1 − β) / (1 − β^{n_c})`` with ``n_c`` the positives of class ``c`` in
    ``labels`` (0/1 ``[N, C]``), normalized so that ``mean_c α_c = 1``; a class without a
    positive gets the largest ``α`` of the others (it has no positive label to weigh anyway).
    Weight ``α_c`` where ``y_ic = 1``, 1 where ``y_ic = 0``.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise ValueError(f"balance_beta must be in [0, 1); got {beta!r}")
    y = np.asarray(labels)
    n = y.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore"):
        alpha = np.where(n > 0, (1.0 - beta) / (1.0 - np.power(beta, np.maximum(n, 1))), np.nan)
    alpha = np.where(np.isnan(alpha), np.nanmax(alpha), alpha)
    alpha = alpha / alpha.mean()
    return torch.from_numpy(np.where(y == 1, alpha[None, :], 1.0).astype(np.float32))


def _write_epoch(run: str, seed: int, epoch: int, table: pd.DataFrame) -> None:
    artifacts.write_parquet(paths.run_paths(run).attend_epoch(seed, epoch), table)


@dataclass
class AdaptiveHTL:
    """Jaiswal et al.'s adaptive HTL weighting (arm ``htl``); records each epoch's scores in
    ``run``'s ``attend/work/`` (the arm's run)."""

    run: str
    images: np.ndarray | None
    image_ids: Sequence[str]
    weight: float
    sparsity: float
    fraction: float
    batch_size: int
    device: str = "cpu"

    def for_task(self) -> AdaptiveHTL:
        """This weigher without its images, to travel to a Ray task (:meth:`bind` there)."""
        return dataclasses.replace(self, images=None)

    def bind(self, images: np.ndarray) -> AdaptiveHTL:
        """This weigher scoring ``images``, the training images a task opened."""
        if len(images) != len(self.image_ids):
            raise ValueError(
                f"{len(images)} training images for {len(self.image_ids)} image ids: the task "
                "opened other images than the weigher was made for"
            )
        return dataclasses.replace(self, images=images)

    def __call__(self, net, seed: int, epoch: int):
        if epoch < FIRST_ATTENDED_EPOCH:
            return None
        if self.images is None:
            raise RuntimeError("the weigher travelled without its images and was never bound")
        table = adaptive_scores(
            net,
            self.images,
            self.image_ids,
            sparsity=self.sparsity,
            fraction=self.fraction,
            batch_size=self.batch_size,
            device=self.device,
        )
        _write_epoch(self.run, seed, epoch, table)
        return image_weights(table["htl"].to_numpy(), self.weight)


@dataclass
class FixedHTL:
    """A fixed HTL set (arm ``htl_posthoc``), attended from the second epoch on."""

    run: str
    image_ids: Sequence[str]
    flags: np.ndarray
    weight: float

    def __call__(self, net, seed: int, epoch: int):
        if epoch < FIRST_ATTENDED_EPOCH:
            return None
        _write_epoch(
            self.run,
            seed,
            epoch,
            pd.DataFrame(
                {
                    "image_id": np.asarray(self.image_ids, dtype=str),
                    "spearman": np.nan,
                    "htl": self.flags,
                }
            ),
        )
        return image_weights(self.flags, self.weight)


@dataclass
class RandomHTL:
    """The random control (arm ``random``): ``int(fraction · N)`` images drawn per seed and epoch."""

    run: str
    image_ids: Sequence[str]
    weight: float
    fraction: float

    def flags(self, seed: int, epoch: int) -> np.ndarray:
        n = len(self.image_ids)
        rng = np.random.default_rng(derived_seed(seed, f"attend-random:{epoch}"))
        flags = np.zeros(n, dtype=bool)
        flags[rng.choice(n, size=n_pies(n, self.fraction), replace=False)] = True
        return flags

    def __call__(self, net, seed: int, epoch: int):
        if epoch < FIRST_ATTENDED_EPOCH:
            return None
        flags = self.flags(seed, epoch)
        _write_epoch(
            self.run,
            seed,
            epoch,
            pd.DataFrame(
                {
                    "image_id": np.asarray(self.image_ids, dtype=str),
                    "spearman": np.nan,
                    "htl": flags,
                }
            ),
        )
        return image_weights(flags, self.weight)


@dataclass
class Balanced:
    """Class-balanced weighting (arm ``balanced``), the same weights every epoch from the second."""

    weights: torch.Tensor

    def __call__(self, net, seed: int, epoch: int):
        return None if epoch < FIRST_ATTENDED_EPOCH else self.weights


def create_weigher(
    arm: str,
    *,
    run: str,
    images: np.ndarray,
    labels: np.ndarray,
    image_ids: Sequence[str],
    weight: float,
    sparsity: float,
    fraction: float,
    beta: float,
    batch_size: int,
    posthoc_flags: np.ndarray | None = None,
    device: str = "cpu",
):
    """The weigher of ``arm`` (a key of :data:`ARMS`) and its record for ``train.json``
    (``attention``); ``run`` is the arm's run, which receives the per-epoch records."""
    if arm not in ARMS:
        raise ValueError(f"unknown attend arm {arm!r}; choose from {list(ARMS)}")
    weight = check_weight(weight)
    if arm == "balanced":
        return Balanced(class_balanced_weights(labels, beta=beta)), {
            "arm": arm,
            "beta": float(beta),
            "first_epoch": FIRST_ATTENDED_EPOCH,
        }
    record = {
        "arm": arm,
        "weight": weight,
        "fraction": float(fraction),
        "first_epoch": FIRST_ATTENDED_EPOCH,
    }
    if arm == "htl":
        record["sparsity"] = float(sparsity)
        return AdaptiveHTL(
            run, images, image_ids, weight, sparsity, fraction, batch_size, device
        ), record
    if arm == "random":
        return RandomHTL(run, image_ids, weight, fraction), record
    if posthoc_flags is None or len(posthoc_flags) != len(image_ids):
        raise ValueError("arm 'htl_posthoc' needs the post hoc HTL flags of every training image")
    record["sparsity"] = float(sparsity)
    return FixedHTL(run, image_ids, np.asarray(posthoc_flags, dtype=bool), weight), record
