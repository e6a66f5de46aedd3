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
