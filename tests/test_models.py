"""The model registry and the shared input transform."""

import pytest
import torch

from prunecxr import models

ALL = sorted(models.MODELS)
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
    xs = models.preprocess(img, channels_last=True)
    assert xs.is_contiguous(memory_format=torch.channels_last) and torch.equal(xs, x)
    with pytest.raises(ValueError, match="uint8"):
        models.preprocess(img.float())
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        models.preprocess(torch.zeros(2, 3, 5, 5, dtype=torch.uint8))


# -- any architecture: torchvision/<name>, timm/<name>, module:factory ----------------------
OUTSIDE = [
    "torchvision/mobilenet_v3_small",
    "timm/vit_tiny_patch16_224",
    "timm/convnext_atto",
    "models_factory:tiny",
]


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "models_factory.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))\n"
        "def not_a_model(num_classes):\n"
        "    return 'model'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("name", OUTSIDE)
def test_models_from_outside_the_registry(name, factory_module):
    if name.startswith("timm/"):
        pytest.importorskip("timm")
    a, b = _seeded(name, 3, 0).eval(), _seeded(name, 3, 0).eval()
    assert models.check_model(name) == name
    x = models.preprocess(
        torch.randint(0, 256, (2, 32, 32), dtype=torch.uint8)
    )  # the run's size, not 224
    with torch.no_grad():
        assert a(x).shape == (2, 3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_models_from_outside_are_checked(factory_module, tmp_path, monkeypatch):
    for name, match in [
        ("torchvision/not_a_net", "torchvision has no classification model 'not_a_net'"),
        ("nowhere_module:make", "cannot import 'make' from 'nowhere_module'"),
        ("resnet5O", r"unknown model 'resnet5O'; choose one of .*'timm/<name>'"),
    ]:
        with pytest.raises(ValueError, match=match):
            models.check_model(name)
    with pytest.raises(ValueError, match="returned a str, not a torch.nn.Module"):
        models.create_model("models_factory:not_a_model", 3)
    with pytest.raises(ValueError, match="loads its own weights; set pretrained = false"):
        models.create_model("models_factory:tiny", 3, pretrained=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(models.PretrainedWeightsMissing, match="never downloads"):
        models.create_model("torchvision/mobilenet_v3_small", 3, pretrained=True)
    if pytest.importorskip("timm"):
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        with pytest.raises(models.PretrainedWeightsMissing, match="timm.create_model"):
            models.create_model("timm/convnext_atto", 3, pretrained=True)
