"""Structured pruning: whole filters removed, so the network is physically smaller (``channel_l1``).

Torch-Pruning (Fang et al., *DepGraph: Towards Any Structural Pruning*, CVPR 2023;
``torch-pruning`` on PyPI) traces the network into a dependency graph: removing an output
channel of a convolution removes the matching BatchNorm channel and input channel of every
layer that reads it, and channels joined by a residual addition are removed together, so the
pruned ResNet still adds tensors of equal width. The filters of lowest L1 norm go first
(``MagnitudeImportance(p=1)``, summed over the coupled layers of a group).

* ``channel_l1`` — uniform: the same fraction of channels removed from every prunable group;
* ``channel_l1_global`` — global: the groups' normalized importances are ranked together, so
  the fraction differs between layers (no layer loses more than :data:`MAX_LAYER_FRACTION`).

The classifier's outputs (one per class) are never removed. The level axis is
``channel_fraction``, the fraction of channels removed: 0 returns a copy of the dense model,
and larger fractions give models with fewer parameters and multiply-accumulates (measured by
:mod:`prunecxr.compress.deploy`). There is no fine-tuning unless a recovery is asked for
(:mod:`prunecxr.compress.recovery`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

from .. import levels
from .compressor import CalibrationSet, CompressionMethod, UnsupportedModel, attention_blocks

CHANNELS = levels.AXES["channel_fraction"]
#: global pruning never removes more than this fraction of one layer's channels
MAX_LAYER_FRACTION = 0.9
#: the input the dependency graph is traced with (the ResNets accept any size)
TRACE_INPUT = (1, 3, 64, 64)


def check_fraction(fraction) -> float:
    """``fraction`` in [0, 1), or a ValueError naming it (removing every channel leaves no network)."""
    value = CHANNELS.check_level(fraction, name="channel_fraction")
    if value >= 1.0:
        raise ValueError(
            f"channel_fraction must be below 1 (some channels must stay), got {fraction!r}"
        )
    return value


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are the classes (never pruned): the last Linear."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no Linear classifier to keep")
    return [linear[-1]]


def prune_channels(model: nn.Module, fraction: float, *, global_pruning: bool = False) -> nn.Module:
    """A copy of ``model`` with ``fraction`` of its channels removed by L1 norm (Torch-Pruning).

    ``model`` is left untouched; fraction 0 returns an unchanged copy.
    """
    import torch_pruning as tp

    fraction = check_fraction(fraction)
    pruned = copy.deepcopy(model).eval()
    if fraction == 0.0:
        return pruned
    device = next(pruned.parameters()).device
    example = torch.zeros(TRACE_INPUT, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's notes on unwrapped parameters
        pruner = tp.pruner.MetaPruner(
            pruned,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=fraction,
            global_pruning=global_pruning,
            max_pruning_ratio=MAX_LAYER_FRACTION,
            ignored_layers=classifier_layers(pruned),
        )
        pruner.step()
    return pruned.eval()


def check_prunable(model: nn.Module) -> None:
    """Refuse a network with attention blocks: their heads tie the widths of the query, key,
    value and output projections together, which this filter pruning does not keep."""
    blocks = attention_blocks(model)
    if blocks:
        raise UnsupportedModel(
            f"channel pruning cannot prune {type(model).__name__}: it has {len(blocks)} attention blocks "
            f"({blocks[0]}, …) whose heads this filter pruning does not keep; use global_l1, layerwise_l1 or random"
        )


class ChannelPruner:
    """``channel_l1`` for one dense model: each level prunes a fresh copy of the dense model."""

    def __init__(
        self,
        model: nn.Module,
        *,
        global_pruning: bool,
        seed: int = 0,
        calibration: CalibrationSet | None = None,
    ):
        check_prunable(model)
        self.model = model.eval()
        self.global_pruning = global_pruning

    def compress(self, level: float) -> nn.Module:
        return prune_channels(self.model, level, global_pruning=self.global_pruning)

    def for_recovery(self, level: float) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
        """The pruned network itself: it is smaller, so training keeps the compression."""
        return self.compress(level), lambda trained: trained.eval()


def _uniform(
    model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
) -> ChannelPruner:
    return ChannelPruner(model, global_pruning=False, seed=seed, calibration=calibration)


def _global(
    model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
) -> ChannelPruner:
    return ChannelPruner(model, global_pruning=True, seed=seed, calibration=calibration)


CHANNEL_L1 = CompressionMethod(
    "channel_l1",
    "channel_fraction",
    _uniform,
    "structured L1 filter pruning (Torch-Pruning), the same fraction of channels in every layer",
    options={"scope": "uniform"},
)
CHANNEL_L1_GLOBAL = CompressionMethod(
    "channel_l1_global",
    "channel_fraction",
    _global,
    "structured L1 filter pruning (Torch-Pruning), channels ranked across all layers at once",
    options={"scope": "global"},
)

#: the entries of this module, for the registry (:data:`prunecxr.compress.methods.METHODS`)
METHODS = {m.name: m for m in (CHANNEL_L1, CHANNEL_L1_GLOBAL)}
