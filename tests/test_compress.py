"""Stage 03 (prunecxr.compress): pruning methods, the resumable sweep, its scores and the importer.

Fig. 1's statistics are tested in test_overall.py."""

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune as tprune

from prunecxr import artifacts, compress, config, data, inference, models, paths, runtime, train
from prunecxr.analysis import overall
from prunecxr.compress import importer
from prunecxr.metrics import MissingPositivesWarning

SPARSITIES = [0.0, 0.05, 0.25, 0.5, 0.65, 0.9, 0.95, 1.0]
#: the registry's pruning methods (level axis: sparsity); every method is in test_methods.py
PRUNING = sorted(m for m, entry in compress.METHODS.items() if entry.level_name == "sparsity")
CLASSES = ["Effusion", "No Finding", "Hernia", "Pneumothorax"]


def tied_resnet(seed=0, step=0.05):
    """A small ResNet whose weights are rounded to multiples of ``step``: many equal |w|,
    of both signs, and ties at the threshold of every sparsity."""
    torch.manual_seed(seed)
    model = models.create_model("small_resnet", 3)
    with torch.no_grad():
        for _, p in compress.prunable_parameters(model):
            p.copy_(torch.round(p / step) * step)
    return model


def torch_global_masks(model, sparsity):
    """Masks (True = pruned) of torch.nn.utils.compress.global_unstructured with L1Unstructured."""
    ref = copy.deepcopy(model)
    modules = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(
        [(m, "weight") for m in modules], pruning_method=tprune.L1Unstructured, amount=sparsity
    )
    return [m.weight_mask == 0 for m in modules]


# -- counting ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 10, 19, 1000, 25_557_032])
@pytest.mark.parametrize("sparsity", SPARSITIES + [0.15, 0.35, 0.85])
def test_n_to_prune_is_torchs_count(n, sparsity):
    assert compress.n_to_prune(sparsity, n) == tprune._compute_nparams_toprune(sparsity, n)


def test_n_to_prune_rounds_half_to_even():
    assert compress.n_to_prune(0.5, 3) == 2  # round(1.5)
    assert compress.n_to_prune(0.25, 10) == 2  # round(2.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.5", None])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        compress.check_sparsity(bad)


def test_sparsities_must_increase():
    with pytest.raises(ValueError, match=r"sparsities\[2\] = 0.1"):
        compress.check_sparsities([0.0, 0.5, 0.1])


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="unknown method 'magnitude'.*global_l1"):
        compress.create_pruner("magnitude", tied_resnet())


def test_pruned_set_is_every_conv_and_linear_weight():
    model = torchvision.models.resnet18(num_classes=5)
    names = [name for name, _ in compress.prunable_parameters(model)]
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert "layer2.0.downsample.0.weight" in names
    assert not any("bn" in n or n.endswith("bias") for n in names)
    assert len(names) == 21  # 20 convolutions (incl. 3 shortcuts) + the classifier


def test_layer_quotas_hand_computed():
    # k·n_l/n = 1.5, 1.5, 2.0 → floors 1, 1, 2; one left for the first largest remainder
    assert compress.layer_quotas(5, [3, 3, 4]).tolist() == [2, 1, 2]
    assert compress.layer_quotas(0, [3, 3, 4]).tolist() == [0, 0, 0]
    assert compress.layer_quotas(10, [3, 3, 4]).tolist() == [3, 3, 4]
    assert compress.layer_quotas(7, [1, 9]).tolist() == [1, 6]  # 0.7→0 (+1: rem 7), 6.3→6


# -- masks equal torch.nn.utils.prune --------------------------------------------------------
def test_global_l1_masks_equal_torch_with_tied_magnitudes():
    model = tied_resnet()
    pruner = compress.create_pruner("global_l1", model)
    for sparsity in SPARSITIES:
        ours = pruner.masks(sparsity)
        theirs = torch_global_masks(model, sparsity)
        assert len(ours) == len(theirs)
        for (name, mask), ref in zip(ours.items(), theirs):
            assert torch.equal(mask, ref), (sparsity, name)


def test_tied_model_really_has_ties_at_the_thresholds():
    """The test above must exercise torch's tie-breaking, not just the strict-threshold path."""
    pruner = compress.create_pruner("global_l1", tied_resnet())
    tied = [s for s in SPARSITIES if pruner.plan.select.tied(compress.n_to_prune(s, pruner.n))]
    assert len(tied) >= 4


@pytest.mark.parametrize("sparsity", [0.05, 0.5, 0.95])
def test_layerwise_l1_masks_equal_torch_per_layer(sparsity):
    model = tied_resnet(seed=3)
    pruner = compress.create_pruner("layerwise_l1", model)
    quotas = compress.layer_quotas(compress.n_to_prune(sparsity, pruner.n), pruner.sizes)
    ref = copy.deepcopy(model)
    modules = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module, quota in zip(modules, quotas):
        tprune.l1_unstructured(module, "weight", amount=int(quota))
    for (name, mask), module in zip(pruner.masks(sparsity).items(), modules):
        assert torch.equal(mask, module.weight_mask == 0), name
    assert any(select.tied(int(q)) for select, q in zip(pruner.plan.layers, quotas))


# -- every method: exact sparsity, only the pruned set touched -------------------------------
@pytest.mark.parametrize("method", PRUNING)
def test_every_method_prunes_exactly_the_requested_fraction(method):
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 3)
    dense = copy.deepcopy(model.state_dict())
    pruned_names = {name for name, _ in compress.prunable_parameters(model)}
    pruner = compress.create_pruner(method, model, seed=7)
    for sparsity in SPARSITIES + [0.15, 0.35]:
        n_zeroed = pruner.apply(sparsity)
        k = round(sparsity * pruner.n)
        assert n_zeroed == k, sparsity
        assert compress.pruned_set_sparsity(model) == k / pruner.n, sparsity  # dense has no zeros
        assert abs(compress.pruned_set_sparsity(model) - sparsity) <= 0.5 / pruner.n
        for name, value in model.state_dict().items():
            if name in pruned_names:
                keep = value != 0
                assert torch.equal(value[keep], dense[name][keep]), (sparsity, name)
            else:  # biases, BatchNorm and its running statistics are never touched
                assert torch.equal(value, dense[name]), (sparsity, name)


@pytest.mark.parametrize("method", PRUNING)
def test_apply_starts_from_the_dense_weights_every_time(method):
    model = tied_resnet(seed=5)
    pruner = compress.create_pruner(method, model, seed=2)
    pruner.apply(0.9)
    pruner.apply(0.25)
    fresh = compress.prune_model(tied_resnet(seed=5), 0.25, method=method, seed=2)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    pruner.restore()
    for a, b in zip(model.state_dict().values(), tied_resnet(seed=5).state_dict().values()):
        assert torch.equal(a, b)


def test_prune_model_leaves_its_input_alone():
    model = tied_resnet()
    before = copy.deepcopy(model.state_dict())
    pruned = compress.prune_model(model, 0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert compress.pruned_set_sparsity(pruned) >= 0.5


def test_global_l1_masks_are_nested_and_thresholds_increase():
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 3)
    pruner = compress.create_pruner("global_l1", model)
    masks = [pruner.mask(s) for s in SPARSITIES]
    for smaller, larger in zip(masks, masks[1:]):
        assert not (smaller & ~larger).any()
    thresholds = compress.magnitude_thresholds(model, SPARSITIES)
    assert thresholds[0] == -np.inf and np.all(np.diff(thresholds) > 0)
    mags = np.abs(np.concatenate([d.numpy().ravel() for d in pruner.dense]))
    for s, t, m in zip(SPARSITIES[1:], thresholds[1:], masks[1:]):
        assert np.array_equal(m, mags <= t), s


def test_random_pruning_depends_on_seed_and_sparsity_only():
    model = tied_resnet()
    a = compress.create_pruner("random", model, seed=4).mask(0.5)
    assert np.array_equal(
        a, compress.create_pruner("random", tied_resnet(seed=9), seed=4).mask(0.5)
    )
    assert not np.array_equal(a, compress.create_pruner("random", model, seed=5).mask(0.5))
    assert not np.array_equal(
        a, compress.create_pruner("random", model, seed=4).mask(0.55)[: a.size]
    )
    assert compress.random_mask_seed(4, 0.5) != compress.random_mask_seed(5, 0.5)


def test_pruned_magnitudes_are_the_pruned_set():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=True), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3)
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([-0.5, 0.25]).view(2, 1, 1, 1))
        model[3].weight.copy_(torch.arange(6.0).view(3, 2) - 3)
        model[0].bias.fill_(1e-6)  # biases and BatchNorm are not in the pruned set
    mags = compress.pruned_magnitudes(model)
    assert mags.dtype == np.float32
    assert mags.tolist() == [0.5, 0.25, 3, 2, 1, 0, 1, 2]


def test_nan_weights_are_named():
    model = tied_resnet()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'fc.weight' holds NaN"):
        compress.create_pruner("global_l1", model)


# -- metrics ---------------------------------------------------------------------------------
def test_class_without_positives_gets_nan_and_is_left_out_of_means():
    rng = np.random.default_rng(1)
    n = 50
    y = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    y[:, 1] = 0  # no positive test image
    probs = rng.random((2, 2, n, 3)).astype(np.float32)
    with pytest.warns(MissingPositivesWarning, match=r"\['B'\]"):
        metrics = compress.compute_metrics(
            probs, y, seeds=[0, 1], sparsities=[0.0, 0.5], classes=["A", "B", "C"]
        )
    assert list(metrics.columns) == list(artifacts.METRICS_COLUMNS)
    b = metrics[metrics["class"] == "B"]
    assert b["ap"].isna().all() and b["auroc"].isna().all() and (b["n_pos"] == 0).all()
    assert metrics.loc[metrics["class"] != "B", "ap"].notna().all()
    with pytest.warns(MissingPositivesWarning, match="left out"):
        per_seed = overall.seed_mean_ap(metrics)
    expected = (
        metrics[metrics["class"] != "B"].groupby(["seed", "sparsity"])["ap"].mean().to_numpy()
    )
    np.testing.assert_allclose(per_seed["mean_ap"].to_numpy(), expected)


def test_each_missing_positives_warning_is_shown_once_for_all_methods():
    rng = np.random.default_rng(0)
    y = (rng.random((20, 3)) < 0.4).astype(np.int8)
    y[:, 2] = 0
    labels = pd.DataFrame(
        {"image_id": [f"i{k}" for k in range(20)], "patient_id": "p", "split": "test"}
    )
    labels[["A", "B", "C"]] = y
    artifacts.write_labels("m", labels)
    for method in ("random", "global_l1"):
        artifacts.write_store(
            "m",
            method,
            seeds=[0],
            sparsities=[0.0, 0.5],
            classes=["A", "B", "C"],
            n_test=20,
            blocks=[rng.random((2, 20, 3)).astype(np.float32)],
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = compress.write_all_metrics("m", ["random", "global_l1"])
    assert list(metrics) == ["global_l1", "random"]
    assert [str(w.message) for w in caught if w.category is MissingPositivesWarning] == [
        "classes without a positive test image: ['C']; their AP is NaN and they are left out of class means"
    ]
    assert artifacts.read_metrics("m", "random").equals(metrics["random"])


# -- the sweep: a run with checkpoints ------------------------------------------------------
N_TEST = 24
SWEEP_SPARSITIES = [0.0, 0.5, 0.9]


def make_run(name="r", seeds=(0, 1, 2), n_test=N_TEST):
    """labels.parquet (train + test rows), checkpoints of small ResNets, test images."""
    rp = paths.run_paths(name)
    rng = np.random.default_rng(0)
    n = n_test + 6
    labels = pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "split": ["train"] * 6 + ["test"] * n_test,
        }
    )
    for j, c in enumerate(CLASSES):
        labels[c] = (rng.random(n) < 0.3 + 0.1 * j).astype(np.int8)
    artifacts.write_parquet(rp.labels, labels)
    artifacts.write_json(
        rp.run_json, {"run": name, "parameters": {"model": "small_resnet"}, "stages": {}}
    )
    artifacts.write_json(
        rp.train_config,
        {"config": {"model": "small_resnet"}, "num_classes": len(CLASSES), "image_shape": [16, 16]},
    )
    for seed in seeds:
        torch.manual_seed(seed)
        model = models.create_model("small_resnet", len(CLASSES))
        rp.seed_dir(seed).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), rp.checkpoint(seed))
    images = torch.from_numpy(rng.integers(0, 256, (n_test, 16, 16), dtype=np.uint8))
    return rp, images


class Loader:
    """load_model for sweep_method: inference.load_model of a seed, counting the calls."""

    def __init__(self, rp):
        self.rp, self.calls = rp, []

    def __call__(self, seed):
        self.calls.append(seed)
        return inference.load_model(self.rp.name, seed)


def sweep(rp, images, loader, method="global_l1", seeds=(0, 1, 2), threads=0):
    _, classes, ids = artifacts.read_test_labels(rp.name)
    return compress.sweep_method(
        rp.name,
        method,
        seeds=list(seeds),
        sparsities=SWEEP_SPARSITIES,
        load_model=loader,
        images=images,
        classes=classes,
        image_ids=ids,
        device="cpu",
        batch_size=10,
        threads=threads,
        progress=False,
    )


def test_sweep_inputs_are_preprocessed_once_where_they_fit():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (23, 16, 16), dtype=torch.uint8)
    model = models.create_model("small_resnet", 4).eval()
    x = inference.preprocessed(images)
    assert x.shape == (23, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, models.preprocess(images))
    # the model sees the same numbers either way
    want = inference.predict(model, images, batch_size=5, device="cpu")
    assert np.array_equal(inference.predict(model, x, batch_size=5, device="cpu"), want)
    assert (
        inference.preprocessed(images, budget_bytes=x.numel() * 4 - 1) is images
    )  # too big: per batch
    with pytest.raises(
        ValueError, match=r"float32 \[N, 3, H, W\], got torch.float32 \(23, 1, 16, 16\)"
    ):
        inference.predict(model, x[:, :1], batch_size=5, device="cpu")


@pytest.mark.parametrize("threads", [1, 2])
def test_sweep_dense_probabilities_are_inference_predict_bit_for_bit(threads):
    """Sparsity 0 of the sweep is the dense model as notebook 02 evaluates it, bit for bit
    (same thread count, same batch size), whether the images are preprocessed once or not."""
    rp, images = make_run()
    sweep(rp, inference.preprocessed(images), Loader(rp), method="random", threads=threads)
    probs, meta = artifacts.read_store(rp.name, "random", mmap=False)
    with runtime.num_threads(threads):
        for i, seed in enumerate(meta["seeds"]):
            dense = inference.predict(
                inference.load_model(rp.name, seed), images.numpy(), batch_size=10, device="cpu"
            )
            assert np.array_equal(probs[i, 0], dense), seed


def test_sweep_records_its_thread_count_device_and_batch_size():
    rp, images = make_run(seeds=(0,))
    before = torch.get_num_threads()
    sweep(rp, images, Loader(rp), seeds=(0,), threads=1)
    assert torch.get_num_threads() == before  # restored
    record = artifacts.read_json(rp.prune_work("global_l1") / "seed-0.json")
    assert (record["device"], record["threads"], record["batch_size"]) == ("cpu", 1, 10)
    loader = Loader(rp)
    sweep(rp, images, loader, seeds=(0,), threads=2)  # another thread count: other bits, recomputed
    assert loader.calls == [0]
    assert artifacts.read_json(rp.prune_work("global_l1") / "seed-0.json")["threads"] == 2
    sweep(rp, images, Loader(rp), seeds=(0,), threads=0)  # 0: every usable core
    record = artifacts.read_json(rp.prune_work("global_l1") / "seed-0.json")
    assert record["threads"] == runtime.usable_cores()
    with pytest.raises(ValueError, match="threads must be an int >= 0"):
        sweep(rp, images, Loader(rp), seeds=(0,), threads=-1)


def test_sweep_writes_the_store_of_artifacts_md():
    rp, images = make_run()
    loader = Loader(rp)
    path = sweep(rp, images, loader)
    assert path == rp.probs("global_l1")
    meta = json.loads(rp.prune_meta("global_l1").read_text())
    assert meta == {
        "method": "global_l1",
        "seeds": [0, 1, 2],
        "sparsities": SWEEP_SPARSITIES,
        "level_name": "sparsity",
        "level_unit": "fraction of weights set to 0",
        "levels": SWEEP_SPARSITIES,
        "recover": "none",
        "classes": CLASSES,
    }
    probs = np.load(path, allow_pickle=False)
    assert probs.shape == (3, 3, N_TEST, len(CLASSES)) and probs.dtype == np.float32
    model = loader(1)
    expected = compress.prune_model(model, 0.5).eval()
    with torch.no_grad():
        ref = torch.sigmoid(expected(models.preprocess(images))).numpy()
    np.testing.assert_allclose(probs[1, 1], ref, rtol=1e-5, atol=1e-6)
    assert not list(rp.prune_work("global_l1").glob("*.npy"))
    loaded, meta2 = artifacts.read_store(rp.name, "global_l1")
    assert meta2 == meta and np.array_equal(loaded, probs)
    metrics = compress.write_method_metrics(rp.name, "global_l1")
    assert len(metrics) == 3 * 3 * len(CLASSES)
    assert pd.read_parquet(rp.metrics("global_l1")).equals(metrics)


def test_finished_sweep_is_not_recomputed_and_a_new_checkpoint_is():
    rp, images = make_run()
    sweep(rp, images, Loader(rp))
    stamp = rp.probs("global_l1").stat().st_mtime_ns
    loader = Loader(rp)
    sweep(rp, images, loader)
    assert loader.calls == [] and rp.probs("global_l1").stat().st_mtime_ns == stamp
    torch.manual_seed(99)  # seed 1 is retrained
    torch.save(models.create_model("small_resnet", len(CLASSES)).state_dict(), rp.checkpoint(1))
    loader = Loader(rp)
    sweep(rp, images, loader)
    assert loader.calls == [1]
    loader = Loader(rp)
    sweep(rp, images, loader, seeds=(0, 1))  # fewer seeds: reused, not recomputed
    assert loader.calls == []
    assert artifacts.read_store(rp.name, "global_l1")[1]["seeds"] == [0, 1]


KILLED_SWEEP = textwrap.dedent(
    """
    import os, signal
    import numpy as np, torch
    from prunecxr import artifacts, inference
    from prunecxr.compress import sweep

    images = torch.from_numpy(np.load({images!r}))
    _, classes, ids = artifacts.read_test_labels("r")
    real, calls = inference.predict, []

    def predict_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == {kill_at}:  # inside seed 1
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    inference.predict = predict_then_die  # the sweep calls inference.predict
    sweep.sweep_method(
        "r", "global_l1", seeds=[0, 1, 2], sparsities={sparsities!r}, load_model=inference.model_loader("r", "cpu"),
        images=images, classes=classes, image_ids=ids, device="cpu", batch_size=10, progress=False,
    )
    """
)


def test_sweep_resumes_after_being_killed(prunecxr_home, tmp_path):
    rp, images = make_run()
    np.save(tmp_path / "images.npy", images.numpy())
    script = KILLED_SWEEP.format(
        images=str(tmp_path / "images.npy"),
        sparsities=SWEEP_SPARSITIES,
        kill_at=len(SWEEP_SPARSITIES) + 2,
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=os.environ.copy(), capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    work = rp.prune_work("global_l1")
    assert (work / "seed-0.npy").exists() and (work / "seed-0.json").exists()
    assert not (work / "seed-1.npy").exists()
    assert not rp.probs("global_l1").exists() and not rp.prune_meta("global_l1").exists()
    (work / ".seed-1.npy.abc.tmp").write_bytes(b"half")  # what a kill inside a write leaves

    loader = Loader(rp)
    sweep(rp, images, loader)
    assert loader.calls == [1, 2]  # seed 0 was finished and is not recomputed
    assert not list(work.glob(".*.tmp"))
    resumed, _ = artifacts.read_store(rp.name, "global_l1", mmap=False)

    reference, ref_images = make_run("ref")
    sweep(reference, ref_images, Loader(reference))
    np.testing.assert_array_equal(resumed, artifacts.read_store("ref", "global_l1", mmap=False)[0])


def test_run_sweep_refuses_sparsities_without_the_dense_model():
    make_run()
    with pytest.raises(ValueError, match="start with 0.0"):
        compress.run_sweep("r", methods=["global_l1"], sparsities=[0.5, 0.9])


# -- importing the authors' released predictions ---------------------------------------------
def write_release(
    folder,
    *,
    seeds=(0, 1),
    sparsities=(0.0, 0.05, 0.5),
    n=N_TEST,
    classes=CLASSES,
    labels=None,
    dataset="nih-cxr-lt",
):
    """Pickles in the authors' format: prune-0 for the dense model, else the float as printed."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if labels is None:
        labels = (rng.random((n, len(classes))) < 0.3).astype(np.uint8)
    label_text = ["|".join(c for c, v in zip(classes, row) if v) for row in labels]
    truth = {}
    for s in seeds:
        for r in sparsities:
            p = rng.random((n, len(classes))).astype(np.float32)
            frame = pd.DataFrame(p, columns=list(classes))
            frame["label"] = label_text
            name = f"{dataset}_resnet50_seed-{s}_prune-{0 if r == 0 else r}.pkl"
            frame.to_pickle(folder / name)
            truth[(s, r)] = p
    frame.to_pickle(
        folder / f"{dataset}_resnet50_seed-0_prune-0_val.pkl"
    )  # ignored, as in the release
    return truth, labels


def test_release_file_names_are_the_authors():
    assert (
        importer.release_file_name("nih-cxr-lt", 3, 0.0) == "nih-cxr-lt_resnet50_seed-3_prune-0.pkl"
    )
    assert (
        importer.release_file_name("nih-cxr-lt", 3, 0.05)
        == "nih-cxr-lt_resnet50_seed-3_prune-0.05.pkl"
    )
    authors = np.array(range(0, 100, 5)) / 100  # the authors' sparsity_ratios
    names = {f"x_resnet50_seed-0_prune-{r}.pkl" for r in authors[1:]} | {
        "x_resnet50_seed-0_prune-0.pkl"
    }
    assert names == {importer.release_file_name("x", 0, r) for r in authors}


def test_import_refuses_to_unpickle_without_opt_in(tmp_path):
    write_release(tmp_path / "rel")
    sentinel = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    import pickle

    with open(tmp_path / "rel" / "nih-cxr-lt_resnet50_seed-0_prune-0.pkl", "wb") as fh:
        pickle.dump(Payload(), fh)
    with pytest.raises(
        importer.PickleOptInRequired, match="Unpickling executes.*allow_pickle=True"
    ):
        importer.import_predictions("r", tmp_path / "rel")
    with pytest.raises(importer.PickleOptInRequired):
        importer.import_predictions("r", tmp_path / "rel", allow_pickle="yes")
    assert not sentinel.exists()
    assert not paths.run_paths("r").probs("global_l1").exists()


def test_import_into_a_run_without_labels(tmp_path):
    truth, labels = write_release(tmp_path / "rel")
    path = importer.import_predictions("imp", tmp_path / "rel", allow_pickle=True, progress=False)
    probs, meta = artifacts.read_store("imp", "global_l1")
    assert meta == {
        "method": "global_l1",
        "seeds": [0, 1],
        "sparsities": [0.0, 0.05, 0.5],
        "classes": CLASSES,
        "level_name": "sparsity",
        "level_unit": "fraction of weights set to 0",
        "levels": [0.0, 0.05, 0.5],
        "recover": "none",
    }
    assert path == paths.run_paths("imp").probs("global_l1")
    for (s, r), p in truth.items():
        np.testing.assert_array_equal(probs[meta["seeds"].index(s), meta["sparsities"].index(r)], p)
    y, classes, ids = artifacts.read_test_labels("imp")
    assert classes == CLASSES and np.array_equal(y, labels) and len(set(ids)) == N_TEST
    frame = pd.read_parquet(paths.run_paths("imp").labels)
    assert list(frame.columns[:3]) == ["image_id", "patient_id", "split"]
    assert (frame[CLASSES].dtypes == np.int8).all()
    record = config.run_data("imp")  # the run's data is recorded: the release's real test split
    assert (record["dataset"], record["synthetic"], record["source"]) == (
        "nih-cxr-lt",
        False,
        "import",
    )
    assert record["classes"] == CLASSES and record["n_images"] == {"test": N_TEST}
    assert config.run_dataset("imp") == "nih-cxr-lt" and not config.is_synthetic("imp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = compress.write_method_metrics("imp", "global_l1")
    assert metrics["ap"].notna().all()


def test_import_checks_and_reorders_against_the_runs_labels(tmp_path):
    rp, _ = make_run()
    y, classes, _ = artifacts.read_test_labels("r")
    shuffled = ["Pneumothorax", "Effusion", "Hernia", "No Finding"]
    order = [classes.index(c) for c in shuffled]
    truth, _ = write_release(
        tmp_path / "rel", classes=shuffled, labels=y[:, order], sparsities=(0.0, 0.9)
    )
    importer.import_predictions("r", tmp_path / "rel", allow_pickle=True, progress=False)
    probs, meta = artifacts.read_store("r", "global_l1")
    assert meta["classes"] == CLASSES
    np.testing.assert_array_equal(probs[1, 1][:, order], truth[(1, 0.9)])
    assert "data" not in artifacts.read_run("r")  # notebook 01's labels and record are left alone

    y_bad = y.copy()
    y_bad[5] = 1 - y_bad[5]
    write_release(tmp_path / "bad", labels=y_bad)
    with pytest.raises(ValueError, match="row 5 is labelled"):
        importer.import_predictions("r", tmp_path / "bad", allow_pickle=True, progress=False)
    write_release(tmp_path / "short", n=N_TEST - 1)
    with pytest.raises(ValueError, match=f"has {N_TEST - 1} rows"):
        importer.import_predictions("r", tmp_path / "short", allow_pickle=True, progress=False)
    write_release(tmp_path / "renamed", classes=["Effusion", "No Finding", "Hernia", "Pneumo"])
    with pytest.raises(ValueError, match=r"missing \['Pneumothorax'\], unexpected \['Pneumo'\]"):
        importer.import_predictions("r", tmp_path / "renamed", allow_pickle=True, progress=False)


def test_import_names_missing_files(tmp_path):
    write_release(tmp_path / "rel")
    (tmp_path / "rel" / "nih-cxr-lt_resnet50_seed-1_prune-0.05.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="nih-cxr-lt_resnet50_seed-1_prune-0.05.pkl"):
        importer.import_predictions("imp", tmp_path / "rel", allow_pickle=True, progress=False)
    importer.import_predictions(
        "imp", tmp_path / "rel", allow_pickle=True, sparsities=[0.0, 0.5], progress=False
    )
    assert artifacts.read_store("imp", "global_l1")[1]["sparsities"] == [0.0, 0.5]


def test_import_refuses_other_methods():
    with pytest.raises(ValueError, match="set methods = \\['global_l1'\\]"):
        importer.check_import_methods(["global_l1", "random"], import_dir="/data/preds")
    importer.check_import_methods(["global_l1", "random"], import_dir="")


# -- the stage on a real (tiny) run: data.prepare_run → train.train_population → run_sweep ----
@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """A phantom run with two trained seeds, built once for the tests below."""
    home = tmp_path_factory.mktemp("phantom_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNECXR_HOME", str(home))
        mp.setenv("PRUNECXR_CACHE", str(home / "cache"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes without positives in so few patients
            data.prepare_run("ph", dataset="nih-phantom", resolution=16, max_patients=60)
        train.train_population(
            "ph",
            seeds=2,
            model="small_resnet",
            pretrained=False,
            max_epochs=1,
            patience=1,
            batch_size=64,
            lr=1e-3,
            device="cpu",
            population="sequential",
            progress=False,
        )
    return home


def test_run_sweep_on_a_trained_run(phantom_run, monkeypatch):
    monkeypatch.setenv("PRUNECXR_HOME", str(phantom_run))
    monkeypatch.setenv("PRUNECXR_CACHE", str(phantom_run / "cache"))
    with pytest.raises(ValueError, match="threads must be an int >= 0"):
        compress.run_sweep("ph", methods=["random"], sparsities=[0.0], device="cpu", threads=-1)
    with pytest.raises(FileNotFoundError, match=r"no trained model for seeds \[7\]"):
        compress.run_sweep("ph", methods=["random"], sparsities=[0.0], device="cpu", seeds=[7])
    out = compress.run_sweep(
        "ph",
        methods=["global_l1", "random"],
        sparsities=[0.0, 0.5, 0.95],
        device="cpu",
        batch_size=32,
        progress=False,
    )
    assert set(out) == {"global_l1", "random"}
    split = data.open_split("ph", "test")
    probs, meta = artifacts.read_store("ph", "random")
    assert meta["seeds"] == [0, 1] and meta["classes"] == list(split.classes)
    assert probs.shape == (2, 3, len(split), len(split.classes))
    with runtime.num_threads(runtime.usable_cores()):  # the sweep's default thread count
        dense = inference.predict(
            inference.load_model("ph", 1), split.images, batch_size=32, device="cpu"
        )
    assert np.array_equal(probs[1, 0], dense)  # sparsity 0 is the dense model, bit for bit
    g, _ = artifacts.read_store("ph", "global_l1")
    np.testing.assert_array_equal(g[:, 0], probs[:, 0])
    assert not np.array_equal(g[:, 2], probs[:, 2])
    record = artifacts.read_json(paths.run_paths("ph").prune_work("random") / "seed-1.json")
    assert (record["device"], record["threads"], record["batch_size"]) == (
        "cpu",
        runtime.usable_cores(),
        32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPositivesWarning)
        metrics = compress.write_all_metrics("ph", ["random", "global_l1"])
        tables = overall.overall_tables("ph", ["random", "global_l1"])
    assert list(metrics) == list(tables) == ["global_l1", "random"]  # the paper's method first
    assert compress.store_summary("ph", ["random", "global_l1"])["seeds"].tolist() == [2, 2]
    summary = overall.magnitude_summary(compress.dense_magnitudes("ph"))
    assert summary.n_models == 2 and 0 < summary.fraction_below < 1


def test_the_per_seed_unit_and_where_a_seed_ran(phantom_run, monkeypatch):
    """The sweep's unit of work is one seed (``sweep_seed``), whoever schedules it; a seed
    whose record names the Ray node that computed it counts as finished like any other
    (population="ray" itself: tests/test_ray.py)."""
    from prunecxr.compress import sweep

    monkeypatch.setenv("PRUNECXR_HOME", str(phantom_run))
    monkeypatch.setenv("PRUNECXR_CACHE", str(phantom_run / "cache"))
    args = dict(
        methods=["layerwise_l1"],
        sparsities=[0.0, 0.5],
        device="cpu",
        batch_size=32,
        threads=1,
        progress=False,
    )
    compress.run_sweep("ph", **args)
    probs, _ = artifacts.read_store("ph", "layerwise_l1")
    split = data.open_split("ph", "test")
    steps = []
    with runtime.num_threads(1):
        block = sweep.sweep_seed(
            "layerwise_l1",
            1,
            load_model=inference.model_loader("ph", "cpu"),
            images=inference.preprocessed(torch.from_numpy(np.array(split.images))),
            levels=[0.0, 0.5],
            n_classes=len(split.classes),
            batch_size=32,
            device=torch.device("cpu"),
            step=lambda: steps.append(1),
        )
    np.testing.assert_array_equal(block, probs[1])
    assert len(steps) == 2

    record_path = paths.run_paths("ph").prune_work("layerwise_l1") / "seed-0.json"
    artifacts.write_json(record_path, {**artifacts.read_json(record_path), "node": "ab" * 28})
    monkeypatch.setattr(
        sweep, "sweep_seed", lambda *a, **k: pytest.fail("a finished seed was swept again")
    )
    before = paths.run_paths("ph").probs("layerwise_l1").stat().st_mtime_ns
    compress.run_sweep("ph", **args)
    assert paths.run_paths("ph").probs("layerwise_l1").stat().st_mtime_ns == before
    with pytest.raises(
        ValueError,
        match=r"unknown population mode 'parallel'; choose one of \['sequential', 'ray'\]",
    ):
        compress.run_sweep("ph", population="parallel", **args)


#: a release file written by pandas 1.5.2 / numpy 1.23.5 (the authors' torch.yml), as their
#: evaluate_prune builds it: float32 probabilities of 3 classes for 5 images, then "label"
#: (row 2 has no positive). Probabilities: default_rng(0).random((5, 3)).astype(float32).
PANDAS_15_RELEASE_FILE = (
    "gAWVcwMAAAAAAACMEXBhbmRhcy5jb3JlLmZyYW1llIwJRGF0YUZyYW1llJOUKYGUfZQojARfbWdylIwecGFuZGFzLmNv"
    "cmUuaW50ZXJuYWxzLm1hbmFnZXJzlIwMQmxvY2tNYW5hZ2VylJOUjBZwYW5kYXMuX2xpYnMuaW50ZXJuYWxzlIwPX3Vu"
    "cGlja2xlX2Jsb2NrlJOUjBJudW1weS5jb3JlLm51bWVyaWOUjAtfZnJvbWJ1ZmZlcpSTlCiWPAAAAAAAAADsDyM/fCGK"
    "PtvTJz33ZIc8ejJQP1mqaT97TBs/ScA6PwIrCz/oYG8/x9tQP2l4MzvZfls/B5EJPbPKOj+UjAVudW1weZSMBWR0eXBl"
    "lJOUjAJmNJSJiIeUUpQoSwOMATyUTk5OSv////9K/////0sAdJRiSwNLBYaUjAFGlHSUUpSMCGJ1aWx0aW5zlIwFc2xp"
    "Y2WUk5RLAEsDSwGHlFKUSwKHlFKUaAuMFW51bXB5LmNvcmUubXVsdGlhcnJheZSMDF9yZWNvbnN0cnVjdJSTlGgQjAdu"
    "ZGFycmF5lJOUSwCFlEMBYpSHlFKUKEsBSwFLBYaUaBKMAk84lImIh5RSlChLA4wBfJROTk5K/////0r/////Sz90lGKJ"
    "XZQojApObyBGaW5kaW5nlIwPRWZmdXNpb258SGVybmlhlIwAlIwIRWZmdXNpb26UjApObyBGaW5kaW5nlGV0lGJoHksD"
    "SwRLAYeUUpRLAoeUUpSGlF2UKIwYcGFuZGFzLmNvcmUuaW5kZXhlcy5iYXNllIwKX25ld19JbmRleJSTlGg/jAVJbmRl"
    "eJSTlH2UKIwEZGF0YZRoJWgnSwCFlGgph5RSlChLAUsEhZRoL4ldlCiMCk5vIEZpbmRpbmeUjAhFZmZ1c2lvbpSMBkhl"
    "cm5pYZSMBWxhYmVslGV0lGKMBG5hbWWUTnWGlFKUaEGMGXBhbmRhcy5jb3JlLmluZGV4ZXMucmFuZ2WUjApSYW5nZUlu"
    "ZGV4lJOUfZQoaFBOjAVzdGFydJRLAIwEc3RvcJRLBYwEc3RlcJRLAXWGlFKUZYaUUpSMBF90eXCUjAlkYXRhZnJhbWWU"
    "jAlfbWV0YWRhdGGUXZSMBWF0dHJzlH2UjAZfZmxhZ3OUfZSMF2FsbG93c19kdXBsaWNhdGVfbGFiZWxzlIhzdWIu"
)


def test_import_reads_a_pickle_written_by_the_authors_pandas(tmp_path):
    import base64

    folder = tmp_path / "rel"
    folder.mkdir()
    raw = base64.b64decode("".join(PANDAS_15_RELEASE_FILE))
    for name in (
        "nih-cxr-lt_resnet50_seed-0_prune-0.pkl",
        "nih-cxr-lt_resnet50_seed-0_prune-0.05.pkl",
    ):
        (folder / name).write_bytes(raw)
    importer.import_predictions("old", folder, allow_pickle=True, progress=False)
    probs, meta = artifacts.read_store("old", "global_l1")
    assert meta["classes"] == ["No Finding", "Effusion", "Hernia"] and meta["sparsities"] == [
        0.0,
        0.05,
    ]
    np.testing.assert_array_equal(
        probs[0, 1], np.random.default_rng(0).random((5, 3)).astype(np.float32)
    )
    y, _, _ = artifacts.read_test_labels("old")
    assert y.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_stage_entry_points_sweep_or_import_with_the_recorded_parameters(
    started_stage, monkeypatch
):
    """Notebooks 03 and 08 pass the run name; their parameters reach the sweep (or import)."""
    from prunecxr.compress import sweep

    calls = []
    monkeypatch.setattr(sweep, "run_sweep", lambda run, **kw: calls.append(("sweep", kw)) or {})
    monkeypatch.setattr(
        sweep, "import_predictions", lambda run, d, **kw: calls.append(("import", d, kw)) or "p"
    )
    p = started_stage(
        "03_prune",
        "es",
        methods=["global_l1", "random"],
        sparsities=[0.0, 0.5],
        eval_batch_size=64,
        threads=1,
    )
    compress.run_prune_stage("es")
    kind, kw = calls.pop()
    assert (
        kind == "sweep"
        and kw["methods"] == ["global_l1", "random"]
        and kw["sparsities"] == [0.0, 0.5]
    )
    assert kw["batch_size"] == 64 and kw["threads"] == 1 and kw["population"] == p["population"]
    config.finish_stage("03_prune", run="es")

    started_stage("03_prune", "es", import_dir="/release", allow_pickle=True, sparsities=[0.0, 0.9])
    assert compress.run_prune_stage("es") == {"global_l1": "p"}
    assert calls.pop() == (
        "import",
        "/release",
        {"allow_pickle": True, "sparsities": [0.0, 0.9], "progress": True},
    )
    config.finish_stage("03_prune", run="es")
    started_stage("03_prune", "es", import_dir="/release", methods=["global_l1", "random"])
    with pytest.raises(ValueError, match=r"methods \['random'\] cannot be imported"):
        compress.run_prune_stage("es")

    p8 = started_stage(
        "08_compression",
        "es",
        compression_methods=["weight_quant"],
        bits=[32, 4],
        recover="bn",
        recover_batches=2,
    )
    compress.run_compression_stage("es")
    kind, kw = calls.pop()
    assert kw["methods"] == ["weight_quant"] and kw["bits"] == [32, 4] and kw["recover"] == "bn"
    assert kw["recover_batches"] == 2 and kw["channel_fractions"] == p8["channel_fractions"]
    assert (
        kw["calibration_images"] == p8["calibration_images"]
        and kw["batch_size"] == p8["eval_batch_size"]
    )


def test_sweep_emits_a_progress_event_per_model(tmp_path, monkeypatch):
    """The runner's progress line: one event as the sweep starts, one per (seed, level), naming
    the next seed and level; a seed already swept counts as done."""
    from prunecxr import events

    monkeypatch.setenv(events.PROGRESS_ENV, str(tmp_path / "progress.jsonl"))
    rp, images = make_run()
    sweep(rp, images, Loader(rp), seeds=(0,))
    sweep(rp, images, Loader(rp), seeds=(0, 1))  # seed 0 is finished: the count starts at 3
    got, _ = events.read_events(tmp_path / "progress.jsonl")
    assert {e.task for e in got} == {"sweep global_l1"} and {e.unit for e in got} == {"model"}
    first, second = got[:4], got[4:]
    assert [(e.done, e.total) for e in first] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [(e.done, e.total) for e in second] == [(3, 6), (4, 6), (5, 6), (6, 6)]
    assert first[0].detail == "seed 0 (1/1), sparsity 0 (1/3)"
    assert second[1].detail == f"seed 1 (2/2), sparsity {SWEEP_SPARSITIES[1]:g} (2/3)"
