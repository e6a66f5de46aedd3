"""Quantization: weights on a grid of ``2^b`` levels (``weight_quant``), and real int8
inference on x86 CPUs (``int8_ptq``, ``int8_ptq_rare``).

``weight_quant`` — symmetric per-output-channel weight quantization, round to nearest. For the
weight ``W`` of every ``Conv2d`` and ``Linear`` (the pruning methods' set: stem, shortcuts and
classifier included; biases and BatchNorm stay float32), output channel ``o`` and ``b`` bits,

    q_max = 2^(b-1) - 1,   s_o = max |W_o| / q_max,   Ŵ_o = s_o · clamp(round(W_o / s_o), -q_max, q_max)

(``round`` ties to even, torch's). The grid is symmetric around 0 with ``2 q_max + 1`` values,
so 0 is exact, the largest weight of each channel is exact, and 2 bits leave the ternary
``{-s_o, 0, s_o}``. The model keeps float32 weights that hold the quantized values: it measures
what ``b``-bit weights do to the predictions (the level axis ``bits``, analysed exactly like
sparsity), not how fast an integer kernel runs — that is ``int8_ptq``.

``int8_ptq`` — static post-training quantization to int8 for x86 CPUs with PyTorch's FX graph
mode (``torch.ao.quantization.quantize_fx``: ``prepare_fx``, calibration, ``convert_fx``) and
the ``x86`` backend (fbgemm and oneDNN kernels): BatchNorm folded into the convolutions,
weights int8 per output channel, activations uint8 per tensor with ranges observed on
:data:`~prunecxr.compress.compressor.CalibrationSet.n_images` training images. The model runs
int8 kernels in eager mode, so its speed is measured as is (``prunecxr.compress.deploy``).
Its levels are 32 bits (the float model) and 8. ``int8_ptq`` draws the calibration images
uniformly; ``int8_ptq_rare`` enriches them with rare classes (an image's weight is ``1 / n_c``
of its rarest class), to ask whether calibrating on the tail protects it.

Why FX and not PT2E: torchao's PT2E flow with the X86 Inductor quantizer produces a model that
is fast only once compiled by Inductor (minutes per model on 2 cores, per seed and level),
whereas FX's converted model runs int8 kernels directly; both reach the same oneDNN/fbgemm
kernels. ``torch.ao.quantization`` warns that it is deprecated (it still ships, and works, in
the pinned torch 2.15); the warning is silenced here and the choice is documented.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import levels
from .compressor import CalibrationSet, CompressionMethod, UnsupportedModel, require_calibration

BITS = levels.AXES["bits"]


def check_bits(bits) -> int:
    """``bits`` as an int in [2, 32] (32 = float32, not quantized), or a ValueError naming it."""
    value = BITS.check_level(bits, name="bits")
    if value < 2:
        raise ValueError(f"bits must be at least 2 (a symmetric grid with 0), got {bits!r}")
    return int(value)


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel round-to-nearest quantization of ``weight`` to ``bits``.

    Parameters
    ----------
    weight : tensor ``[out, ...]`` (a Conv2d or Linear weight).
    bits : 2 … 32; 32 returns ``weight`` unchanged.

    Returns
    -------
    tensor like ``weight``: ``s_o · clamp(round(W_o / s_o), -q_max, q_max)`` with
    ``q_max = 2^(bits-1) - 1`` and ``s_o = max|W_o| / q_max`` per output channel ``o``; a
    channel of zeros stays zero.
    """
    bits = check_bits(bits)
    if bits == 32:
        return weight
    q_max = 2 ** (bits - 1) - 1
    flat = weight.reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1, keepdim=True) / q_max
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(flat / safe), -q_max, q_max) * scale
    return q.reshape(weight.shape)


class _FakeQuant(nn.Module):
    """Parametrization: the forward pass sees the quantized weight, the gradient passes
    straight through to the float weight (straight-through estimator)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (quantize_weight(weight, self.bits) - weight).detach()


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers whose weights are quantized: every Conv2d and Linear, in module order."""
    out = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not out:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
    return out


class WeightQuantizer:
    """``weight_quant`` for one dense model: every call starts from the dense weights.

    :meth:`compress` writes the quantized values into ``model``'s weights in place (like
    :class:`prunecxr.compress.methods.Pruner`) and returns it in eval mode.
    """

    def __init__(
        self, model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
    ):
        self.model = model
        self.layers = quantized_layers(model)
        self.dense = [m.weight.detach().clone() for _, m in self.layers]

    def restore(self) -> None:
        """Put the dense weights back."""
        with torch.no_grad():
            for (_, m), dense in zip(self.layers, self.dense):
                m.weight.copy_(dense)

    def compress(self, level: float) -> nn.Module:
        bits = check_bits(level)
        with torch.no_grad():
            for (_, m), dense in zip(self.layers, self.dense):
                m.weight.copy_(quantize_weight(dense, bits))
        return self.model.eval()

    def for_recovery(self, level: float) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
        """A copy of the dense model whose Conv2d and Linear weights are seen through a
        fake-quantization parametrization (straight-through gradient); ``finish`` bakes the
        quantized values into plain weights."""
        bits = check_bits(level)
        self.restore()
        model = copy.deepcopy(self.model)  # training changes biases and BatchNorm too
        if bits != 32:
            for _, m in quantized_layers(model):
                parametrize.register_parametrization(m, "weight", _FakeQuant(bits))

        def finish(model: nn.Module) -> nn.Module:
            for _, m in quantized_layers(model):
                if parametrize.is_parametrized(m, "weight"):
                    parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            return model.eval()

        return model, finish


def _weight_quant(
    model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
) -> WeightQuantizer:
    return WeightQuantizer(model, seed=seed, calibration=calibration)


WEIGHT_QUANT = CompressionMethod(
    "weight_quant",
    "bits",
    _weight_quant,
    "symmetric per-output-channel weight quantization (round to nearest) of every Conv2d and Linear",
)


# =========================================================================================
# int8 static post-training quantization (FX graph mode, x86 backend)
# =========================================================================================
#: the quantized engine of int8_ptq (fbgemm and oneDNN kernels on x86 CPUs)
INT8_ENGINE = "x86"


@contextlib.contextmanager
def int8_engine() -> Iterator[None]:
    """The ``x86`` quantized engine, restored afterwards; torch.ao's deprecation and
    observer notices silenced (the module docstring says why this path is used)."""
    before = torch.backends.quantized.engine
    if INT8_ENGINE not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"int8_ptq needs the {INT8_ENGINE!r} quantized engine, which this torch build lacks "
            f"(supported: {torch.backends.quantized.supported_engines})"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.ao\..*")
        warnings.filterwarnings(
            "ignore", message=r".*quantized tensor creation functions.*deprecated.*"
        )
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        torch.backends.quantized.engine = INT8_ENGINE
        try:
            yield
        finally:
            torch.backends.quantized.engine = before


def _check_int8_level(level) -> int:
    bits = check_bits(level)
    if bits not in (8, 32):
        raise ValueError(f"int8_ptq quantizes to 8 bits (or keeps 32: the float model), not {bits}")
    return bits


def _cpu_model(model: nn.Module) -> nn.Module:
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8_ptq runs on x86 CPUs; the model is on {device} (use device='cpu')")
    return copy.deepcopy(model).eval()


def check_traceable(model: nn.Module, method: str = "int8_ptq") -> None:
    """Refuse a network torch.fx cannot trace (FX graph mode quantization needs its graph), such
    as one whose forward branches on its input's size."""
    try:
        torch.fx.symbolic_trace(copy.deepcopy(model))
    except Exception as err:  # torch.fx raises several types; each means the same here
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise UnsupportedModel(
            f"{method} cannot quantize {type(model).__name__}: torch.fx cannot trace it ({reason}); "
            "use weight_quant"
        ) from None


class Int8Quantizer:
    """``int8_ptq`` for one dense model: each call quantizes a fresh copy.

    ``draw`` is how the calibration images are drawn (``random`` or ``rare``, see
    :meth:`~prunecxr.compress.compressor.CalibrationSet.indices`), from a generator seeded by
    the model's seed.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        seed: int = 0,
        calibration: CalibrationSet | None = None,
        draw: str = "random",
        method: str = "int8_ptq",
    ):
        check_traceable(model, method)
        self.model = model.eval()
        self.seed = int(seed)
        self.calibration = require_calibration(method, calibration)
        self.draw = draw

    def calibration_batches(self) -> list[torch.Tensor]:
        cal = self.calibration
        n_batches = -(-cal.n_images // cal.batch_size)
        return cal.batches(n_batches, seed=self.seed, draw=self.draw)

    def compress(self, level: float) -> nn.Module:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        bits = _check_int8_level(level)
        model = _cpu_model(self.model)
        if bits == 32:
            return model
        batches = self.calibration_batches()
        with int8_engine():
            prepared = prepare_fx(
                model, get_default_qconfig_mapping(INT8_ENGINE), example_inputs=(batches[0][:1],)
            )
            with torch.inference_mode():
                for batch in batches:
                    prepared(batch)
            return convert_fx(prepared).eval()

    def for_recovery(self, level: float) -> tuple[nn.Module, Callable[[nn.Module], nn.Module]]:
        """Quantization-aware training's model: fake-quantized weights and activations with
        BatchNorm kept (``prepare_qat_fx``), observers calibrated on the same images as
        :meth:`compress` and then frozen; ``finish`` converts it to int8 (``convert_fx``)."""
        from torch.ao.quantization import disable_observer, get_default_qat_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

        bits = _check_int8_level(level)
        model = _cpu_model(self.model)
        if bits == 32:
            return model, lambda trained: trained.eval()
        batches = self.calibration_batches()
        with int8_engine():
            prepared = prepare_qat_fx(
                model.train(),
                get_default_qat_qconfig_mapping(INT8_ENGINE),
                example_inputs=(batches[0][:1],),
            )
            prepared.eval()
            with torch.no_grad():
                for batch in batches:
                    prepared(batch)
            prepared.apply(disable_observer)

        def finish(trained: nn.Module) -> nn.Module:
            with int8_engine():
                return convert_fx(trained.eval()).eval()

        return prepared, finish


def _int8(
    model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
) -> Int8Quantizer:
    return Int8Quantizer(
        model, seed=seed, calibration=calibration, draw="random", method="int8_ptq"
    )


def _int8_rare(
    model: nn.Module, *, seed: int = 0, calibration: CalibrationSet | None = None
) -> Int8Quantizer:
    return Int8Quantizer(
        model, seed=seed, calibration=calibration, draw="rare", method="int8_ptq_rare"
    )


INT8_PTQ = CompressionMethod(
    "int8_ptq",
    "bits",
    _int8,
    "int8 static post-training quantization for x86 CPUs (FX graph mode), calibrated on random training images",
    supported=(8.0,),
    needs_calibration=True,
    options={"calibration": "random"},
    cpu_only=True,
)
INT8_PTQ_RARE = CompressionMethod(
    "int8_ptq_rare",
    "bits",
    _int8_rare,
    "int8 static post-training quantization for x86 CPUs, calibrated on training images enriched with rare classes",
    supported=(8.0,),
    needs_calibration=True,
    options={"calibration": "rare"},
    cpu_only=True,
)

#: the entries of this module, for the registry (:data:`prunecxr.compress.methods.METHODS`)
METHODS = {m.name: m for m in (WEIGHT_QUANT, INT8_PTQ, INT8_PTQ_RARE)}
