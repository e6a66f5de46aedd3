"""Classifiers behind one registry, and the one input transform they all share.

``create_model(name, num_classes, pretrained=...)`` returns a torchvision network whose
classifier emits ``num_classes`` logits. ImageNet weights come through torchvision's
weights API from the local torch cache only: when a profile asks for them and they are not
there, :class:`PretrainedWeightsMissing` says how to get them. Nothing is ever downloaded,
and nothing falls back silently to random weights.

``stack_models`` turns ``n`` networks of one *stackable* architecture into a single network
that computes all of them at once (each convolution becomes a grouped convolution, each
BatchNorm one ``n``-times wider BatchNorm, each Linear a :class:`GroupedLinear`): the way a
population of small models keeps a GPU busy. Its state is the per-model states
concatenated along dimension 0, so ``unstack_state_dict`` gives every model back as an
ordinary ``state_dict``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

#: ImageNet normalization (the paper's recipe); grayscale is replicated to 3 channels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsMissing(FileNotFoundError):
    """ImageNet weights were asked for and are not in the local torch cache."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int, object | None], nn.Module]  # (num_classes, weights) -> model
    weights: Callable[[], object] | None  # torchvision weights enum member, or None
    description: str
    #: the forward pass keeps channel blocks apart, so :func:`stack_models` applies
    #: (ResNets: yes; DenseNet concatenates feature maps along channels: no)
    stackable: bool = False


def _replace_fc(model: nn.Module, num_classes: int) -> nn.Module:
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _resnet50(num_classes, weights):
    return _replace_fc(torchvision.models.resnet50(weights=weights), num_classes)


def _resnet18(num_classes, weights):
    return _replace_fc(torchvision.models.resnet18(weights=weights), num_classes)


def _densenet121(num_classes, weights):
    model = torchvision.models.densenet121(weights=weights)
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    return model


class SmallResNet(nn.Module):
    """A compact residual CNN for CPU profiles, built from torchvision's ``BasicBlock``.

    Stem conv 3×3 (stride 2) → three stages of one BasicBlock each (widths ``w, 2w, 4w``,
    each with stride 2 by default) → global average pool → ``fc``. Same module types as the
    ResNets (Conv2d, BatchNorm2d, Linear), so the pruning code treats it exactly like them.
    With ``w = 16`` and 15 classes it has 79 k parameters; on a 64 px image its feature maps
    are 32, 16, 8 and 4 px wide. Measured on the 64 px phantom on 2 CPU cores, downsampling in the first
    stage too (``strides=(2, 2, 2)``) trained 2.3× faster and to a higher mean AP than
    keeping 32 px there (``(1, 2, 2)``), and width 16 reached most of width 32's AP at half
    the cost.
    """

    def __init__(self, num_classes: int, width: int = 16, strides: tuple[int, ...] = (2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], width
        for i, stride in enumerate(strides):
            planes = width * 2**i
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            layers.append(BasicBlock(inplanes, planes, stride=stride, downsample=down))
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def _small_resnet(num_classes, weights):
    if weights is not None:
        raise ValueError("model 'small_resnet' has no pretrained weights; set pretrained = false")
    return SmallResNet(num_classes)


MODELS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(
        "resnet50", _resnet50, lambda: torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
        "ResNet-50, the paper's model (ImageNet weights, fc → C outputs)",
        stackable=True,
    ),
    "resnet18": ModelSpec(
        "resnet18", _resnet18, lambda: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        "ResNet-18 (ImageNet weights, fc → C outputs)",
        stackable=True,
    ),
    "densenet121": ModelSpec(
        "densenet121", _densenet121, lambda: torchvision.models.DenseNet121_Weights.IMAGENET1K_V1,
        "DenseNet-121, CheXNet's model (ImageNet weights, classifier → C outputs)",
    ),
    "small_resnet": ModelSpec(
        "small_resnet", _small_resnet, None,
        "compact residual CNN (stem + 3 BasicBlocks, widths 16/32/64) for CPU profiles; random init",
        stackable=True,
    ),
}


def weights_file(weights) -> Path:
    """Where torchvision keeps ``weights`` in the local torch cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def create_model(name: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-output classifier.

    Parameters
    ----------
    name : a key of :data:`MODELS`.
    num_classes : number of outputs (one logit per class).
    pretrained : load ImageNet weights from the local torch cache (never downloaded).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    spec = MODELS[name]
    weights = None
    if pretrained:
        if spec.weights is None:
            raise ValueError(f"model {name!r} has no pretrained weights; set pretrained = false")
        weights = spec.weights()
        path = weights_file(weights)
        if not path.exists():
            raise PretrainedWeightsMissing(
                f"ImageNet weights for {name!r} are not in the local torch cache ({path}). "
                f"This project never downloads them. On a machine with internet access run\n"
                f"    python -c \"import torchvision; torchvision.models.get_model('{name}', "
                f"weights='{weights}')\"\n"
                f"and copy {path.name} to {path.parent}/ (or set TORCH_HOME), "
                "or set pretrained = false to train from random initialization."
            )
    return spec.build(num_classes, weights)


def preprocess(images: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 grayscale ``[B, H, W]`` → float ``[B, 3, H, W]``, ImageNet-normalized.

    The one input transform of every model: training, evaluation and pruning share it.
    Grayscale is replicated to 3 channels, each normalized with ImageNet's mean and standard
    deviation (the paper's recipe). A stack of images for ``n`` stacked models,
    ``[B, n, H, W]``, becomes ``[B, 3n, H, W]`` (model ``k`` reads channels ``3k .. 3k+2``,
    see :func:`stack_models`). Works on any device; the output has the dtype float32.
    """
    if images.dtype != torch.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"expected uint8 images [B, H, W] (or [B, n, H, W] for stacked models), "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    x = images.to(torch.float32).div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.unsqueeze(2)  # [B, 1, H, W] or [B, n, 1, H, W]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    x = (x - mean) / std  # broadcast 1 → 3 channels
    if x.ndim == 5:
        x = x.flatten(1, 2)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# -- stacked populations ---------------------------------------------------------------


class GroupedLinear(nn.Module):
    """``n`` independent linear layers, one per channel block of the input.

    Input ``[B, n * in_features]`` (block ``k`` is model ``k``'s features), output
    ``[B, n * out_features]``. ``weight`` is ``[n * out_features, in_features]`` and ``bias``
    ``[n * out_features]``: the ``n`` models' ``nn.Linear`` tensors concatenated along
    dimension 0, the layout of every tensor of a stacked network.
    """

    def __init__(self, n: int, in_features: int, out_features: int, *, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(n * out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(n * out_features, **factory)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        w = self.weight.view(self.n, self.out_features, self.in_features)
        y = torch.einsum("bni,noi->bno", x.reshape(b, self.n, self.in_features), w)
        y = y.reshape(b, self.n * self.out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"n={self.n}, in_features={self.in_features}, out_features={self.out_features}"


def _stacked_leaf(module: nn.Module, n: int, where: str) -> nn.Module:
    like = next(iter(module.parameters(recurse=False)), None)
    if like is None:
        like = next(t for t in module.buffers(recurse=False) if t.is_floating_point())
    factory = {"device": like.device, "dtype": like.dtype}
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise TypeError(f"cannot stack {where}: padding_mode {module.padding_mode!r}")
        return nn.Conv2d(
            n * module.in_channels, n * module.out_channels, module.kernel_size,
            stride=module.stride, padding=module.padding, dilation=module.dilation,
            groups=n * module.groups, bias=module.bias is not None, **factory,
        )
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            n * module.num_features, eps=module.eps, momentum=module.momentum,
            affine=module.affine, track_running_stats=module.track_running_stats, **factory,
        )
    if isinstance(module, nn.Linear):
        return GroupedLinear(n, module.in_features, module.out_features, bias=module.bias is not None,
                             **factory)
    raise TypeError(
        f"cannot stack {where} ({type(module).__name__}): only Conv2d, BatchNorm2d, Linear "
        "and parameter-free modules can be stacked"
    )


def stack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One network that computes ``len(models)`` networks of one architecture at once.

    Parameters
    ----------
    models : ``n`` networks of the same architecture (same ``state_dict`` keys and shapes)
        whose forward pass keeps channel blocks apart (``ModelSpec.stackable``).

    Returns
    -------
    nn.Module
        A copy of ``models[0]`` in which every ``Conv2d`` is a convolution with ``n`` times
        the groups, every ``BatchNorm2d`` is ``n`` times wider and every ``Linear`` is a
        :class:`GroupedLinear`. It maps ``[B, 3n, H, W]`` (model ``k`` reads channels
        ``3k .. 3k+2``) to ``[B, n*C]`` (model ``k``'s logits in columns ``kC .. kC+C-1``),
        and holds the models' parameters and buffers (see :func:`stack_state_dicts`), in the
        train/eval mode of ``models[0]``. ``n = 1`` gives a plain copy of the model.
    """
    models = list(models)
    if not models:
        raise ValueError("stack_models needs at least one model")
    n = len(models)
    stacked = copy.deepcopy(models[0])
    if n > 1:
        for name, module in list(stacked.named_modules()):
            own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            if not own:
                continue
            parent, _, leaf = name.rpartition(".")
            owner = stacked.get_submodule(parent) if parent else stacked
            new = _stacked_leaf(module, n, name or type(module).__name__)
            new.train(module.training)
            setattr(owner, leaf, new)
    stacked.load_state_dict(stack_state_dicts([m.state_dict() for m in models]))
    return stacked


def stack_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state of a stacked network from its models' states.

    Every tensor with at least one dimension is the models' tensors concatenated along
    dimension 0; a scalar (BatchNorm's ``num_batches_tracked``) is shared and taken from the
    first model.
    """
    states = list(states)
    keys = list(states[0])
    for k, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ValueError(f"model {k} has other state_dict keys than model 0; cannot stack")
    out = {}
    for key in keys:
        tensors = [state[key] for state in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"cannot stack {key!r}: shapes {[tuple(t.shape) for t in tensors]}")
        out[key] = tensors[0].clone() if tensors[0].ndim == 0 else torch.cat(tensors, 0)
    return out


def unstack_state_dict(state: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """The ``n`` models' ordinary ``state_dict`` s from a stacked network's state.

    Inverse of :func:`stack_state_dicts`; the returned tensors are contiguous copies.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, t in state.items():
        t = t.detach()
        if t.ndim == 0:
            for k in range(n):
                out[k][key] = t.clone()
            continue
        if t.shape[0] % n:
            raise ValueError(f"{key!r} has {t.shape[0]} rows, not a multiple of n = {n}")
        blocks = t.unflatten(0, (n, -1))
        for k in range(n):
            out[k][key] = blocks[k].contiguous().clone()
    return out
