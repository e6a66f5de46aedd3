"""prunecxr.compress.quantize: weight_quant's grid by hand, its error at 8 bits, its monotone levels."""

import numpy as np
import pytest
import torch

from prunecxr import compress, inference, models
from prunecxr.compress import quantize

pytestmark = pytest.mark.usefixtures("one_thread")

#: the stated tolerance: at 8 bits every probability of the small ResNet is within this of dense
PROB_ATOL_8_BITS = 0.01


def test_quantize_weight_by_hand():
    w = torch.tensor([[0.9, -0.3, 0.1], [0.0, 0.0, 0.0], [-2.0, 0.5, 1.0]])
    # 2 bits: q_max = 1, scale = max|w| per row; ternary {-s, 0, s}; 1.0 / 2 = 0.5 rounds to even: 0
    np.testing.assert_allclose(
        quantize.quantize_weight(w, 2), [[0.9, 0.0, 0.0], [0, 0, 0], [-2.0, 0.0, 0.0]]
    )
    # 3 bits: q_max = 3, row 0 scale 0.3: 0.9 -> 3, -0.3 -> -1, 0.1 -> round(1/3) = 0
    np.testing.assert_allclose(quantize.quantize_weight(w, 3)[0], [0.9, -0.3, 0.0], rtol=1e-6)
    # 8 bits: q_max = 127, error at most half a step per channel
    q8 = quantize.quantize_weight(w, 8)
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert torch.all((q8 - w).abs() <= step / 2 + 1e-7)
    assert quantize.quantize_weight(w, 32) is w
    for bad, match in ((1, "at least 2"), (4.5, "whole number"), (True, "must be a number")):
        with pytest.raises(ValueError, match=match):
            quantize.quantize_weight(w, bad)


def test_grid_has_2_qmax_plus_1_values_per_channel():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    for bits in (2, 3, 4, 5):
        q = quantize.quantize_weight(w, bits)
        for o in range(4):
            assert len(torch.unique(q[o])) <= 2**bits - 1


def _model_and_images(seed=0):
    torch.manual_seed(seed)
    model = models.create_model("small_resnet", 5).eval()
    images = torch.randint(0, 256, (32, 24, 24), dtype=torch.uint8)
    return model, images


def test_8_bits_within_the_stated_tolerance_of_dense():
    model, images = _model_and_images()
    dense = inference.predict(model, images, batch_size=16, device="cpu")
    q8 = compress.compress_model(model, 8, method="weight_quant")
    probs = inference.predict(q8, images, batch_size=16, device="cpu")
    assert np.abs(probs - dense).max() <= PROB_ATOL_8_BITS
    assert not np.array_equal(probs, dense)  # it did quantize
    same = compress.compress_model(model, 32, method="weight_quant")
    assert np.array_equal(inference.predict(same, images, batch_size=16, device="cpu"), dense)


def test_fewer_bits_move_the_weights_and_outputs_further():
    model, images = _model_and_images(1)
    dense_w = [m.weight.detach().clone() for _, m in quantize.quantized_layers(model)]
    dense_p = inference.predict(model, images, batch_size=16, device="cpu")
    quantizer = compress.create_compressor("weight_quant", model)
    errors, zeros = [], []
    for bits in (32, 8, 6, 5, 4, 3, 2):
        q = quantizer.compress(bits)
        w = [m.weight.detach() for _, m in quantize.quantized_layers(q)]
        errors.append(sum(float((a - b).pow(2).sum()) for a, b in zip(w, dense_w)))
        zeros.append(sum(int((x == 0).sum()) for x in w))
    assert errors == sorted(errors) and errors[0] == 0 and zeros == sorted(zeros)
    quantizer.restore()
    assert np.array_equal(inference.predict(model, images, batch_size=16, device="cpu"), dense_p)


def test_recovery_model_sees_quantized_weights_and_trains_the_float_ones():
    model, images = _model_and_images(2)
    quantizer = compress.create_compressor("weight_quant", model)
    deployed = inference.predict(quantizer.compress(4), images, batch_size=16, device="cpu")
    trainable, finish = quantizer.for_recovery(4)
    assert trainable is not model
    x = models.preprocess(images[:8])
    loss = trainable.eval()(x).sum()  # eval: BatchNorm statistics unchanged
    loss.backward()
    conv = quantize.quantized_layers(trainable)[0][1]
    assert conv.parametrizations.weight.original.grad is not None  # the straight-through gradient
    done = finish(trainable.eval())
    np.testing.assert_allclose(
        inference.predict(done, images, batch_size=16, device="cpu"), deployed, atol=1e-6
    )


# -- int8_ptq ---------------------------------------------------------------------------------
#: the stated tolerance of int8_ptq: every probability within this of the float model's
PROB_ATOL_INT8 = 0.02


def _calibration(n=200, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 24, 24), dtype=np.uint8)
    labels = (rng.random((n, 5)) < [0.5, 0.3, 0.1, 0.04, 0.02]).astype(np.uint8)
    return compress.CalibrationSet(images, labels, batch_size=16, n_images=64)


@pytest.mark.parametrize("method", ["int8_ptq", "int8_ptq_rare"])
def test_int8_outputs_are_close_to_the_float_models(method):
    model, images = _model_and_images(3)
    calibration = _calibration()
    dense = inference.predict(model, images, batch_size=16, device="cpu")
    q = compress.compress_model(model, 8, method=method, calibration=calibration)
    assert any(deploy_codes(m) for m in q.modules())  # real int8 layers
    probs = inference.predict(q, images, batch_size=16, device="cpu")
    assert np.abs(probs - dense).max() <= PROB_ATOL_INT8
    again = compress.compress_model(model, 8, method=method, calibration=calibration)
    assert np.array_equal(
        inference.predict(again, images, batch_size=16, device="cpu"), probs
    )  # deterministic


def deploy_codes(module):
    from prunecxr.compress import deploy

    w = getattr(module, "weight", None)
    return (
        callable(w)
        and not isinstance(w, torch.nn.Parameter)
        and deploy.parameter_counts(module)[0] > 0
    )


def test_rare_calibration_draws_rare_classes_more_often():
    calibration = _calibration(n=2000)
    rare = calibration.labels[calibration.indices(200, seed=0, draw="rare")].sum(axis=0)
    uniform = calibration.labels[calibration.indices(200, seed=0, draw="random")].sum(axis=0)
    assert rare[-1] > 2 * uniform[-1] and rare[-2] > 2 * uniform[-2]
    assert np.array_equal(
        calibration.indices(50, seed=4, draw="rare"), calibration.indices(50, seed=4, draw="rare")
    )
    with pytest.raises(ValueError, match="unknown calibration draw 'tail'"):
        calibration.indices(5, seed=0, draw="tail")


def test_int8_needs_calibration_images_and_8_bits():
    model, _ = _model_and_images()
    with pytest.raises(ValueError, match="needs training images"):
        compress.create_compressor("int8_ptq", model)
    with pytest.raises(ValueError, match="8 bits"):
        compress.create_compressor("int8_ptq", model, calibration=_calibration()).compress(4)
    assert compress.METHODS["int8_ptq"].levels([32, 8, 6, 4]) == [32, 8]
    with pytest.raises(ValueError, match=r"computes bits \[8.0\] only"):
        compress.METHODS["int8_ptq"].levels([32, 4])
