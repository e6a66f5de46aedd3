"""Finding the hard-to-learn (HTL) training images by pruning (Jaiswal et al., WACV 2023).

Jaiswal, Chen, Rousseau, Peng, Ding and Wang, *Attend Who is Weak: Pruning-assisted Medical
Image Localization under Sophisticated and Implicit Imbalances* (WACV 2023, arXiv:2212.02675),
build on Hooker et al.'s pruning-identified exemplars: the training images on which a model
and a pruned copy of it disagree are those the model finds hard to learn. They identify them
*adaptively*, pruning the model in training at checkpoints, and attend them in the loss.

This version, for multi-label classifiers:

* **Disagreement** is the PIE measure of notebook 06 (Holste et al. 2023, Sect. 2.3): per
  image, the Spearman correlation over classes between the dense and the pruned predicted
  probabilities (:func:`prunecxr.stats.rowwise_spearman`); the HTL set is the ``fraction``
  of images with the lowest correlation (:func:`prunecxr.analysis.pies.select_pies`, ties by
  image id). Jaiswal et al. work on localization outputs (boxes and masks of one lesion per
  image), where disagreement is between two localizations; here the labels are image-level,
  so disagreement is between two probability vectors, as the pruning papers on
  classification define it.
* **Adaptively** (:func:`adaptive_scores`, used by :class:`prunecxr.attend.weights.AdaptiveHTL`):
  at the start of every epoch after the first, a copy of the model in training is pruned
  with global L1 magnitude pruning (the sweep's ``global_l1``) at ``sparsity``, and the whole
  training split is scored anew. Recomputing at every epoch (rather than accumulating a set
  across checkpoints) makes the weights a function of the model's current weights only, so
  a resumed seed attends exactly the images an uninterrupted one does.
* **Post hoc** (:func:`posthoc_scores`): the PIE definition applied to the *training* split
  of the population already trained, at ``sparsity``: the seed-mean dense probabilities
  against the seed-mean pruned ones. It needs no retraining and is the set notebook 06 would
  call PIEs had it looked at the training images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import events, inference, stats
from ..analysis.pies import select_pies
from ..compress.methods import check_sparsity, prune_model

__all__ = ["HTL_METHOD", "adaptive_scores", "disagreement", "posthoc_scores"]

#: the pruning that exposes HTL images: the paper's (and this project's) global L1 magnitude pruning
HTL_METHOD = "global_l1"


def disagreement(
    dense: np.ndarray, pruned: np.ndarray, image_ids: Sequence[str], *, fraction: float
) -> pd.DataFrame:
    """Per image, the Spearman correlation of dense and pruned probabilities and the HTL flag.

    Parameters
    ----------
    dense, pruned : float arrays ``[N, C]`` of predicted probabilities.
    image_ids : ``N`` unique ids (ties are broken by id).
    fraction : share of images flagged HTL: the ``int(fraction · N)`` lowest correlations
        (NaN, a constant row, ranks after every finite value).

    Returns
    -------
    DataFrame with ``image_id``, ``spearman`` and ``htl`` (bool), in the input order.
    """
    if dense.shape != pruned.shape or dense.ndim != 2 or dense.shape[0] != len(image_ids):
        raise ValueError(
            f"dense {dense.shape} and pruned {pruned.shape} must be [N, C] with N = "
            f"{len(image_ids)} image ids"
        )
    rho = stats.rowwise_spearman(dense, pruned)
    return pd.DataFrame(
        {
            "image_id": np.asarray(image_ids, dtype=str),
            "spearman": rho,
            "htl": select_pies(rho, image_ids, fraction=fraction),
        }
    )


def _dense_and_pruned(
    model: nn.Module, images, *, sparsity: float, batch_size: int, device
) -> tuple[np.ndarray, np.ndarray]:
    dense = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format).eval()
    pruned = prune_model(dense, sparsity, method=HTL_METHOD)
    return (
        inference.predict(dense, images, batch_size=batch_size, device=device),
        inference.predict(pruned, images, batch_size=batch_size, device=device),
    )


def adaptive_scores(
    model: nn.Module,
    images,
    image_ids: Sequence[str],
    *,
    sparsity: float,
    fraction: float,
    batch_size: int,
    device,
) -> pd.DataFrame:
    """:func:`disagreement` of ``model`` (in training; left untouched) and its copy pruned to
    ``sparsity`` on ``images`` (uint8 ``[N, H, W]``): Jaiswal et al.'s adaptive identification."""
    check_sparsity(sparsity, name="htl_sparsity")
    dense, pruned = _dense_and_pruned(
        model, images, sparsity=sparsity, batch_size=batch_size, device=device
    )
    return disagreement(dense, pruned, image_ids, fraction=fraction)


def posthoc_scores(
    run: str,
    *,
    seeds: Sequence[int],
    sparsity: float,
    fraction: float,
    batch_size: int,
    device="cpu",
) -> pd.DataFrame:
    """The PIE definition on the *training* split of ``run``'s trained population.

    The dense and the pruned (global L1 at ``sparsity``) probabilities of each seed on every
    training image, averaged over ``seeds``, then :func:`disagreement` at ``fraction``.
    Returns its table, with the seed-mean probabilities kept for the gallery as
    ``DataFrame.attrs["dense"]`` and ``["pruned"]``.
    """
    from .. import data

    check_sparsity(sparsity, name="htl_sparsity")
    if not seeds:
        raise ValueError("posthoc_scores needs at least one seed")
    split = data.open_split(run, "train")
    dense_sum = pruned_sum = None
    for k, seed in enumerate(seeds):
        events.emit("post hoc HTL", done=k, total=len(seeds), unit="seed", detail=f"seed {seed}")
        model = inference.load_model(run, int(seed), device=device)
        d, p = _dense_and_pruned(
            model, split.images, sparsity=sparsity, batch_size=batch_size, device=device
        )
        dense_sum = d.astype(np.float64) if dense_sum is None else dense_sum + d
        pruned_sum = p.astype(np.float64) if pruned_sum is None else pruned_sum + p
    events.emit("post hoc HTL", done=len(seeds), total=len(seeds), unit="seed")
    dense, pruned = dense_sum / len(seeds), pruned_sum / len(seeds)
    table = disagreement(dense, pruned, split.image_ids, fraction=fraction)
    table.attrs.update(dense=dense, pruned=pruned, classes=list(split.classes))
    return table
