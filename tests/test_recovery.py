"""prunecxr.compress.recovery: BatchNorm re-estimation (deterministic) and fine-tuning with the
compression kept, after every method of the registry."""

import copy

import numpy as np
import pytest
import torch

from prunecxr import compress, inference, models
from prunecxr.compress import quantize, recovery

pytestmark = pytest.mark.usefixtures("one_thread")

LEVEL = {"sparsity": 0.7, "bits": 4, "channel_fraction": 0.5}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 4).eval()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (96, 20, 20), dtype=np.uint8)
    labels = (rng.random((96, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(np.uint8)
    calibration = compress.CalibrationSet(images, labels, batch_size=16, n_images=32)
    return model, calibration, torch.from_numpy(images[:32])


def level_of(name):
    entry = compress.METHODS[name]
    return 8 if name.startswith("int8") else LEVEL[entry.level_name]


def recovered(name, setup, kind, **options):
    model, calibration, _ = setup
    entry = compress.METHODS[name]
    compressor = compress.create_compressor(
        name, copy.deepcopy(model), seed=3, calibration=calibration
    )
    return recovery.recovered_model(
        compressor,
        level_of(name),
        recovery.Recovery(kind, **options),
        level_name=entry.level_name,
        calibration=calibration,
        seed=3,
    )


@pytest.mark.parametrize("name", sorted(compress.METHODS))
def test_batchnorm_reestimation_is_deterministic_and_changes_only_batchnorm(name, setup):
    model, calibration, test = setup
    first = recovered(name, setup, "bn", batches=3)
    second = recovered(name, setup, "bn", batches=3)
    p1 = inference.predict(first, test, batch_size=16, device="cpu")
    assert np.array_equal(p1, inference.predict(second, test, batch_size=16, device="cpu"))
    plain = compress.compress_model(
        model, level_of(name), method=name, seed=3, calibration=calibration
    )
    assert not np.array_equal(p1, inference.predict(plain, test, batch_size=16, device="cpu"))
    if not name.startswith("int8"):  # float networks: the weights are those of the compression
        ours, theirs = dict(first.named_parameters()), dict(plain.named_parameters())
        assert ours.keys() == theirs.keys()
        for k, a in ours.items():
            if not k.startswith("bn") and ".bn" not in k and "downsample.1" not in k:
                assert torch.equal(a, theirs[k]), k


def test_batchnorm_statistics_are_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 1, bias=False), torch.nn.BatchNorm2d(2)
    ).eval()
    batches = [torch.randn(4, 3, 5, 5) for _ in range(3)]
    recovery.reestimate_batchnorm(model, batches)
    with torch.no_grad():
        means = [model[0](b).mean(dim=(0, 2, 3)) for b in batches]
    torch.testing.assert_close(model[1].running_mean, torch.stack(means).mean(0))
    assert model[1].momentum == 0.1 and not model.training


@pytest.mark.parametrize("name", ["global_l1", "weight_quant", "channel_l1", "int8_ptq"])
def test_finetuning_keeps_the_compression(name, setup):
    model, calibration, test = setup
    tuned = recovered(name, setup, "finetune", epochs=1, lr=1e-2)
    plain = compress.compress_model(
        model, level_of(name), method=name, seed=3, calibration=calibration
    )
    p_tuned = inference.predict(tuned, test, batch_size=16, device="cpu")
    assert not np.array_equal(p_tuned, inference.predict(plain, test, batch_size=16, device="cpu"))
    if name == "global_l1":
        for (_, a), (_, b) in zip(
            compress.prunable_parameters(tuned), compress.prunable_parameters(plain)
        ):
            assert torch.equal(a == 0, b == 0)  # the same weights pruned, still 0
    elif name == "weight_quant":
        for _, m in quantize.quantized_layers(tuned):
            assert torch.equal(
                quantize.quantize_weight(m.weight.detach(), 4), m.weight.detach()
            )  # on the grid
    elif name == "channel_l1":
        assert sum(p.numel() for p in tuned.parameters()) == sum(
            p.numel() for p in plain.parameters()
        )
    else:
        from prunecxr.compress import deploy

        assert deploy.serialized_bytes(tuned) < 0.6 * deploy.serialized_bytes(model)  # still int8


def test_dense_level_and_none_are_not_recovered(setup):
    model, calibration, test = setup
    compressor = compress.create_compressor(
        "global_l1", copy.deepcopy(model), calibration=calibration
    )
    dense = inference.predict(model, test, batch_size=16, device="cpu")
    out = recovery.recovered_model(
        compressor,
        0.0,
        recovery.Recovery("bn"),
        level_name="sparsity",
        calibration=calibration,
        seed=0,
    )
    assert np.array_equal(inference.predict(out, test, batch_size=16, device="cpu"), dense)
    with pytest.raises(ValueError, match="unknown recover 'bnx'"):
        recovery.Recovery("bnx")
    with pytest.raises(ValueError, match="recover_batches must be a positive int"):
        recovery.Recovery("bn", batches=0)
    with pytest.raises(ValueError, match="needs training images"):
        recovery.recovered_model(
            compressor,
            0.5,
            recovery.Recovery("bn"),
            level_name="sparsity",
            calibration=None,
            seed=0,
        )


def test_sweep_records_the_recovery_and_recomputes_when_it_changes():
    from prunecxr import artifacts, paths
    from test_compress import Loader, make_run

    rp, images = make_run(seeds=(0, 1))
    _, classes, ids = artifacts.read_test_labels(rp.name)
    rng = np.random.default_rng(0)
    calibration = compress.CalibrationSet(
        rng.integers(0, 256, (40, 16, 16), dtype=np.uint8),
        (rng.random((40, 4)) < 0.3).astype(np.uint8),
        batch_size=8,
        n_images=16,
    )

    def sweep(kind, loader):
        return compress.sweep_method(
            rp.name,
            "weight_quant",
            seeds=[0, 1],
            levels=[32, 8, 2],
            load_model=loader,
            images=images,
            classes=classes,
            image_ids=ids,
            device="cpu",
            batch_size=8,
            threads=1,
            progress=False,
            calibration=calibration,
            recovery=recovery.Recovery(kind, batches=2),
        )

    sweep("none", Loader(rp))
    plain, meta = artifacts.read_store(rp.name, "weight_quant", mmap=False)
    assert (meta["level_name"], meta["levels"], meta["recover"]) == (
        "bits",
        [32.0, 8.0, 2.0],
        "none",
    )
    loader = Loader(rp)
    sweep("bn", loader)
    assert loader.calls == [0, 1]  # another recovery: recomputed
    bn, meta = artifacts.read_store(rp.name, "weight_quant", mmap=False)
    assert meta["recover"] == "bn"
    record = artifacts.read_json(
        paths.run_paths(rp.name).prune_work("weight_quant") / "seed-1.json"
    )
    assert record["recover"] == {"kind": "bn", "batches": 2}
    assert recovery.Recovery("none", batches=5).record() == {"kind": "none"}
    assert recovery.Recovery("finetune", epochs=2).record() == {
        "kind": "finetune",
        "epochs": 2,
        "lr": 1e-4,
    }
    np.testing.assert_array_equal(bn[:, 0], plain[:, 0])  # the dense level is not recovered
    assert not np.array_equal(bn[:, 2], plain[:, 2])
    loader = Loader(rp)
    sweep("bn", loader)
    assert loader.calls == []  # up to date
