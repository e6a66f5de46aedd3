"""Every method of the registry, the same checks (a new entry is tested for free):
the dense level is the dense model, the input model is left alone, levels are monotone in size
and non-zeros, and the recovery model finishes into the deployed one."""

import copy

import numpy as np
import pytest
import torch

from prunecxr import compress, inference, levels, models
from prunecxr.compress import deploy

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = sorted(compress.METHODS)
#: levels each axis is tested at (dense first)
LEVELS = {
    "sparsity": [0.0, 0.5, 0.9],
    "bits": [32, 8, 6, 4, 2],
    "channel_fraction": [0.0, 0.3, 0.6],
}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 5).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 24, 24), dtype=np.uint8)
    labels = (rng.random((120, 5)) < [0.5, 0.3, 0.1, 0.05, 0.03]).astype(np.uint8)
    calibration = compress.CalibrationSet(images, labels, batch_size=16, n_images=32)
    test = torch.from_numpy(images[:40])
    return model, calibration, test


def method_levels(name):
    return compress.METHODS[name].levels(LEVELS[compress.METHODS[name].level_name])


@pytest.mark.parametrize("name", METHODS)
def test_registry_entry_is_complete(name):
    entry = compress.METHODS[name]
    assert entry.name == name and entry.description
    assert entry.level_name in levels.AXES
    found = method_levels(name)
    assert entry.axis.is_dense(found[0]) and len(found) >= 2


@pytest.mark.parametrize("name", METHODS)
def test_dense_level_is_the_dense_model_bit_for_bit(name, setup):
    model, calibration, test = setup
    dense = inference.predict(model, test, batch_size=20, device="cpu")
    compressor = compress.create_compressor(
        name, copy.deepcopy(model), seed=0, calibration=calibration
    )
    for level in method_levels(name)[1:]:
        compressor.compress(level)
    out = compressor.compress(method_levels(name)[0])  # back to the dense level after the others
    assert np.array_equal(inference.predict(out, test, batch_size=20, device="cpu"), dense)


@pytest.mark.parametrize("name", METHODS)
def test_compress_model_leaves_its_input_alone(name, setup):
    model, calibration, test = setup
    before = copy.deepcopy(model.state_dict())
    out = compress.compress_model(
        model, method_levels(name)[-1], method=name, calibration=calibration
    )
    assert out is not model
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", METHODS)
def test_levels_are_monotone_in_size_and_nonzeros(name, setup):
    model, calibration, test = setup
    compressor = compress.create_compressor(
        name, copy.deepcopy(model), seed=0, calibration=calibration
    )
    sizes, nonzeros, probs = [], [], []
    for level in method_levels(name):
        out = compressor.compress(level)
        sizes.append(deploy.serialized_bytes(out))
        nonzeros.append(deploy.parameter_counts(out)[1])
        probs.append(inference.predict(out, test, batch_size=20, device="cpu"))
    assert nonzeros == sorted(nonzeros, reverse=True), nonzeros
    assert sizes == sorted(sizes, reverse=True), sizes
    assert sizes[-1] < sizes[0] and nonzeros[-1] <= nonzeros[0]
    assert all(np.isfinite(p).all() and p.shape == probs[0].shape for p in probs)


@pytest.mark.parametrize("name", METHODS)
def test_recovery_model_finishes_into_the_deployed_model(name, setup):
    """Untrained, the model that recovery would train is the deployed model (int8: the
    quantization-aware copy converts to int8 within rounding of the calibrated ranges)."""
    model, calibration, test = setup
    compressor = compress.create_compressor(
        name, copy.deepcopy(model), seed=0, calibration=calibration
    )
    level = method_levels(name)[-1]
    deployed = inference.predict(compressor.compress(level), test, batch_size=20, device="cpu")
    trainable, finish = compressor.for_recovery(level)
    assert trainable is not model
    out = inference.predict(finish(trainable), test, batch_size=20, device="cpu")
    atol = 0.03 if name.startswith("int8") else 1e-6
    np.testing.assert_allclose(out, deployed, atol=atol)
