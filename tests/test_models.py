"""The model registry, the shared input transform, and stacked populations."""

import numpy as np
import pytest
import torch
from torch import nn

from prunecxr import models

ALL = sorted(models.MODELS)
STACKABLE = sorted(name for name, spec in models.MODELS.items() if spec.stackable)
WITH_WEIGHTS = sorted(name for name, spec in models.MODELS.items() if spec.weights is not None)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _seeded(name, num_classes, seed):
    torch.manual_seed(seed)
    return models.create_model(name, num_classes)


@pytest.mark.parametrize("name", ALL)
def test_every_model_maps_images_to_one_logit_per_class(name):
    model = models.create_model(name, 7).eval()
    x = models.preprocess(torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    assert models.MODELS[name].description


@pytest.mark.parametrize("name", ALL)
def test_initialization_depends_only_on_the_seed(name):
    a, b, c = _seeded(name, 3, 0), _seeded(name, 3, 0), _seeded(name, 3, 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_missing_imagenet_weights_fail_with_instructions(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):  # pragma: no cover - reached only by a regression
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(models.PretrainedWeightsMissing, match="never downloads") as err:
        models.create_model(name, 4, pretrained=True)
    text = str(err.value)
    assert str(tmp_path / "torch") in text and "pretrained = false" in text
    assert isinstance(err.value, FileNotFoundError)


def test_imagenet_weights_come_from_the_local_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    donor = _seeded("resnet18", 1000, 5)
    weights = models.MODELS["resnet18"].weights()
    path = models.weights_file(weights)
    path.parent.mkdir(parents=True)
    torch.save(donor.state_dict(), path)
    model = models.create_model("resnet18", 4, pretrained=True)
    got, want = model.state_dict(), donor.state_dict()
    assert torch.equal(got["conv1.weight"], want["conv1.weight"])
    assert torch.equal(got["layer4.1.bn2.running_var"], want["layer4.1.bn2.running_var"])
    assert got["fc.weight"].shape == (4, 512)  # the classifier is replaced


def test_models_without_weights_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="has no pretrained weights"):
        models.create_model("small_resnet", 3, pretrained=True)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.create_model("vgg", 3)
    with pytest.raises(ValueError, match="num_classes"):
        models.create_model("small_resnet", 0)


def test_preprocess_replicates_gray_to_normalized_rgb():
    img = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    x = models.preprocess(img)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    for c in range(3):
        want = (img[0].float() / 255 - models.IMAGENET_MEAN[c]) / models.IMAGENET_STD[c]
        assert torch.allclose(x[0, c], want)
    stack = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)  # [B, n, H, W]
    xs = models.preprocess(stack, channels_last=True)
    assert xs.shape == (2, 9, 5, 5) and xs.is_contiguous(memory_format=torch.channels_last)
    for k in range(3):
        assert torch.equal(xs[:, 3 * k:3 * k + 3], models.preprocess(stack[:, k]))
    with pytest.raises(ValueError, match="uint8"):
        models.preprocess(img.float())


@pytest.mark.parametrize("name", STACKABLE)
def test_a_stack_computes_each_of_its_models(name):
    # in float64: deep random nets amplify float32 rounding by orders of magnitude
    n, c = (3, 4) if name == "small_resnet" else (2, 4)
    members = [_seeded(name, c, s).double() for s in range(n)]
    stacked = models.stack_models(members)
    size = 32 if name == "small_resnet" else 16  # float64 convolutions are slow on a CPU
    x = torch.randn(4, n, 3, size, size, dtype=torch.float64)
    # train mode: BatchNorm uses batch statistics, per model
    out = stacked(x.flatten(1, 2)).view(4, n, c)
    out.square().sum().backward()
    grads = models.unstack_state_dict({k: p.grad for k, p in stacked.named_parameters()}, n)
    for k, m in enumerate(members):
        mine = m(x[:, k])
        assert torch.allclose(out[:, k], mine, rtol=1e-9, atol=1e-9)
        mine.square().sum().backward()
        for key, p in m.named_parameters():
            assert torch.allclose(grads[k][key], p.grad, rtol=1e-7, atol=1e-9), key
    # the running statistics were updated per model as well
    states = models.unstack_state_dict(stacked.state_dict(), n)
    for k, m in enumerate(members):
        for key, value in m.state_dict().items():
            assert torch.allclose(states[k][key], value, rtol=1e-9, atol=1e-12), key
    # eval mode uses each model's running statistics
    stacked.eval()
    with torch.no_grad():
        out = stacked(x.flatten(1, 2)).view(4, n, c)
        for k, m in enumerate(members):
            assert torch.allclose(out[:, k], m.eval()(x[:, k]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", STACKABLE)
def test_stacked_state_round_trips_to_ordinary_state_dicts(name):
    states = [_seeded(name, 2, s).state_dict() for s in range(2)]
    back = models.unstack_state_dict(models.stack_state_dicts(states), 2)
    for k in range(2):
        assert list(back[k]) == list(states[k])
        assert all(torch.equal(back[k][key], states[k][key]) for key in states[k])
    single = models.stack_models([_seeded(name, 2, 0)])
    assert type(single) is type(_seeded(name, 2, 0))  # n = 1: the model itself


def test_models_that_mix_channels_are_not_stackable():
    assert not models.MODELS["densenet121"].stackable  # its dense blocks concatenate channels
    with pytest.raises(TypeError, match="cannot stack"):
        models.stack_models([nn.Sequential(nn.LayerNorm(4)) for _ in range(2)])
    with pytest.raises(ValueError, match="other state_dict keys"):
        models.stack_state_dicts([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    with pytest.raises(ValueError, match="not a multiple"):
        models.unstack_state_dict({"w": torch.zeros(5)}, 2)


def test_grouped_linear_is_independent_linears():
    lins = [nn.Linear(3, 2) for _ in range(4)]
    g = models.GroupedLinear(4, 3, 2)
    g.load_state_dict(models.stack_state_dicts([m.state_dict() for m in lins]))
    x = torch.randn(5, 4, 3)
    y = g(x.flatten(1)).view(5, 4, 2)
    for k, m in enumerate(lins):
        assert np.allclose(y[:, k].detach().numpy(), m(x[:, k]).detach().numpy(), atol=1e-6)
