"""prunecxr.compress.structured: channel_l1 (Torch-Pruning) makes models physically smaller."""

import numpy as np
import pytest
import torch
import torchvision

from prunecxr import compress, inference, models
from prunecxr.compress import structured

pytestmark = pytest.mark.usefixtures("one_thread")

FRACTIONS = [0.0, 0.1, 0.3, 0.5, 0.7]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def small(seed=0, classes=5):
    torch.manual_seed(seed)
    return models.create_model("small_resnet", classes).eval()


@pytest.mark.parametrize("method", ["channel_l1", "channel_l1_global"])
def test_fraction_0_is_the_dense_model_and_larger_fractions_are_smaller(method):
    model = small()
    images = torch.randint(0, 256, (16, 24, 24), dtype=torch.uint8)
    dense = inference.predict(model, images, batch_size=8, device="cpu")
    pruner = compress.create_compressor(method, model)
    zero = pruner.compress(0.0)
    assert zero is not model and n_params(zero) == n_params(model)
    assert np.array_equal(inference.predict(zero, images, batch_size=8, device="cpu"), dense)
    sizes = [n_params(pruner.compress(f)) for f in FRACTIONS]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), (
        sizes
    )  # physically smaller, level after level
    out = pruner.compress(0.5)
    assert out(models.preprocess(images[:2])).shape == (2, 5)  # the classes are kept
    assert np.array_equal(
        inference.predict(model, images, batch_size=8, device="cpu"), dense
    )  # untouched


def test_uniform_removes_the_same_fraction_of_every_layer():
    model = small(1)
    pruned = structured.prune_channels(model, 0.5)
    before = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    after = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert after == [b // 2 for b in before]
    assert pruned.fc.out_features == model.fc.out_features


def test_residual_connections_stay_consistent_on_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    pruned = structured.prune_channels(model, 0.3, global_pruning=True)
    with torch.no_grad():
        assert pruned(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    assert n_params(pruned) < 0.8 * n_params(model)


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="below 1"):
        structured.prune_channels(small(), 1.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        structured.prune_channels(small(), -0.1)
