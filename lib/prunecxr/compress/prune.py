"""Stage 03: one-shot pruning of every dense model, its test predictions, and Fig. 1.

Holste et al. (2023) prune each trained ResNet-50 once per sparsity ``k ∈ {0, 0.05, …, 0.95}``
with *global unstructured L1 (magnitude) pruning* over the weights of every ``Conv2d`` and
``Linear`` layer (stem, downsampling shortcuts and classifier included; biases and BatchNorm
never pruned), without fine-tuning, and record the test set's sigmoid probabilities. This
module does the same for every compression method of :data:`METHODS`:

* **methods** — :func:`create_pruner` (a :class:`Pruner` that writes one method's masks into
  a model, sparsity after sparsity, from the dense weights) and :func:`prune_model` (a pruned
  copy: the registry's "function of a model and a sparsity");
* **sweep** — :func:`run_sweep`: every seed × sparsity → ``prune/<method>/probs.npy`` and
  ``meta.json`` (``ARTIFACTS.md``), resumable per seed;
* **metrics** — :func:`prunecxr.metrics.ranking_metrics` (AP and AUROC, equal to scikit-learn's),
  :func:`write_metrics` → ``metrics.parquet``;
* **Fig. 1** — :func:`overall_table` (median and interquartile range over seeds of the
  class-mean AP, Welch's t-test against the dense models, Holm's correction),
  :func:`first_significant_drop`, :func:`magnitude_summary` and :func:`figure_1`.

The authors' released predictions are imported into the same store by
:mod:`prunecxr.importer`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import numbers
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import importlib

import numpy as np
import pandas as pd

from .. import artifacts, fmt, paths, runtime
from ..metrics import ranking_metrics

if TYPE_CHECKING:  # plotly is imported where a figure is drawn
    import plotly.graph_objects as go


class _OnFirstUse:
    """A module imported when one of its attributes is first used.

    The analysis notebooks (04-07) read the sweep's stored probabilities and metrics through
    this module; importing torch and torchvision for that cost them 4-7 s each.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


torch = _OnFirstUse("torch")
nn = _OnFirstUse("torch.nn")
_models = _OnFirstUse("prunecxr.models")

#: names of the ``torch.nn`` module types whose ``weight`` is pruned (the paper's set; biases
#: and BatchNorm never are)
PRUNABLE_TYPES = ("Conv2d", "Linear")
#: the method of the paper's figures
PAPER_METHOD = "global_l1"
#: the paper's significance level for the first significant drop in mean AP (Fig. 1)
PAPER_ALPHA = 0.001
#: magnitude below which the paper counts "over half" of the dense weights (Fig. 1, right)
SMALL_WEIGHT = 0.01
#: the columns of ``metrics.parquet`` (ARTIFACTS.md)
METRIC_COLUMNS = ["seed", "sparsity", "class", "ap", "auroc", "n_pos"]

_SPARSITY_ATOL = 1e-9


class MissingPositivesWarning(UserWarning):
    """A class has no positive test image: its AP is undefined (NaN) and left out of means."""


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
        if isinstance(module, tuple(getattr(nn, t) for t in PRUNABLE_TYPES)):
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
                raise ValueError(f"weight {name!r} holds NaN or infinite values; cannot rank magnitudes")
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

    def __init__(self, magnitudes: np.ndarray, sizes: Sequence[int], *, seed: int, device: torch.device):
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

    def __init__(self, magnitudes: np.ndarray, sizes: Sequence[int], *, seed: int, device: torch.device):
        self.sizes = [int(s) for s in sizes]
        self.n = magnitudes.size
        bounds = np.cumsum([0, *self.sizes])
        self.layers = [_Selector(magnitudes[a:b], device) for a, b in zip(bounds[:-1], bounds[1:])]

    def __call__(self, sparsity: float) -> np.ndarray:
        quotas = layer_quotas(n_to_prune(sparsity, self.n), self.sizes)
        return np.concatenate([select(int(q)) for select, q in zip(self.layers, quotas)])


def derived_seed(seed: int, sparsity: float) -> int:
    """A 63-bit generator seed for ``(model seed, sparsity)``, stable across platforms."""
    key = [int(seed), round(check_sparsity(sparsity) * 1_000_000)]
    hi, lo = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & (2**63 - 1)


class _Random:
    """Unstructured random pruning: ``round(s·n)`` weights drawn uniformly without replacement.

    The control of the authors' code (``RandomUnstructured`` over the same parameters). The
    draw is ``torch.randperm(n)[:k]`` from a generator seeded by :func:`derived_seed`, so it
    depends on (model seed, sparsity) only.
    """

    def __init__(self, magnitudes: np.ndarray, sizes: Sequence[int], *, seed: int, device: torch.device):
        self.n = magnitudes.size
        self.seed = int(seed)

    def __call__(self, sparsity: float) -> np.ndarray:
        k = n_to_prune(sparsity, self.n)
        mask = np.zeros(self.n, dtype=bool)
        if k:
            gen = torch.Generator().manual_seed(derived_seed(self.seed, sparsity))
            mask[torch.randperm(self.n, generator=gen)[:k].numpy()] = True
        return mask


@dataclass(frozen=True)
class PruningMethod:
    """A registry entry: ``plan(magnitudes, sizes, seed=, device=)`` returns ``sparsity → mask``.

    ``magnitudes`` is the flat float32 ``|w|`` of the pruned set (layers in
    :func:`prunable_parameters` order, of ``sizes``), ``seed`` the model's seed and ``device``
    the weights' device; the plan's masks are flat boolean arrays (True = pruned).
    """

    name: str
    plan: Callable[..., Plan]
    description: str


METHODS: dict[str, PruningMethod] = {
    "global_l1": PruningMethod(
        "global_l1", _GlobalL1,
        "global unstructured magnitude (L1) pruning over all Conv2d and Linear weights (the paper's)",
    ),
    "layerwise_l1": PruningMethod(
        "layerwise_l1", _LayerwiseL1,
        "unstructured magnitude (L1) pruning of the same fraction inside each layer",
    ),
    "random": PruningMethod(
        "random", _Random,
        "unstructured random pruning of the same weights (control), seeded by (seed, sparsity)",
    ),
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    return method


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
        The model's seed; only ``random`` uses it (with the sparsity, see :func:`derived_seed`).
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
        self.plan = METHODS[method].plan(magnitudes, self.sizes, seed=self.seed, device=device)

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


def magnitude_thresholds(model: nn.Module, sparsities: Sequence[float]) -> np.ndarray:
    """Global L1's threshold per sparsity: the largest ``|w|`` it prunes (``-inf`` for none).

    One ``np.sort`` of the pruned set's magnitudes; the threshold of sparsity ``s`` is the
    ``round(s·n)``-th smallest magnitude. Shape ``(len(sparsities),)``.
    """
    named = prunable_parameters(model)
    mags = _flat_magnitudes([p for _, p in named], [n for n, _ in named])
    plan = _GlobalL1(mags, (), seed=0, device=named[0][1].device)
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


# =========================================================================================
# Inference
# =========================================================================================
def predict_probs(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Sigmoid probabilities of ``model`` on uint8 images, float32 ``[N, C]``.

    ``images`` is one tensor, ideally already on ``device``: uint8 ``[N, H, W]``, each batch
    of which is preprocessed by :func:`prunecxr.models.preprocess` on the device, or their
    preprocessed float32 ``[N, 3, H, W]`` (:func:`sweep_inputs`). The outputs stay on the
    device until the end, so the loop never waits on a host copy.

    The sweep's own loop rather than :func:`prunecxr.train.predict`: a sweep evaluates the
    same test images hundreds of times, so they are moved to the device once, not per call;
    and the forward pass runs in float32 without autocast, as the authors evaluated their
    pruned models (``predict`` uses bf16 autocast on CUDA). On the CPU both give the same
    probabilities.
    """
    uint8 = images.dtype == torch.uint8 and images.ndim == 3
    if not uint8 and not (images.dtype == torch.float32 and images.ndim == 4 and images.shape[1] == 3):
        raise ValueError(
            "images must be uint8 [N, H, W] or preprocessed float32 [N, 3, H, W], got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = torch.device(device)
    n = images.shape[0]
    out = None
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            logits = model(_models.preprocess(x) if uint8 else x)
            if out is None:
                out = torch.empty((n, logits.shape[1]), dtype=torch.float32, device=device)
            out[start : start + logits.shape[0]] = torch.sigmoid(logits.float())
    if out is None:
        raise ValueError("images is empty")
    return out.cpu().numpy()


# =========================================================================================
# The probability store: prune/<method>/{probs.npy, meta.json}
# =========================================================================================
def _same_sparsities(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= _SPARSITY_ATOL for x, y in zip(a, b))


def load_probs(run: str, method: str, *, mmap: bool = True) -> tuple[np.ndarray, dict]:
    """The stored probabilities of ``method`` and their axes.

    Returns
    -------
    probs : np.ndarray, float32 (or float16), shape ``[S, K, N, C]``
        Sigmoid probabilities per seed, sparsity, test image (rows of ``labels.parquet`` with
        ``split == "test"``, in file order) and class. Memory-mapped read-only by default.
    meta : dict
        ``{"method", "seeds", "sparsities", "classes"}``: the labels of axes S, K and C.
    """
    rp = paths.run_paths(run)
    probs_path, meta_path = rp.probs(method), rp.prune_meta(method)
    for path in (probs_path, meta_path):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: run notebook 03_prune (sweep or import) for method "
                f"{method!r} of run {run!r} first"
            )
    meta = artifacts.read_json(meta_path)
    missing = [k for k in ("method", "seeds", "sparsities", "classes") if k not in meta]
    if missing:
        raise ValueError(f"{meta_path} lacks the keys {missing}")
    probs = artifacts.load_npy(probs_path, mmap=mmap)
    expected = (len(meta["seeds"]), len(meta["sparsities"]), None, len(meta["classes"]))
    if probs.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, probs.shape)):
        raise ValueError(
            f"{probs_path} has shape {probs.shape}, but {meta_path} describes "
            f"[{expected[0]} seeds, {expected[1]} sparsities, N, {expected[3]} classes]"
        )
    return probs, meta


def write_store(
    run: str,
    method: str,
    *,
    seeds: Sequence[int],
    sparsities: Sequence[float],
    classes: Sequence[str],
    n_test: int,
    blocks: Iterable[np.ndarray],
) -> Path:
    """Write ``probs.npy`` (one ``[K, N, C]`` block per seed, in order) and ``meta.json``.

    The array is filled in a temporary file that replaces ``probs.npy`` only when complete;
    the old ``meta.json`` is removed just before and the new one written just after, so a
    reader never finds a ``meta.json`` that describes another array.
    """
    rp = paths.run_paths(run)
    shape = (len(seeds), len(sparsities), int(n_test), len(classes))
    with artifacts.atomic_path(rp.probs(method)) as tmp:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        count = 0
        for i, block in enumerate(blocks):
            if block is None or i >= shape[0] or tuple(block.shape) != shape[1:]:
                got = None if block is None else tuple(block.shape)
                raise ValueError(f"block {i} of {method!r} has shape {got}, expected {shape[1:]}")
            store[i] = block
            count += 1
        if count != shape[0]:
            raise ValueError(f"got {count} seed blocks for {shape[0]} seeds")
        store.flush()
        del store
        rp.prune_meta(method).unlink(missing_ok=True)
    meta = {
        "method": method,
        "seeds": [int(s) for s in seeds],
        "sparsities": [float(s) for s in sparsities],
        "classes": [str(c) for c in classes],
    }
    artifacts.write_json(rp.prune_meta(method), meta)
    return rp.probs(method)


# =========================================================================================
# The run: test split, seeds, dense models
# =========================================================================================
def read_test_labels(run: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Test labels of ``run`` from ``labels.parquet``: ``(y [N, C] uint8, classes, image_ids)``.

    Rows are those with ``split == "test"`` in file order (the row order of ``probs.npy``);
    classes are the columns after ``image_id``, ``patient_id``, ``split``, in file order.
    """
    from .. import data

    path = paths.run_paths(run).labels
    labels = data.read_labels(run)
    missing = [c for c in ("image_id", "split") if c not in labels.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    classes = data.class_names(labels)
    test = labels[labels["split"] == "test"]
    if test.empty:
        raise ValueError(f"{path} has no row with split == 'test'")
    y = test[classes].to_numpy()
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: class column {classes[c]!r} of image {test['image_id'].iloc[r]!r} holds "
            f"{y[r, c]!r}; labels must be 0 or 1"
        )
    return y.astype(np.uint8), classes, test["image_id"].astype(str).tolist()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_seeds(run: str) -> list[int]:
    from .. import train

    return [int(s) for s in train.trained_seeds(run)]


def dense_model_loader(run: str, device: torch.device | str) -> Callable[[int], nn.Module]:
    """``seed → dense model of run on device`` (eval mode), via :func:`prunecxr.train.load_model`."""
    from .. import train

    def load(seed: int) -> nn.Module:
        return train.load_model(run, seed, device=device).eval()

    return load


def _resolve_device(device: str) -> torch.device:
    from .. import train

    return torch.device(train.resolve_device(device))


def _test_images(run: str, classes: list[str], n_test: int) -> torch.Tensor:
    from .. import data

    split = data.open_split(run, "test")
    if list(split.classes) != list(classes):
        raise ValueError(
            f"the test split of run {run!r} has classes {list(split.classes)}, but labels.parquet "
            f"has {classes}; re-run notebook 01_data"
        )
    if len(split.images) != n_test:
        raise ValueError(
            f"the test split of run {run!r} has {len(split.images)} images, but labels.parquet "
            f"has {n_test} test rows; re-run notebook 01_data"
        )
    return torch.from_numpy(np.array(split.images, dtype=np.uint8))  # read into memory once


# =========================================================================================
# The sweep
# =========================================================================================
def _sweep_record(
    method: str, seed: int, sparsities: Sequence[float], classes: Sequence[str], ids_digest: str,
    checkpoint_digest: str,
) -> dict:
    return {
        "method": method,
        "seed": int(seed),
        "sparsities": [float(s) for s in sparsities],
        "classes": list(classes),
        "test_image_ids_sha256": ids_digest,
        "checkpoint_sha256": checkpoint_digest,
    }


def _finished_block(
    run: str, method: str, seed: int, record: dict, final: tuple[np.ndarray, dict] | None
) -> np.ndarray | None:
    """The seed's ``[K, N, C]`` probabilities if a previous sweep finished it, else None.

    A seed counts as finished when its record (written after its probabilities) matches
    ``record`` exactly — same sparsities, classes, test images and checkpoint bytes — and its
    probabilities are still there: in its partial file, or in the merged ``probs.npy``.
    """
    work = paths.run_paths(run).prune_work(method)
    record_path, partial = work / f"seed-{seed}.json", work / f"seed-{seed}.npy"
    if not record_path.exists():
        return None
    try:
        if artifacts.read_json(record_path) != record:
            return None
    except ValueError:
        return None
    if partial.exists():
        return artifacts.load_npy(partial, mmap=True)
    if final is not None:
        probs, meta = final
        if (
            seed in meta["seeds"]
            and _same_sparsities(meta["sparsities"], record["sparsities"])
            and meta["classes"] == record["classes"]
        ):
            return probs[meta["seeds"].index(seed)]
    return None


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files that a killed process left behind (``artifacts.atomic_path`` names them ``.*.tmp``)."""
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def sweep_method(
    run: str,
    method: str,
    *,
    seeds: Sequence[int],
    sparsities: Sequence[float],
    load_model: Callable[[int], nn.Module],
    images: torch.Tensor,
    classes: Sequence[str],
    image_ids: Sequence[str],
    device: torch.device | str,
    batch_size: int,
    progress: bool = True,
) -> Path:
    """One method's sweep over ``seeds × sparsities``; writes ``probs.npy`` and ``meta.json``.

    ``load_model(seed)`` returns the dense model of ``seed`` on ``device`` in eval mode (its
    weights are those of ``runs/<run>/models/seed-<s>/model.pt``); ``images`` are the test
    images in the order of ``image_ids``, uint8 ``[N, H, W]`` or as :func:`sweep_inputs`
    prepares them.

    Resumable per seed: each finished seed is saved atomically to ``work/seed-<s>.npy`` with
    a record of what it was computed from (``work/seed-<s>.json``); a later call skips every
    seed whose record matches, whether its block is still a partial file or already merged
    into ``probs.npy``. When all seeds are done the blocks are merged into ``probs.npy`` (see
    :func:`write_store`) and the partial files removed; the records stay as the store's
    provenance. Nothing is written when the store is already up to date.
    """
    from tqdm import tqdm

    check_method(method)
    sparsities = check_sparsities(sparsities)
    rp = paths.run_paths(run)
    work = paths.run_paths(run).prune_work(method)
    work.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(work)
    _remove_stale_temporaries(rp.prune_dir(method))
    ids_digest = hashlib.sha256("\n".join(image_ids).encode()).hexdigest()
    try:
        final = load_probs(run, method, mmap=True)
    except (FileNotFoundError, ValueError):
        final = None

    n_test, k = images.shape[0], len(sparsities)
    records = {
        seed: _sweep_record(
            method, seed, sparsities, classes, ids_digest, _sha256(rp.checkpoint(seed))
        )
        for seed in seeds
    }
    computed = 0
    bar = tqdm(total=len(seeds) * k, desc=method, unit="model", disable=not progress, mininterval=5)
    for seed in seeds:
        record = records[seed]
        if _finished_block(run, method, seed, record, final) is not None:
            bar.update(k)
            continue
        model = load_model(seed)
        pruner = create_pruner(method, model, seed=seed)
        block = np.empty((k, n_test, len(classes)), dtype=np.float32)
        for j, sparsity in enumerate(sparsities):
            pruner.apply(sparsity)
            probs = predict_probs(model, images, batch_size=batch_size, device=device)
            if probs.shape != block.shape[1:]:
                raise ValueError(
                    f"seed {seed}'s model emits {probs.shape[1]} outputs for {len(classes)} classes"
                )
            block[j] = probs
            bar.update(1)
        artifacts.save_npy(work / f"seed-{seed}.npy", block)
        artifacts.write_json(work / f"seed-{seed}.json", record)
        computed += 1
        del model, pruner
    bar.close()

    up_to_date = (
        computed == 0
        and not any(work.glob("seed-*.npy"))  # a partial would be newer than probs.npy
        and final is not None
        and final[1]["method"] == method
        and final[1]["seeds"] == [int(s) for s in seeds]
        and _same_sparsities(final[1]["sparsities"], sparsities)
        and final[1]["classes"] == list(classes)
        and final[0].shape[2] == n_test
    )
    if not up_to_date:
        blocks = (_finished_block(run, method, s, records[s], final) for s in seeds)
        write_store(
            run, method, seeds=seeds, sparsities=sparsities, classes=classes, n_test=n_test,
            blocks=blocks,
        )
    for partial in work.glob("seed-*.npy"):
        partial.unlink()
    return rp.probs(method)


def sweep_inputs(images: torch.Tensor, *, budget_bytes: int | None = None) -> torch.Tensor:
    """The test images as the sweep feeds them to :func:`predict_probs`, on their device.

    A sweep evaluates the same images hundreds of times (every seed at every sparsity), so
    it preprocesses them once, float32 ``[N, 3, H, W]``, where that fits ``budget_bytes``
    (by default an eighth of the RAM on a CPU, a quarter of the free memory of a GPU);
    otherwise it keeps the uint8 ``[N, H, W]`` and :func:`predict_probs` preprocesses each
    batch. Either way the model sees the same numbers. On the default profile's 2 CPU
    cores, preprocessing a batch cost about 5% of its forward pass.
    """
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 [N, H, W], got {images.dtype} {tuple(images.shape)}")
    if budget_bytes is None:
        if images.device.type == "cuda":
            budget_bytes = torch.cuda.mem_get_info(images.device)[0] // 4
        else:
            from .. import train

            budget_bytes = train._memory_bytes() // 8
    if images.numel() * 3 * 4 > budget_bytes:
        return images
    out = torch.empty((images.shape[0], 3, *images.shape[1:]), dtype=torch.float32, device=images.device)
    for start in range(0, images.shape[0], 1024):
        out[start : start + 1024] = _models.preprocess(images[start : start + 1024])
    return out


def inference_threads(model: nn.Module, images: torch.Tensor, *, batch_size: int) -> int:
    """The faster intra-op CPU thread count for evaluating ``model`` now: 1 or all cores.

    Times :func:`predict_probs` on up to four batches of ``images`` with each count,
    alternating, best of two. On 2 idle cores two threads evaluated the default profile's
    sweep 1.5x faster than one; on 2 cores shared with a test suite, the same sweep with two
    threads took 909 s instead of 135 s (a parked second thread stalls every parallel region).
    """
    from .. import train

    cores = train._usable_cores()
    if cores < 2:
        return 1
    sample = images[: min(len(images), 4 * batch_size)]
    times: dict[int, float] = {}
    with train._num_threads(None):
        for n in (1, cores, 1, cores):
            torch.set_num_threads(n)
            start = time.perf_counter()
            predict_probs(model, sample, batch_size=batch_size, device="cpu")
            times[n] = min(times.get(n, math.inf), time.perf_counter() - start)
    return min(times, key=times.get)


def run_sweep(
    run: str,
    *,
    methods: Sequence[str],
    sparsities: Sequence[float],
    device: str = "auto",
    batch_size: int = 256,
    seeds: Sequence[int] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Prune every trained seed of ``run`` with each method at each sparsity; store the probs.

    Parameters
    ----------
    run : str
        A run whose models notebook 02_train has trained.
    methods : list of str
        Keys of :data:`METHODS`.
    sparsities : list of float
        Strictly increasing fractions in [0, 1], starting with 0.0 (the dense model, the
        baseline of every comparison).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (resolved by :func:`prunecxr.train.resolve_device`).
    batch_size : int
        Test images per forward pass.
    seeds : list of int, optional
        Defaults to every trained seed.
    threads : int, optional
        CPU threads for the forward passes; by default measured (:func:`inference_threads`).
        Ignored on a GPU.

    Returns
    -------
    dict
        ``method → prune/<method>/probs.npy``.
    """
    methods = [check_method(m) for m in methods]
    sparsities = check_sparsities(sparsities)
    if sparsities[0] != 0.0:
        raise ValueError(
            f"sparsities must start with 0.0 (the dense model, the baseline of every "
            f"comparison); got {sparsities[0]!r} first"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    all_seeds = _run_seeds(run)
    if seeds is None:
        seeds = all_seeds
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise FileNotFoundError(f"run {run!r} has no trained model: run notebook 02_train first")
    missing = sorted(set(seeds) - set(all_seeds))
    if missing:
        raise FileNotFoundError(f"run {run!r} has no trained model for seeds {missing}")
    _, classes, image_ids = read_test_labels(run)
    torch_device = _resolve_device(device)
    if torch_device.type == "cpu":
        runtime.keep_freed_memory()
    images = sweep_inputs(_test_images(run, classes, len(image_ids)).to(torch_device))
    load = dense_model_loader(run, torch_device)
    if torch_device.type != "cpu":
        threads = None
    elif threads is None:
        threads = inference_threads(load(seeds[0]), images, batch_size=batch_size)
    elif not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    from ..train import _num_threads

    with _num_threads(threads):
        return {
            method: sweep_method(
                run, method, seeds=seeds, sparsities=sparsities, load_model=load, images=images,
                classes=classes, image_ids=image_ids, device=torch_device, batch_size=batch_size,
                progress=progress,
            )
            for method in methods
        }


# =========================================================================================
# Metrics
# =========================================================================================
def compute_metrics(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    seeds: Sequence[int],
    sparsities: Sequence[float],
    classes: Sequence[str],
) -> pd.DataFrame:
    """AP and AUROC per (seed, sparsity, class): the rows of ``metrics.parquet``.

    Parameters
    ----------
    probs : array ``[S, K, N, C]``
        Probabilities (:func:`load_probs`).
    y : array ``[N, C]`` of 0/1
        Test labels in the same row and class order.

    Returns
    -------
    DataFrame
        Columns :data:`METRIC_COLUMNS`; AP (and AUROC) NaN for a class with no positive test
        image, which warns (:class:`MissingPositivesWarning`).
    """
    probs = np.asarray(probs) if not isinstance(probs, np.ndarray) else probs
    s_, k_, n_, c_ = probs.shape
    if (len(seeds), len(sparsities), len(classes)) != (s_, k_, c_) or y.shape != (n_, c_):
        raise ValueError(
            f"probs {probs.shape} do not match {len(seeds)} seeds, {len(sparsities)} sparsities, "
            f"{len(classes)} classes and labels {y.shape}"
        )
    n_pos = y.sum(axis=0).astype(np.int64)
    empty = [classes[i] for i in np.flatnonzero(n_pos == 0)]
    if empty:
        warnings.warn(
            f"classes without a positive test image: {empty}; their AP is NaN and they are "
            "left out of class means",
            MissingPositivesWarning,
            stacklevel=2,
        )
    frames = []
    for i, seed in enumerate(seeds):
        for j, sparsity in enumerate(sparsities):
            p = np.asarray(probs[i, j])
            if not np.isfinite(p).all():
                r, cc = np.argwhere(~np.isfinite(p))[0]
                raise ValueError(
                    f"probabilities of seed {seed} at sparsity {sparsity} are not finite "
                    f"(test row {r}, class {classes[cc]!r})"
                )
            ap, auroc = ranking_metrics(y, p)
            frames.append(
                pd.DataFrame({
                    "seed": int(seed), "sparsity": float(sparsity), "class": list(classes),
                    "ap": ap, "auroc": auroc, "n_pos": n_pos,
                })
            )
    return pd.concat(frames, ignore_index=True)[METRIC_COLUMNS]


def write_metrics(run: str, method: str) -> pd.DataFrame:
    """``prune/<method>/metrics.parquet`` from the stored probabilities and the test labels."""
    probs, meta = load_probs(run, method)
    y, classes, _ = read_test_labels(run)
    if meta["classes"] != classes:
        raise ValueError(
            f"{paths.run_paths(run).prune_meta(method)} has classes {meta['classes']}, but "
            f"labels.parquet has {classes}; re-run notebook 03_prune"
        )
    if probs.shape[2] != len(y):
        raise ValueError(
            f"{paths.run_paths(run).probs(method)} has {probs.shape[2]} test rows, labels.parquet "
            f"{len(y)}; re-run notebook 03_prune"
        )
    metrics = compute_metrics(
        probs, y, seeds=meta["seeds"], sparsities=meta["sparsities"], classes=classes
    )
    artifacts.write_parquet(paths.run_paths(run).metrics(method), metrics)
    return metrics


def read_metrics(run: str, method: str) -> pd.DataFrame:
    return artifacts.read_parquet(paths.run_paths(run).metrics(method), what="notebook 03_prune")


# =========================================================================================
# Fig. 1: overall performance against sparsity
# =========================================================================================
OVERALL_COLUMNS = [
    "sparsity", "n_seeds", "mean_ap_median", "mean_ap_q25", "mean_ap_q75", "mean_ap_mean",
    "welch_t", "p_value", "p_holm", "significant_drop", "significant_drop_holm",
]


def seed_mean_ap(metrics: pd.DataFrame) -> pd.DataFrame:
    """Class-mean AP per (seed, sparsity): ``mAP_{i,k} = mean_c AP_{i,k,c}`` over defined APs.

    Classes whose AP is NaN (no positive test image) are left out, with a
    :class:`MissingPositivesWarning`. Returns columns ``seed``, ``sparsity``, ``mean_ap``.
    """
    missing = [c for c in ("seed", "sparsity", "class", "ap") if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lack the columns {missing}; see ARTIFACTS.md (metrics.parquet)")
    if "method" in metrics.columns and metrics["method"].nunique() > 1:
        raise ValueError(
            f"metrics hold several methods {sorted(metrics['method'].unique())}; pass one at a time"
        )
    undefined = sorted(metrics.loc[metrics["ap"].isna(), "class"].unique())
    if undefined:
        warnings.warn(
            f"AP is NaN for classes {undefined} (no positive test image); they are left out "
            "of the class-mean AP",
            MissingPositivesWarning,
            stacklevel=2,
        )
    out = metrics.groupby(["seed", "sparsity"], as_index=False)["ap"].mean()  # skips NaN
    return out.rename(columns={"ap": "mean_ap"})


def holm(p: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaN entries stay NaN and do not count as tests.

    With the ``m`` finite p-values sorted ascending, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))``.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
        out[order] = np.maximum.accumulate(scaled)
    return out


def overall_table(metrics: pd.DataFrame, *, alpha: float = PAPER_ALPHA) -> pd.DataFrame:
    """Fig. 1's statistics: one row per sparsity of the seeds' class-mean AP.

    Parameters
    ----------
    metrics : DataFrame
        ``metrics.parquet`` of one method (columns ``seed``, ``sparsity``, ``class``, ``ap``);
        must hold sparsity 0 (the dense models).
    alpha : float
        Significance level (the paper's: 0.001).

    Returns
    -------
    DataFrame, columns :data:`OVERALL_COLUMNS`
        ``mean_ap_median``, ``mean_ap_q25``, ``mean_ap_q75``, ``mean_ap_mean``: median,
        quartiles (linear interpolation) and mean over seeds of ``mAP_{i,k}``
        (:func:`seed_mean_ap`). ``welch_t``, ``p_value``: Welch's two-sided t-test
        (``scipy.stats.ttest_ind(equal_var=False)``) of ``{mAP_{i,k}}_i`` against
        ``{mAP_{i,0}}_i`` — NaN at sparsity 0, and when a group has fewer than two seeds or
        both have no variance. ``p_holm``: :func:`holm` over the non-zero sparsities.
        ``significant_drop`` = ``p_value < alpha`` and ``welch_t < 0`` (lower than dense);
        ``significant_drop_holm`` likewise with ``p_holm``.
    """
    import scipy.stats

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    per_seed = seed_mean_ap(metrics)
    sparsities = np.sort(per_seed["sparsity"].unique())
    if not np.any(np.isclose(sparsities, 0.0, atol=_SPARSITY_ATOL, rtol=0)):
        raise ValueError(
            f"metrics have no sparsity 0 (the dense models); sparsities present: {list(sparsities)}"
        )
    values = {s: g["mean_ap"].to_numpy(dtype=float) for s, g in per_seed.groupby("sparsity")}
    dense = values[sparsities[np.isclose(sparsities, 0.0, atol=_SPARSITY_ATOL, rtol=0)][0]]
    rows = []
    for s in sparsities:
        v = values[s]
        v = v[np.isfinite(v)]
        t = p = math.nan
        if s > _SPARSITY_ATOL and v.size >= 2 and np.isfinite(dense).sum() >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # zero variance → NaN, documented
                res = scipy.stats.ttest_ind(v, dense[np.isfinite(dense)], equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
        rows.append({
            "sparsity": float(s),
            "n_seeds": int(v.size),
            "mean_ap_median": float(np.median(v)) if v.size else math.nan,
            "mean_ap_q25": float(np.quantile(v, 0.25)) if v.size else math.nan,
            "mean_ap_q75": float(np.quantile(v, 0.75)) if v.size else math.nan,
            "mean_ap_mean": float(v.mean()) if v.size else math.nan,
            "welch_t": t,
            "p_value": p,
        })
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    lower = table["welch_t"] < 0
    table["significant_drop"] = lower & (table["p_value"] < alpha)
    table["significant_drop_holm"] = lower & (table["p_holm"] < alpha)
    return table[OVERALL_COLUMNS]


def first_significant_drop(table: pd.DataFrame, *, holm: bool = False) -> float:
    """The smallest sparsity whose mean AP is significantly below the dense models'; NaN if none.

    ``table`` is :func:`overall_table`'s; ``holm`` selects the Holm-corrected flag.
    """
    column = "significant_drop_holm" if holm else "significant_drop"
    if column not in table.columns:
        raise ValueError(f"table lacks the column {column!r}; pass overall_table's result")
    hits = table.loc[table[column].astype(bool), "sparsity"]
    return float(hits.min()) if len(hits) else math.nan


@dataclass(frozen=True)
class MagnitudeSummary:
    """Distribution of ``|w|`` over the pruned set of the dense models (Fig. 1, right).

    ``histogram`` has columns ``left``, ``right``, ``count``, ``fraction`` over log-spaced
    bins (summed over models; magnitudes beyond the outer edges are counted in the outer
    bins, exact zeros only in ``n_zero``). ``fraction_below`` is the exact share of weights
    with ``|w| < below`` (zeros included).
    """

    histogram: pd.DataFrame
    n_models: int
    n_weights: int
    n_zero: int
    below: float
    fraction_below: float


#: log-spaced bin edges of the magnitude histogram: 10 per decade from 1e-8 to 10
MAGNITUDE_EDGES = np.logspace(-8, 1, 91)


def magnitude_summary(
    models: Iterable[nn.Module], *, below: float = SMALL_WEIGHT, edges: np.ndarray = MAGNITUDE_EDGES
) -> MagnitudeSummary:
    """Histogram and share below ``below`` of the pruned-set magnitudes of ``models``."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    n_models = n_weights = n_zero = n_below = 0
    for model in models:
        named = prunable_parameters(model)
        mags = _flat_magnitudes([p for _, p in named], [n for n, _ in named])
        n_models += 1
        n_weights += mags.size
        n_below += int((mags < below).sum())
        nonzero = mags[mags > 0]
        n_zero += mags.size - nonzero.size
        clipped = np.clip(nonzero, edges[0], np.nextafter(edges[-1], 0))
        counts += np.histogram(clipped, bins=edges)[0]
    if n_models == 0:
        raise ValueError("magnitude_summary needs at least one model")
    hist = pd.DataFrame({
        "left": edges[:-1], "right": edges[1:], "count": counts, "fraction": counts / n_weights,
    })
    return MagnitudeSummary(hist, n_models, n_weights, n_zero, float(below), n_below / n_weights)


def dense_magnitude_summary(run: str, *, below: float = SMALL_WEIGHT) -> MagnitudeSummary | None:
    """:func:`magnitude_summary` of every trained dense model of ``run``; None without models.

    A run whose predictions were imported has no weights, hence no histogram.
    """
    try:
        seeds = _run_seeds(run)
    except (FileNotFoundError, ModuleNotFoundError):
        return None
    seeds = [s for s in seeds if paths.run_paths(run).checkpoint(s).exists()]
    if not seeds:
        return None
    load = dense_model_loader(run, "cpu")
    return magnitude_summary((load(s) for s in seeds), below=below)


_METHOD_COLORS = {"global_l1": "#1f77b4", "layerwise_l1": "#2ca02c", "random": "#d62728"}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def figure_order(methods: Iterable[str]) -> list[str]:
    """Methods in figure order: the paper's (``global_l1``) first, then the others as given."""
    methods = list(dict.fromkeys(methods))
    return sorted(methods, key=lambda m: m != PAPER_METHOD)


#: height of one method's row of Fig. 1, in pixels
FIG1_ROW_HEIGHT = 260


def figure_1(
    tables: dict[str, pd.DataFrame],
    magnitudes: MagnitudeSummary | None,
    *,
    alpha: float = PAPER_ALPHA,
) -> tuple[go.Figure, pd.DataFrame]:
    """Fig. 1: mean AP against sparsity per method, beside the dense weights' magnitudes.

    Parameters
    ----------
    tables : dict
        ``method → overall_table(metrics)``; drawn one row per method, ``global_l1`` first.
    magnitudes : MagnitudeSummary or None
        The right panel (log-scale histogram of ``|w|``); omitted when None (imported runs).
    alpha : float
        The level the tables were computed at (named in the annotations).

    Returns
    -------
    (figure, data)
        ``data`` is the plotted values in long format: rows with ``panel == "mean_ap"``
        (``method`` and the table's columns) and ``panel == "weight_magnitude"`` (the
        histogram's columns).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = figure_order(tables)
    if not methods:
        raise ValueError("figure_1 needs at least one method's table")
    m = len(methods)
    titles = [f"{name}: class-mean AP, median and IQR over seeds" for name in methods]
    if magnitudes is not None:
        specs = [[{}, {"rowspan": m}]] + [[{}, None] for _ in range(m - 1)]
        titles = [titles[0], "dense weights |w| (pruned set)"] + titles[1:]
        fig = make_subplots(
            rows=m, cols=2, specs=specs, column_widths=[0.6, 0.4], subplot_titles=titles,
            shared_xaxes=True, horizontal_spacing=0.1, vertical_spacing=0.12 / max(m - 1, 1),
        )
    else:
        fig = make_subplots(rows=m, cols=1, subplot_titles=titles, shared_xaxes=True)
    level = fmt.num(alpha, 3)
    frames = []
    for row, method in enumerate(methods, start=1):
        table = tables[method]
        color = _METHOD_COLORS.get(method, "#555555")
        x = table["sparsity"].to_numpy()
        fig.add_trace(
            go.Scatter(x=x, y=table["mean_ap_q75"], mode="lines", line=dict(width=0),
                       showlegend=False, hoverinfo="skip"), row=row, col=1,
        )
        fig.add_trace(
            go.Scatter(x=x, y=table["mean_ap_q25"], mode="lines", line=dict(width=0),
                       fill="tonexty", fillcolor=_rgba(color, 0.2), name=f"{method}: IQR over seeds",
                       hoverinfo="skip"), row=row, col=1,
        )
        fig.add_trace(
            go.Scatter(x=x, y=table["mean_ap_median"], mode="lines+markers", line=dict(color=color),
                       name=f"{method}: median over seeds",
                       customdata=np.stack([table["n_seeds"], table["p_value"], table["p_holm"]], axis=-1),
                       hovertemplate="sparsity %{x:.0%}<br>median mAP %{y:.3f}<br>n = %{customdata[0]}"
                       "<br>P = %{customdata[1]:.2g}<br>P (Holm) = %{customdata[2]:.2g}<extra></extra>"),
            row=row, col=1,
        )
        first = first_significant_drop(table)
        first_holm = first_significant_drop(table, holm=True)
        last = f"none up to {fmt.pct(table['sparsity'].max())}"
        lines = [
            f"first significant drop (Welch, P < {level}): {last if math.isnan(first) else fmt.pct(first)}",
            f"with Holm correction: {last if math.isnan(first_holm) else fmt.pct(first_holm)}",
        ]
        for value, dash in ((first, "dash"), (first_holm, "dot")):
            if not math.isnan(value):
                fig.add_vline(x=value, line=dict(color="#444444", dash=dash, width=1), row=row, col=1)
        fig.add_annotation(
            text="<br>".join(lines), xref="x domain", yref="y domain", row=row, col=1,
            x=0.99, y=0.97, xanchor="right", yanchor="top", showarrow=False, align="right",
            font=dict(size=11), bgcolor="rgba(255,255,255,0.7)",
        )
        fig.update_yaxes(title_text="mean AP", row=row, col=1)
        frames.append(table.assign(panel="mean_ap", method=method))
    fig.update_xaxes(tickformat=".0%", row=m, col=1, title_text="sparsity")
    if magnitudes is not None:
        h = magnitudes.histogram
        x = np.append(h["left"].to_numpy(), h["right"].iloc[-1])
        y = np.append(h["fraction"].to_numpy(), h["fraction"].iloc[-1])
        fig.add_trace(
            go.Scatter(x=x, y=y, mode="lines", line=dict(shape="hv", color="#555555"), fill="tozeroy",
                       name="share of weights per bin", showlegend=False),
            row=1, col=2,
        )
        fig.add_vline(x=magnitudes.below, line=dict(color="#b00020", dash="dash"), row=1, col=2)
        fig.add_annotation(
            text=(f"{fmt.pct(magnitudes.fraction_below, 1)} of |w| &lt; {fmt.num(magnitudes.below, 2)}"
                  f"<br>({magnitudes.n_models} models)"),
            xref="x domain", yref="y domain", row=1, col=2, x=0.02, y=0.98, xanchor="left",
            yanchor="top",
            showarrow=False, align="left", font=dict(size=11, color="#b00020"),
        )
        fig.update_xaxes(type="log", title_text="|w| (log scale)", exponentformat="power", row=1, col=2)
        fig.update_yaxes(title_text="share of weights", tickformat=".0%", row=1, col=2)
        frames.append(h.assign(panel="weight_magnitude"))
    fig.update_layout(
        title=dict(text="Fig. 1 — overall performance against sparsity"),
        height=FIG1_ROW_HEIGHT * m + 200,
        showlegend=False,
        margin=dict(t=130),
    )
    data = pd.concat(frames, ignore_index=True)
    front = ["panel", "method"]
    data = data[front + [c for c in data.columns if c not in front]]
    return fig, data


# =========================================================================================
# The stage (notebook 03)
# =========================================================================================
def overall_tables(run: str, methods: Sequence[str], *, alpha: float = PAPER_ALPHA) -> dict[str, pd.DataFrame]:
    """``method → overall_table`` from each method's ``metrics.parquet``, in figure order."""
    with _each_warning_once():
        return {m: overall_table(read_metrics(run, m), alpha=alpha) for m in figure_order(methods)}


def summary_display(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The first significant drops of every method as text (via :mod:`prunecxr.fmt`)."""
    return pd.DataFrame({
        "method": list(tables),
        "dense mean AP (median)": [fmt.num(t["mean_ap_median"].iloc[0], 3) for t in tables.values()],
        "first significant drop": [fmt.pct(first_significant_drop(t)) for t in tables.values()],
        "… with Holm correction": [fmt.pct(first_significant_drop(t, holm=True)) for t in tables.values()],
    })


def store_summary(run: str, methods: Sequence[str]) -> pd.DataFrame:
    """One row per method: the axes of its ``probs.npy`` (seeds, sparsities, test images, classes)."""
    rows = []
    for method in figure_order(methods):
        probs, meta = load_probs(run, method)
        rows.append({
            "method": method,
            "seeds": len(meta["seeds"]),
            "sparsities": len(meta["sparsities"]),
            "test images": probs.shape[2],
            "classes": len(meta["classes"]),
            "description": METHODS[method].description,
        })
    return pd.DataFrame(rows)


@contextlib.contextmanager
def _each_warning_once() -> Iterator[None]:
    """Re-emit the warnings raised inside once each (the methods of a run share test labels,
    so each would repeat the same missing-positives warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        key = (w.category, str(w.message))
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def write_all_metrics(run: str, methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """:func:`write_metrics` for each method, in figure order (each warning shown once)."""
    with _each_warning_once():
        return {method: write_metrics(run, method) for method in figure_order(methods)}


def overall_long(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The :func:`overall_table` of every method stacked, with a ``method`` column first."""
    return pd.concat([t.assign(method=m) for m, t in tables.items()], ignore_index=True)[
        ["method", *OVERALL_COLUMNS]
    ]


def magnitude_sentence(summary: MagnitudeSummary | None) -> str:
    """The paper's observation, recomputed: the share of dense weights below 0.01."""
    if summary is None:
        return ("No dense checkpoints in this run (imported predictions): the weight-magnitude "
                "panel of Fig. 1 is left out.")
    return (
        f"Over the {summary.n_models} dense models, {fmt.pct(summary.fraction_below, 1)} of the "
        f"{summary.n_weights // summary.n_models:,} pruned-set weights per model have "
        f"|w| < {fmt.num(summary.below, 2)} ({fmt.pct(summary.n_zero / summary.n_weights, 2)} are exactly 0)."
    )
