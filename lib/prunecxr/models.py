"""Classifiers behind one registry, and the one input transform they all share.

``create_model(name, num_classes, pretrained=...)`` returns a network whose classifier emits
``num_classes`` logits. ``name`` is one of

* a key of :data:`MODELS` (the paper's ResNet-50, ResNet-18, DenseNet-121, the CPU profiles'
  small ResNet);
* ``torchvision/<name>``: any classification model of ``torchvision.models``
  (``torchvision/vit_b_16``, ``torchvision/convnext_tiny``, …);
* ``timm/<name>``: any model of timm (the optional extra ``pip install prunecxr[timm]``;
  ``timm/vit_tiny_patch16_224``, ``timm/convnext_atto``, …); vision transformers are built
  with ``dynamic_img_size=True``, so they take the run's image size;
* ``module:factory``: a function of the user's code, ``factory(num_classes)`` → ``nn.Module``
  (:func:`check_model`).

Weights come from the local caches only (torch's for torchvision, Hugging Face's for timm):
when a profile asks for them and they are not there, :class:`PretrainedWeightsMissing` says
how to get them. Nothing is ever downloaded, and nothing falls back silently to random
weights. Random initialization draws from torch's generator, so the seed decides it.

:func:`preprocess` is the one input transform of every model (training, evaluation,
pruning).
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
                    nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
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


def _small_resnet_of(width: int):
    def build(num_classes, weights):
        if weights is not None:
            raise ValueError("the small ResNets have no pretrained weights; set pretrained = false")
        return SmallResNet(num_classes, width=width)

    return build


MODELS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(
        "resnet50",
        _resnet50,
        lambda: torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
        "ResNet-50, the paper's model (ImageNet weights, fc → C outputs)",
    ),
    "resnet18": ModelSpec(
        "resnet18",
        _resnet18,
        lambda: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
        "ResNet-18 (ImageNet weights, fc → C outputs)",
    ),
    "densenet121": ModelSpec(
        "densenet121",
        _densenet121,
        lambda: torchvision.models.DenseNet121_Weights.IMAGENET1K_V1,
        "DenseNet-121, CheXNet's model (ImageNet weights, classifier → C outputs)",
    ),
    "small_resnet": ModelSpec(
        "small_resnet",
        _small_resnet_of(16),
        None,
        "compact residual CNN (stem + 3 BasicBlocks, widths 16/32/64) for CPU profiles; random init",
    ),
    # wider versions, for the capacity benchmark (benchmarks/bench_capacity.py)
    "small_resnet_w32": ModelSpec(
        "small_resnet_w32",
        _small_resnet_of(32),
        None,
        "the compact residual CNN twice as wide (widths 32/64/128); random init",
    ),
    "small_resnet_w64": ModelSpec(
        "small_resnet_w64",
        _small_resnet_of(64),
        None,
        "the compact residual CNN four times as wide (widths 64/128/256); random init",
    ),
}


def weights_file(weights) -> Path:
    """Where torchvision keeps ``weights`` in the local torch cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


#: prefixes of model names outside the registry
TORCHVISION, TIMM = "torchvision/", "timm/"


def _torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _timm():
    try:
        import timm
    except ImportError:
        raise ValueError(
            "timm models need the optional dependency timm: pip install 'prunecxr[timm]'"
        ) from None
    return timm


def _factory(spec: str) -> Callable[[int], nn.Module]:
    import importlib

    module, _, attr = spec.partition(":")
    try:
        target = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"model {spec!r}: cannot import {attr!r} from {module!r}: {err}") from None
    if not callable(target):
        raise ValueError(
            f"model {spec!r} is a {type(target).__name__}, not a function factory(num_classes)"
        )
    return target


def check_model(name: str) -> str:
    """``name`` if it names a model :func:`create_model` can build, else a ValueError saying why."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model is named by a non-empty str, got {name!r}")
    if name in MODELS:
        return name
    if name.startswith(TORCHVISION):
        if name[len(TORCHVISION) :] not in _torchvision_names():
            raise ValueError(
                f"torchvision has no classification model {name[len(TORCHVISION) :]!r}; "
                "see torchvision.models.list_models()"
            )
        return name
    if name.startswith(TIMM):
        if not _timm().is_model(name[len(TIMM) :]):
            raise ValueError(f"timm has no model {name[len(TIMM) :]!r}; see timm.list_models()")
        return name
    if ":" in name:
        _factory(name)
        return name
    raise ValueError(
        f"unknown model {name!r}; choose one of {sorted(MODELS)}, 'torchvision/<name>', 'timm/<name>' "
        "or 'module:factory' (docs/extending.md)"
    )


def _replace_head(model: nn.Module, num_classes: int, name: str) -> nn.Module:
    """The last Linear of a pretrained network replaced by one with ``num_classes`` outputs."""
    last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"model {name!r} has no Linear classifier to replace")
    path, layer = last[-1]
    parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
    setattr(parent, path.rsplit(".", 1)[-1], nn.Linear(layer.in_features, num_classes))
    return model


def _missing(name: str, where: Path, how: str) -> PretrainedWeightsMissing:
    return PretrainedWeightsMissing(
        f"pretrained weights for {name!r} are not in the local cache ({where}). This project never "
        f"downloads them. On a machine with internet access run\n    {how}\nand copy the cache here, "
        "or set pretrained = false to train from random initialization."
    )


def _create_torchvision(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    arch = name[len(TORCHVISION) :]
    if not pretrained:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = weights_file(weights)
    if not path.exists():
        raise _missing(
            name,
            path,
            f"python -c \"import torchvision; torchvision.models.get_model('{arch}', "
            f"weights='{weights}')\"",
        )
    return _replace_head(torchvision.models.get_model(arch, weights=weights), num_classes, name)


def _create_timm(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    timm = _timm()
    arch = name[len(TIMM) :]
    options: dict = {"num_classes": num_classes}
    if pretrained:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(arch)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        found = try_to_load_from_cache(repo, "model.safetensors") if repo else None
        if not isinstance(found, str):
            raise _missing(
                name,
                Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser(),
                f"python -c \"import timm; timm.create_model('{arch}', pretrained=True)\"",
            )
        options.update(pretrained=True, pretrained_cfg_overlay={"file": found})
    try:
        return timm.create_model(arch, dynamic_img_size=True, **options)
    except TypeError:  # a network without a fixed input size (a CNN) takes any
        return timm.create_model(arch, **options)


def create_model(name: str, num_classes: int, *, pretrained: bool = False) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-output classifier.

    Parameters
    ----------
    name : a key of :data:`MODELS`, ``torchvision/<name>``, ``timm/<name>`` or
        ``module:factory`` (the module docstring).
    num_classes : number of outputs (one logit per class).
    pretrained : load ImageNet weights from the local cache (never downloaded).
    """
    check_model(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if name.startswith(TORCHVISION):
        return _create_torchvision(name, num_classes, pretrained)
    if name.startswith(TIMM):
        return _create_timm(name, num_classes, pretrained)
    if name not in MODELS:
        if pretrained:
            raise ValueError(
                f"model {name!r} is built by your factory, which loads its own weights; "
                "set pretrained = false"
            )
        model = _factory(name)(num_classes)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model {name!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module"
            )
        return model
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
    """uint8 grayscale ``[B, H, W]`` → float32 ``[B, 3, H, W]``, ImageNet-normalized.

    The one input transform of every model: training, evaluation and pruning share it.
    Grayscale is replicated to 3 channels, each normalized with ImageNet's mean and standard
    deviation (the paper's recipe). Works on any device; ``channels_last`` returns the
    channels_last memory format (used on CUDA).
    """
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(
            f"expected uint8 images [B, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)  # [B, 1, H, W]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    x = (x - mean) / std  # broadcast 1 → 3 channels
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
