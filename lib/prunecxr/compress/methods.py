"""Compression methods: the registry (:data:`METHODS`), and the pruning methods of the paper.

Every method maps a dense model and a level to a compressed model ready for inference
(:mod:`prunecxr.compress.compressor`); its level lies on one axis of :mod:`prunecxr.levels`.
The pruning methods below prune at a *sparsity*; the registry adds ``weight_quant`` (*bits*,
:mod:`~prunecxr.compress.quantize`), ``int8_ptq`` (*bits*) and ``channel_l1``
(*channel_fraction*, :mod:`~prunecxr.compress.structured`).

Holste et al. (2023) prune with *global unstructured L1 (magnitude) pruning* over the weights
of every ``Conv2d`` and ``Linear`` layer (stem, downsampling shortcuts and classifier
included; biases and BatchNorm never pruned), one-shot and without fine-tuning. Each method
of the registry :data:`METHODS` removes exactly ``round(s·n)`` of the ``n`` weights of that
set at sparsity ``s`` (:func:`n_to_prune`, torch's count):

* ``global_l1`` — the paper's: the smallest ``|w|`` over all layers at once, with the masks of
  ``torch.nn.utils.prune.global_unstructured(..., pruning_method=L1Unstructured)``, ties
  included;
* ``layerwise_l1`` — the same fraction removed inside each layer (:func:`layer_quotas`);
* ``random`` — the control of the authors' code, seeded by (model seed, sparsity).

:func:`create_pruner` returns a :class:`Pruner` that writes one method's masks into a model,
sparsity after sparsity, from the dense weights; :func:`prune_model` returns a pruned copy.

Methods of the user's code join the registry with the same contract (:func:`check_method`,
``docs/extending.md``): an installed package's entry point of group ``prunecxr.methods``, or
``"module:function"``; :data:`ORIGINS` says where each came from, and the sweep records it in
``meta.json`` (``origin``).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..levels import AXES, Axis
from ..published import PAPER_METHOD
from . import quantize, structured
from .compressor import CalibrationSet, CompressionMethod

#: the ``torch.nn`` module types whose ``weight`` is pruned (the paper's set; biases and
#: BatchNorm never are)
PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


# =========================================================================================
# Counting and validating
# =========================================================================================
def check_sparsity(sparsity: Any, *, name: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1], or a ValueError naming the bad value."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1], got {sparsity!r}")
    value = float(sparsity)
    if not (0.0 <= value <= 1.0):  # also refuses NaN
        raise ValueError(f"{name} must be a fraction in [0, 1], got {sparsity!r}")
    return value


def check_sparsities(sparsities: Iterable[Any]) -> list[float]:
    """A strictly increasing list of sparsities in [0, 1] (each checked by :func:`check_sparsity`)."""
    values = [check_sparsity(s, name=f"sparsities[{i}]") for i, s in enumerate(sparsities)]
    if not values:
        raise ValueError("sparsities is empty")
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            raise ValueError(
                f"sparsities must be strictly increasing; sparsities[{i}] = {values[i]!r} "
                f"follows {values[i - 1]!r}"
            )
    return values


def n_to_prune(sparsity: float, n: int) -> int:
    """The number of weights a fraction ``sparsity`` of ``n`` removes: ``round(sparsity · n)``.

    Python's ``round`` (half to even) on the float product, exactly as
    ``torch.nn.utils.prune`` computes ``nparams_toprune``, so that every method here removes
    the same count that ``global_unstructured(..., amount=sparsity)`` would.
    """
    return round(check_sparsity(sparsity) * int(n))


def prunable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The pruned set: ``(name, weight)`` of every Conv2d and Linear, in module order.

    The order is that of ``model.named_modules()``, which is the order in which the authors
    listed ``(module, "weight")`` for ``global_unstructured``; masks and flat vectors in this
    module concatenate the weights in this order.
    """
    out = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter):
                raise ValueError(
                    f"layer {name or '<root>'!r} ({type(module).__name__}) has no weight "
                    "parameter; is it already wrapped by torch.nn.utils.prune? "
                    "call torch.nn.utils.prune.remove first"
                )
            out.append((f"{name}.weight" if name else "weight", weight))
    if not out:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    return out


def pruned_set_sparsity(model: nn.Module) -> float:
    """Measured sparsity of the pruned set: zero weights / all weights of Conv2d and Linear."""
    params = prunable_parameters(model)
    zeros = sum(int((p.detach() == 0).sum()) for _, p in params)
    total = sum(p.numel() for _, p in params)
    return zeros / total


def pruned_magnitudes(model: nn.Module) -> np.ndarray:
    """``|w|`` of the pruned set of ``model``: one float32 vector, layers in
    :func:`prunable_parameters` order (checked finite; the input of Fig. 1's right panel)."""
    named = prunable_parameters(model)
    return _flat_magnitudes([p for _, p in named], [n for n, _ in named])


def _flat_magnitudes(params: Sequence[torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """``|w|`` of all pruned weights concatenated into one float32 vector (checked finite)."""
    sizes = [p.numel() for p in params]
    out = np.empty(sum(sizes), dtype=np.float32)
    pos = 0
    for p, size in zip(params, sizes):
        w = p.detach().to("cpu", torch.float32).reshape(-1).numpy()
        np.abs(w, out=out[pos : pos + size])
        pos += size
    if not np.isfinite(out.max(initial=0.0)):  # NaN and inf propagate through max
        bounds = np.cumsum([0, *sizes])
        for name, a, b in zip(names, bounds[:-1], bounds[1:]):
            if not np.isfinite(out[a:b]).all():
                raise ValueError(
                    f"weight {name!r} holds NaN or infinite values; cannot rank magnitudes"
                )
    return out


# =========================================================================================
# Methods: a plan maps a sparsity to a flat boolean mask (True = pruned)
# =========================================================================================
Plan = Callable[[float], np.ndarray]


class _Selector:
    """The ``k`` smallest entries of one magnitude vector, ties broken as torch breaks them.

    ``values`` is sorted once (``np.sort``). For a ``k`` whose ``k``-th and ``(k+1)``-th
    smallest values differ, the mask is ``values <= ordered[k-1]``: exactly ``k`` entries,
    the same set ``torch.topk(values, k, largest=False)`` returns. When they are equal, which
    of the tied entries fall inside is not a property of the values but of torch's selection
    algorithm (``std::nth_element`` or ``std::partial_sort`` on the CPU, a radix select on
    CUDA), so the mask is then taken from ``torch.topk`` itself, run on ``device`` — the
    device of the weights, where ``L1Unstructured.compute_mask`` would run it. Float32
    magnitudes tie often: for a fresh ResNet-50, 3 of the 19 non-zero paper sparsities.
    """

    def __init__(self, values: np.ndarray, device: torch.device):
        self.values = values
        self.ordered = np.sort(values)
        self.device = torch.device(device)
        self._on_device: torch.Tensor | None = None

    def threshold(self, k: int) -> float:
        """The largest selected value for ``k`` (``-inf`` when ``k == 0``)."""
        return float(self.ordered[k - 1]) if k else -math.inf

    def tied(self, k: int) -> bool:
        """Whether the boundary of ``k`` splits a run of equal values."""
        return 0 < k < self.values.size and self.ordered[k - 1] == self.ordered[k]

    def __call__(self, k: int) -> np.ndarray:
        n = self.values.size
        mask = np.zeros(n, dtype=bool)
        if k == 0:
            return mask
        if k == n:
            mask[:] = True
            return mask
        if not self.tied(k):
            np.less_equal(self.values, self.ordered[k - 1], out=mask)
            return mask
        if self._on_device is None:
            self._on_device = torch.from_numpy(self.values).to(self.device)
        idx = torch.topk(self._on_device, k, largest=False).indices.cpu().numpy()
        mask[idx] = True
        return mask


class _GlobalL1:
    """Global magnitude pruning: the ``round(s·n)`` smallest ``|w|`` over all layers at once."""

    def __init__(
        self, magnitudes: np.ndarray, sizes: Sequence[int], *, seed: int, device: torch.device
    ):
        self.n = magnitudes.size
        self.select = _Selector(magnitudes, device)  # one sort serves every sparsity

    def threshold(self, sparsity: float) -> float:
        """The largest pruned magnitude at ``sparsity`` (``-inf`` when nothing is pruned)."""
        return self.select.threshold(n_to_prune(sparsity, self.n))

    def __call__(self, sparsity: float) -> np.ndarray:
        return self.select(n_to_prune(sparsity, self.n))


def layer_quotas(k: int, sizes: Sequence[int]) -> np.ndarray:
    """Split ``k`` pruned weights over layers of ``sizes`` in proportion (largest remainders).

    Layer ``l`` gets ``⌊k·n_l/n⌋``, plus one for the ``k − Σ⌊·⌋`` layers with the largest
    remainders ``k·n_l mod n`` (the earlier layer first on a tie). Integer arithmetic, so
    ``Σ_l quota_l = k`` exactly and every layer's fraction is within one weight of ``k/n``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    if not 0 <= k <= n:
        raise ValueError(f"cannot prune {k} of {n} weights")
    product = [k * int(s) for s in sizes]  # Python ints: no overflow
    quotas = np.array([p // n for p in product], dtype=np.int64)
    remainders = np.array([p % n for p in product], dtype=object)
    left = k - int(quotas.sum())
    if left:
        order = sorted(range(len(sizes)), key=lambda i: (-remainders[i], i))
        quotas[order[:left]] += 1
    return quotas


class _LayerwiseL1:
    """Layer-wise magnitude pruning: the same fraction removed inside each layer separately.

    Each layer loses its :func:`layer_quotas` share of ``round(s·n)`` — its smallest ``|w|``,
    ties broken as ``torch.nn.utils.prune.l1_unstructured(module, "weight", amount=quota)``
    breaks them — so the pruned set's sparsity is exactly that of the other methods.
    """

    def __init__(
        self, magnitudes: np.ndarray, sizes: Sequence[int], *, seed: int, device: torch.device
    ):
        self.sizes = [int(s) for s in sizes]
        self.n = magnitudes.size
        bounds = np.cumsum([0, *self.sizes])
        self.layers = [_Selector(magnitudes[a:b], device) for a, b in zip(bounds[:-1], bounds[1:])]

    def __call__(self, sparsity: float) -> np.ndarray:
        quotas = layer_quotas(n_to_prune(sparsity, self.n), self.sizes)
        return np.concatenate([select(int(q)) for select, q in zip(self.layers, quotas)])


def random_mask_seed(seed: int, sparsity: float) -> int:
    """A 63-bit generator seed for ``(model seed, sparsity)``, stable across platforms."""
    key = [int(seed), round(check_sparsity(sparsity) * 1_000_000)]
    hi, lo = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & (2**63 - 1)


class _Random:
    """Unstructured random pruning: ``round(s·n)`` weights drawn uniformly without replacement.

    The control of the authors' code (``RandomUnstructured`` over the same parameters). The
    draw is ``torch.randperm(n)[:k]`` from a generator seeded by :func:`random_mask_seed`, so it
    depends on (model seed, sparsity) only.
    """

    def __init__(
        self, magnitudes: np.ndarray, sizes: Sequence[int], *, seed: int, device: torch.device
    ):
        self.n = magnitudes.size
        self.seed = int(seed)

    def __call__(self, sparsity: float) -> np.ndarray:
        k = n_to_prune(sparsity, self.n)
        mask = np.zeros(self.n, dtype=bool)
        if k:
            gen = torch.Generator().manual_seed(random_mask_seed(self.seed, sparsity))
            mask[torch.randperm(self.n, generator=gen)[:k].numpy()] = True
        return mask


@dataclass(frozen=True)
class PruningMethod:
    """A registry entry: ``plan(magnitudes, sizes, seed=, device=)`` returns ``sparsity → mask``.

    ``magnitudes`` is the flat float32 ``|w|`` of the pruned set (layers in
    :func:`prunable_parameters` order, of ``sizes``), ``seed`` the model's seed and ``device``
    the weights' device; the plan's masks are flat boolean arrays (True = pruned). Like every
    :class:`~prunecxr.compress.compressor.CompressionMethod` it has a level axis (``sparsity``)
    and a factory, :meth:`create` (a :class:`Pruner`).
    """

    name: str
    plan: Callable[..., Plan]
    description: str
    level_name: str = "sparsity"
    supported: tuple[float, ...] | None = None
    needs_calibration: bool = False
    cpu_only: bool = False

    @property
    def options(self) -> dict[str, Any]:
        return {}

    @property
    def axis(self) -> Axis:
        return AXES[self.level_name]

    def levels(self, requested: Sequence[float]) -> list[float]:
        """The sparsities this method computes: all of ``requested``, checked (0.0 first)."""
        return self.axis.check_levels(requested, dense_first=True, name="sparsities")

    def create(
        self, model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
    ) -> Pruner:
        return Pruner(self.name, model, seed=seed)


METHODS: dict[str, PruningMethod | CompressionMethod] = {
    "global_l1": PruningMethod(
        "global_l1",
        _GlobalL1,
        "global unstructured magnitude (L1) pruning over all Conv2d and Linear weights (the paper's)",
    ),
    "layerwise_l1": PruningMethod(
        "layerwise_l1",
        _LayerwiseL1,
        "unstructured magnitude (L1) pruning of the same fraction inside each layer",
    ),
    "random": PruningMethod(
        "random",
        _Random,
        "unstructured random pruning of the same weights (control), seeded by (seed, sparsity)",
    ),
    **quantize.METHODS,
    **structured.METHODS,
}


#: the entry-point group through which installed packages register methods
ENTRY_POINT_GROUP = "prunecxr.methods"
#: where each method registered from outside the package came from (``meta.json``'s ``origin``)
ORIGINS: dict[str, str] = {}
#: the built-in methods' names (a registered method may not take one of them)
BUILT_IN = frozenset(METHODS)


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def register_method(entry: PruningMethod | CompressionMethod, *, origin: str) -> str:
    """Add a method of the user's code to :data:`METHODS`; returns its name.

    ``entry`` honours the built-in methods' contract: a :class:`PruningMethod` (a ``plan``:
    flat magnitudes → ``sparsity → mask``) or a
    :class:`~prunecxr.compress.compressor.CompressionMethod` (a factory of compressors), with
    one level axis of :mod:`prunecxr.levels`; for the same model, seed and level it must give
    the same compressed model every time (the sweep's stores are compared bit for bit).
    ``origin`` says where it came from; sweeps record it in ``meta.json``.
    """
    from .. import paths
    from ..levels import axis

    if not isinstance(entry, (PruningMethod, CompressionMethod)):
        raise ValueError(
            f"{origin} gave a {type(entry).__name__}; a method is a prunecxr.compress.PruningMethod or "
            "CompressionMethod (docs/extending.md)"
        )
    try:
        paths.check_method_name(entry.name)
        axis(entry.level_name)
    except ValueError as err:
        raise ValueError(f"{origin}: {err}") from None
    if entry.name in BUILT_IN:
        raise ValueError(
            f"{origin} names its method {entry.name!r}, a built-in method's name; choose another"
        )
    if entry.name in ORIGINS and ORIGINS[entry.name] != origin:
        raise ValueError(
            f"{origin} names its method {entry.name!r}, which {ORIGINS[entry.name]} registered already"
        )
    METHODS[entry.name] = entry
    ORIGINS[entry.name] = origin
    return entry.name


def _load(target: Any, origin: str) -> str:
    """A loaded entry point or ``module:function`` target: a method, or a function returning one."""
    if callable(target) and not isinstance(target, (PruningMethod, CompressionMethod)):
        try:
            target = target()
        except Exception as err:
            raise ValueError(f"{origin} failed: {type(err).__name__}: {err}") from err
    return register_method(target, origin=origin)


def load_method(spec: str) -> str:
    """Register the method ``spec`` names from the user's code; returns its name.

    ``spec`` is ``"module:attribute"`` (a method, or a function of no argument returning
    one, importable from ``sys.path``) or the name of an entry point of group
    ``prunecxr.methods`` of an installed package.
    """
    import importlib

    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            target = importlib.import_module(module)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as err:
            raise ValueError(
                f"method {spec!r}: cannot import {attr!r} from {module!r}: {err}"
            ) from None
        return _load(target, f"module:function {spec}")
    found = _entry_points()
    if spec not in found:
        raise ValueError(
            f"unknown method {spec!r}; choose one of {sorted(set(METHODS) | set(found))}, "
            "or name one of your code as 'module:function' (docs/extending.md)"
        )
    ep = found[spec]
    dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
    name = _load(ep.load(), f"entry point {ENTRY_POINT_GROUP}: {ep.name} = {ep.value}{dist}")
    if name != spec:
        METHODS.pop(name)
        ORIGINS.pop(name)
        raise ValueError(
            f"entry point {spec!r} of group {ENTRY_POINT_GROUP} gives a method named {name!r}; "
            "the two names must agree"
        )
    return name


def check_method(method: str) -> str:
    """The registry name of ``method``, or a ValueError naming the choices.

    A built-in name, a method registered already, the name of an installed package's entry
    point (group ``prunecxr.methods``) or ``"module:function"`` (:func:`load_method`).
    """
    if not isinstance(method, str):
        raise ValueError(f"a method is named by a str, got {method!r}")
    if method in METHODS:
        return method
    return load_method(method)


def store_name(method: str) -> str:
    """The name under which ``method``'s store is written (``prune/<name>/``): a
    ``"module:function"`` method's own name, any other name as it is."""
    return check_method(method) if ":" in str(method) else method


def portable_name(method: str) -> str:
    """What names ``method`` in another process (a Ray task): its ``"module:function"`` if it
    was registered so (the task registers it again), else its name (built in, or an installed
    package's entry point, found by name)."""
    origin = ORIGINS.get(method, "")
    prefix = "module:function "
    return origin[len(prefix) :] if origin.startswith(prefix) else method


def available_methods() -> dict[str, str]:
    """Every method this process can run: name → where it comes from (entry points loaded)."""
    for name in _entry_points():
        if name not in METHODS:
            check_method(name)
    return {name: ORIGINS.get(name, "built in") for name in METHODS}


def describe_methods() -> str:
    """The methods as text: name, level axis, origin and description (``python -m prunecxr methods``)."""
    lines = []
    for name, origin in available_methods().items():
        entry = METHODS[name]
        lines.append(f"{name:20s} {entry.level_name:17s} {origin}\n{'':20s} {entry.description}")
    return "\n".join(lines)


def create_compressor(
    method: str, model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
):
    """The :class:`~prunecxr.compress.compressor.Compressor` of ``method`` for ``model``
    (``calibration``: training images, for the methods and recoveries that read them)."""
    return METHODS[check_method(method)].create(model, seed=seed, calibration=calibration)


def compress_model(
    model: nn.Module,
    level: float,
    *,
    method: str = PAPER_METHOD,
    seed: int = 0,
    calibration: CalibrationSet | None = None,
) -> nn.Module:
    """A compressed copy of ``model``: ``method`` at ``level`` (its axis: sparsity, bits or
    channel fraction). ``model`` is left untouched."""
    return create_compressor(
        method, copy.deepcopy(model), seed=seed, calibration=calibration
    ).compress(level)


class Pruner:
    """Writes one method's masks into ``model``'s weights, sparsity after sparsity.

    The dense weights of the pruned set are kept aside once; :meth:`apply` copies them back
    and writes zeros where the mask says, so any sparsity can follow any other and inference
    runs on plain weights (no ``torch.nn.utils.prune`` hooks or ``weight_orig``).

    Parameters
    ----------
    method : str
        A key of :data:`METHODS`.
    model : nn.Module
        Modified in place by :meth:`apply` and :meth:`restore`.
    seed : int
        The model's seed; only ``random`` uses it (with the sparsity, see :func:`random_mask_seed`).
    """

    def __init__(self, method: str, model: nn.Module, *, seed: int = 0):
        self.method = check_method(method)
        self.model = model
        self.seed = int(seed)
        named = prunable_parameters(model)
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.sizes = [p.numel() for p in self.params]
        self.n = sum(self.sizes)
        self.dense = [p.detach().clone() for p in self.params]
        magnitudes = _flat_magnitudes(self.params, self.names)
        device = self.params[0].device
        self.plan = METHODS[self.method].plan(magnitudes, self.sizes, seed=self.seed, device=device)

    def mask(self, sparsity: float) -> np.ndarray:
        """Flat boolean mask over the pruned set (True = pruned), shape ``(n,)``."""
        return self.plan(check_sparsity(sparsity))

    def masks(self, sparsity: float) -> dict[str, torch.Tensor]:
        """Per-parameter boolean masks (True = pruned), shaped like each weight, on the CPU."""
        flat = torch.from_numpy(self.mask(sparsity))
        return {
            name: part.view_as(p)
            for name, part, p in zip(self.names, flat.split(self.sizes), self.params)
        }

    def apply(self, sparsity: float) -> int:
        """Dense weights with the mask's entries set to 0; returns how many the mask holds."""
        flat = self.mask(sparsity)
        device = self.params[0].device
        parts = torch.from_numpy(flat).to(device).split(self.sizes)
        with torch.no_grad():
            for p, dense, m in zip(self.params, self.dense, parts):
                p.copy_(dense)
                p.masked_fill_(m.view_as(p), 0)
        return int(flat.sum())

    def restore(self) -> None:
        """Put the dense weights back."""
        with torch.no_grad():
            for p, dense in zip(self.params, self.dense):
                p.copy_(dense)

    # -- the Compressor interface (prunecxr.compress.compressor) ---------------------------
    def compress(self, level: float) -> nn.Module:
        """The model pruned to sparsity ``level`` (in place), in eval mode."""
        self.apply(level)
        return self.model.eval()

    def for_recovery(self, level: float) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
        """A pruned copy whose pruned weights stay 0 in training (a mask parametrization);
        ``finish`` leaves plain masked weights."""
        masks = self.masks(level)
        self.apply(level)
        model = copy.deepcopy(self.model)
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            module = modules[name.rsplit(".", 1)[0]] if "." in name else model
            parametrize.register_parametrization(
                module, "weight", _Mask(~mask.to(module.weight.device))
            )

        def finish(trained: nn.Module) -> nn.Module:
            for module in trained.modules():
                if parametrize.is_parametrized(module, "weight"):
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            return trained.eval()

        return model, finish


class _Mask(nn.Module):
    """Parametrization: the weight times a fixed 0/1 mask (pruned weights stay 0)."""

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.register_buffer("keep", keep.to(torch.float32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.keep


def magnitude_thresholds(model: nn.Module, sparsities: Sequence[float]) -> np.ndarray:
    """Global L1's threshold per sparsity: the largest ``|w|`` it prunes (``-inf`` for none).

    One ``np.sort`` of the pruned set's magnitudes; the threshold of sparsity ``s`` is the
    ``round(s·n)``-th smallest magnitude. Shape ``(len(sparsities),)``.
    """
    device = prunable_parameters(model)[0][1].device
    plan = _GlobalL1(pruned_magnitudes(model), (), seed=0, device=device)
    return np.array([plan.threshold(s) for s in check_sparsities(sparsities)])


def create_pruner(method: str, model: nn.Module, *, seed: int = 0) -> Pruner:
    """The :class:`Pruner` of ``method`` for ``model`` (sorts the magnitudes once)."""
    return Pruner(method, model, seed=seed)


def prune_model(
    model: nn.Module, sparsity: float, *, method: str = PAPER_METHOD, seed: int = 0
) -> nn.Module:
    """A pruned copy of ``model``: ``method`` at ``sparsity``, weights zeroed in place.

    ``model`` is left untouched. For several sparsities of one model use
    :func:`create_pruner`, which ranks the weights once.
    """
    pruned = copy.deepcopy(model)
    create_pruner(method, pruned, seed=seed).apply(sparsity)
    return pruned
