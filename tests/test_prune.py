"""Stage 03: pruning methods, the resumable sweep, metrics, Fig. 1 statistics and the importer."""

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune as tprune

from prunecxr import artifacts, models, paths
from prunecxr.compress import importer, prune

SPARSITIES = [0.0, 0.05, 0.25, 0.5, 0.65, 0.9, 0.95, 1.0]
CLASSES = ["Effusion", "No Finding", "Hernia", "Pneumothorax"]


def tied_resnet(seed=0, step=0.05):
    """A small ResNet whose weights are rounded to multiples of ``step``: many equal |w|,
    of both signs, and ties at the threshold of every sparsity."""
    torch.manual_seed(seed)
    model = models.create_model("small_resnet", 3)
    with torch.no_grad():
        for _, p in prune.prunable_parameters(model):
            p.copy_(torch.round(p / step) * step)
    return model


def torch_global_masks(model, sparsity):
    """Masks (True = pruned) of torch.nn.utils.prune.global_unstructured with L1Unstructured."""
    ref = copy.deepcopy(model)
    modules = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured([(m, "weight") for m in modules], pruning_method=tprune.L1Unstructured,
                               amount=sparsity)
    return [m.weight_mask == 0 for m in modules]


# -- counting ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 10, 19, 1000, 25_557_032])
@pytest.mark.parametrize("sparsity", SPARSITIES + [0.15, 0.35, 0.85])
def test_n_to_prune_is_torchs_count(n, sparsity):
    assert prune.n_to_prune(sparsity, n) == tprune._compute_nparams_toprune(sparsity, n)


def test_n_to_prune_rounds_half_to_even():
    assert prune.n_to_prune(0.5, 3) == 2  # round(1.5)
    assert prune.n_to_prune(0.25, 10) == 2  # round(2.5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.5", None])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune.check_sparsity(bad)


def test_sparsities_must_increase():
    with pytest.raises(ValueError, match=r"sparsities\[2\] = 0.1"):
        prune.check_sparsities([0.0, 0.5, 0.1])


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="unknown method 'magnitude'.*global_l1"):
        prune.create_pruner("magnitude", tied_resnet())


def test_pruned_set_is_every_conv_and_linear_weight():
    model = torchvision.models.resnet18(num_classes=5)
    names = [name for name, _ in prune.prunable_parameters(model)]
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert "layer2.0.downsample.0.weight" in names
    assert not any("bn" in n or n.endswith("bias") for n in names)
    assert len(names) == 21  # 20 convolutions (incl. 3 shortcuts) + the classifier


def test_layer_quotas_hand_computed():
    # k·n_l/n = 1.5, 1.5, 2.0 → floors 1, 1, 2; one left for the first largest remainder
    assert prune.layer_quotas(5, [3, 3, 4]).tolist() == [2, 1, 2]
    assert prune.layer_quotas(0, [3, 3, 4]).tolist() == [0, 0, 0]
    assert prune.layer_quotas(10, [3, 3, 4]).tolist() == [3, 3, 4]
    assert prune.layer_quotas(7, [1, 9]).tolist() == [1, 6]  # 0.7→0 (+1: rem 7), 6.3→6


# -- masks equal torch.nn.utils.prune --------------------------------------------------------
def test_global_l1_masks_equal_torch_with_tied_magnitudes():
    model = tied_resnet()
    pruner = prune.create_pruner("global_l1", model)
    for sparsity in SPARSITIES:
        ours = pruner.masks(sparsity)
        theirs = torch_global_masks(model, sparsity)
        assert len(ours) == len(theirs)
        for (name, mask), ref in zip(ours.items(), theirs):
            assert torch.equal(mask, ref), (sparsity, name)


def test_tied_model_really_has_ties_at_the_thresholds():
    """The test above must exercise torch's tie-breaking, not just the strict-threshold path."""
    pruner = prune.create_pruner("global_l1", tied_resnet())
    tied = [s for s in SPARSITIES if pruner.plan.select.tied(prune.n_to_prune(s, pruner.n))]
    assert len(tied) >= 4


@pytest.mark.parametrize("sparsity", [0.05, 0.5, 0.95])
def test_layerwise_l1_masks_equal_torch_per_layer(sparsity):
    model = tied_resnet(seed=3)
    pruner = prune.create_pruner("layerwise_l1", model)
    quotas = prune.layer_quotas(prune.n_to_prune(sparsity, pruner.n), pruner.sizes)
    ref = copy.deepcopy(model)
    modules = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module, quota in zip(modules, quotas):
        tprune.l1_unstructured(module, "weight", amount=int(quota))
    for (name, mask), module in zip(pruner.masks(sparsity).items(), modules):
        assert torch.equal(mask, module.weight_mask == 0), name
    assert any(select.tied(int(q)) for select, q in zip(pruner.plan.layers, quotas))


# -- every method: exact sparsity, only the pruned set touched -------------------------------
@pytest.mark.parametrize("method", sorted(prune.METHODS))
def test_every_method_prunes_exactly_the_requested_fraction(method):
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 3)
    dense = copy.deepcopy(model.state_dict())
    pruned_names = {name for name, _ in prune.prunable_parameters(model)}
    pruner = prune.create_pruner(method, model, seed=7)
    for sparsity in SPARSITIES + [0.15, 0.35]:
        n_zeroed = pruner.apply(sparsity)
        k = round(sparsity * pruner.n)
        assert n_zeroed == k, sparsity
        assert prune.pruned_set_sparsity(model) == k / pruner.n, sparsity  # dense has no zeros
        assert abs(prune.pruned_set_sparsity(model) - sparsity) <= 0.5 / pruner.n
        for name, value in model.state_dict().items():
            if name in pruned_names:
                keep = value != 0
                assert torch.equal(value[keep], dense[name][keep]), (sparsity, name)
            else:  # biases, BatchNorm and its running statistics are never touched
                assert torch.equal(value, dense[name]), (sparsity, name)


@pytest.mark.parametrize("method", sorted(prune.METHODS))
def test_apply_starts_from_the_dense_weights_every_time(method):
    model = tied_resnet(seed=5)
    pruner = prune.create_pruner(method, model, seed=2)
    pruner.apply(0.9)
    pruner.apply(0.25)
    fresh = prune.prune_model(tied_resnet(seed=5), 0.25, method=method, seed=2)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    pruner.restore()
    for a, b in zip(model.state_dict().values(), tied_resnet(seed=5).state_dict().values()):
        assert torch.equal(a, b)


def test_prune_model_leaves_its_input_alone():
    model = tied_resnet()
    before = copy.deepcopy(model.state_dict())
    pruned = prune.prune_model(model, 0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert prune.pruned_set_sparsity(pruned) >= 0.5


def test_global_l1_masks_are_nested_and_thresholds_increase():
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 3)
    pruner = prune.create_pruner("global_l1", model)
    masks = [pruner.mask(s) for s in SPARSITIES]
    for smaller, larger in zip(masks, masks[1:]):
        assert not (smaller & ~larger).any()
    thresholds = prune.magnitude_thresholds(model, SPARSITIES)
    assert thresholds[0] == -np.inf and np.all(np.diff(thresholds) > 0)
    mags = np.abs(np.concatenate([d.numpy().ravel() for d in pruner.dense]))
    for s, t, m in zip(SPARSITIES[1:], thresholds[1:], masks[1:]):
        assert np.array_equal(m, mags <= t), s


def test_random_pruning_depends_on_seed_and_sparsity_only():
    model = tied_resnet()
    a = prune.create_pruner("random", model, seed=4).mask(0.5)
    assert np.array_equal(a, prune.create_pruner("random", tied_resnet(seed=9), seed=4).mask(0.5))
    assert not np.array_equal(a, prune.create_pruner("random", model, seed=5).mask(0.5))
    assert not np.array_equal(a, prune.create_pruner("random", model, seed=4).mask(0.55)[: a.size])
    assert prune.derived_seed(4, 0.5) != prune.derived_seed(5, 0.5)


def test_nan_weights_are_named():
    model = tied_resnet()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'fc.weight' holds NaN"):
        prune.create_pruner("global_l1", model)


# -- metrics ---------------------------------------------------------------------------------
def test_class_without_positives_gets_nan_and_is_left_out_of_means():
    rng = np.random.default_rng(1)
    n = 50
    y = (rng.random((n, 3)) < 0.3).astype(np.uint8)
    y[:, 1] = 0  # no positive test image
    probs = rng.random((2, 2, n, 3)).astype(np.float32)
    with pytest.warns(prune.MissingPositivesWarning, match=r"\['B'\]"):
        metrics = prune.compute_metrics(probs, y, seeds=[0, 1], sparsities=[0.0, 0.5], classes=["A", "B", "C"])
    assert list(metrics.columns) == prune.METRIC_COLUMNS
    b = metrics[metrics["class"] == "B"]
    assert b["ap"].isna().all() and b["auroc"].isna().all() and (b["n_pos"] == 0).all()
    assert metrics.loc[metrics["class"] != "B", "ap"].notna().all()
    with pytest.warns(prune.MissingPositivesWarning, match="left out"):
        per_seed = prune.seed_mean_ap(metrics)
    expected = metrics[metrics["class"] != "B"].groupby(["seed", "sparsity"])["ap"].mean().to_numpy()
    np.testing.assert_allclose(per_seed["mean_ap"].to_numpy(), expected)


# -- Fig. 1 statistics -----------------------------------------------------------------------
def metrics_from_means(means: dict[float, list[float]]) -> pd.DataFrame:
    """Two classes whose APs average to the given per-seed means."""
    rows = []
    for sparsity, values in means.items():
        for seed, m in enumerate(values):
            rows += [
                {"seed": seed, "sparsity": sparsity, "class": "A", "ap": m - 0.01, "auroc": 0.5, "n_pos": 3},
                {"seed": seed, "sparsity": sparsity, "class": "B", "ap": m + 0.01, "auroc": 0.5, "n_pos": 3},
            ]
    return pd.DataFrame(rows)


def test_overall_table_hand_computed():
    dense = [0.50, 0.51, 0.52, 0.53, 0.54]
    means = {
        0.0: dense,
        0.5: [0.50, 0.52, 0.51, 0.54, 0.53],  # the same values: no drop
        0.9: [0.30, 0.31, 0.32, 0.33, 0.34],  # a clear drop
        0.95: [0.60, 0.61, 0.62, 0.63, 0.64],  # a clear rise: not a drop
    }
    table = prune.overall_table(metrics_from_means(means))
    assert list(table.columns) == prune.OVERALL_COLUMNS
    assert table["sparsity"].tolist() == [0.0, 0.5, 0.9, 0.95]
    row = table.set_index("sparsity").loc[0.9]
    assert row["mean_ap_median"] == pytest.approx(0.32)
    assert row["mean_ap_q25"] == pytest.approx(0.31) and row["mean_ap_q75"] == pytest.approx(0.33)
    ref = scipy.stats.ttest_ind(means[0.9], dense, equal_var=False)
    assert row["welch_t"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue)
    assert np.isnan(table["p_value"].iloc[0])
    assert table["significant_drop"].tolist() == [False, False, True, False]
    assert prune.first_significant_drop(table) == 0.9
    assert prune.first_significant_drop(table, holm=True) == 0.9


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.0001, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(prune.holm(p), multipletests(p, method="holm")[1])
    with_nan = prune.holm(np.array([np.nan, 0.01, 0.02]))
    assert np.isnan(with_nan[0]) and with_nan[1:].tolist() == pytest.approx([0.02, 0.02])


def test_holm_can_move_the_first_drop_later():
    dense = np.linspace(0.45, 0.55, 30)
    se = np.sqrt(2 * dense.var(ddof=1) / 30)  # equal variances: Welch's df = 58
    shift = scipy.stats.t.isf(0.0007 / 2, 58) * se  # two-sided P = 0.0007 at 0.7
    means = {0.0: list(dense), 0.6: list(dense), 0.7: list(dense - shift), 0.8: list(dense - 3 * shift)}
    table = prune.overall_table(metrics_from_means(means)).set_index("sparsity")
    assert table.loc[0.7, "p_value"] == pytest.approx(0.0007, rel=1e-6)
    assert table.loc[0.7, "p_holm"] == pytest.approx(2 * 0.0007, rel=1e-6)  # 2nd smallest of 3
    assert prune.first_significant_drop(table.reset_index()) == 0.7
    assert prune.first_significant_drop(table.reset_index(), holm=True) == 0.8


def test_first_significant_drop_is_nan_without_a_drop():
    table = prune.overall_table(metrics_from_means({0.0: [0.5, 0.6, 0.55], 0.5: [0.5, 0.6, 0.56]}))
    assert np.isnan(prune.first_significant_drop(table))


def test_overall_table_needs_the_dense_models():
    with pytest.raises(ValueError, match="no sparsity 0"):
        prune.overall_table(metrics_from_means({0.5: [0.5, 0.6]}))


def test_magnitude_summary_counts_exactly():
    model = nn.Sequential(nn.Linear(4, 2, bias=True))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 0.001, -0.005, 0.02], [0.5, -2.0, 0.009, 1e-9]]))
        model[0].bias.fill_(1e-6)  # biases are not in the pruned set
    summary = prune.magnitude_summary([model, model])
    assert (summary.n_models, summary.n_weights, summary.n_zero) == (2, 16, 2)
    assert summary.fraction_below == pytest.approx(10 / 16)  # 0, 0.001, 0.005, 0.009, 1e-9
    assert summary.histogram["count"].sum() == 14


def test_figure_1_draws_every_method_paper_first():
    table = prune.overall_table(metrics_from_means({0.0: [0.5, 0.51, 0.52], 0.9: [0.3, 0.31, 0.32]}))
    mags = prune.magnitude_summary([tied_resnet()])
    fig, data = prune.figure_1({"random": table, "global_l1": table}, mags)
    assert fig.layout.annotations[0].text.startswith("global_l1: class-mean AP")
    assert set(data["panel"]) == {"mean_ap", "weight_magnitude"}
    assert data.loc[data["panel"] == "mean_ap", "method"].unique().tolist() == ["global_l1", "random"]
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "first significant drop (Welch, P < 0.001): 90%" in texts
    fig, data = prune.figure_1({"global_l1": table}, None)
    assert set(data["panel"]) == {"mean_ap"}


# -- the sweep: a run with checkpoints ------------------------------------------------------
N_TEST = 24
SWEEP_SPARSITIES = [0.0, 0.5, 0.9]


def make_run(name="r", seeds=(0, 1, 2), n_test=N_TEST):
    """labels.parquet (train + test rows), checkpoints of small ResNets, test images."""
    rp = paths.run_paths(name)
    rng = np.random.default_rng(0)
    n = n_test + 6
    labels = pd.DataFrame({
        "image_id": [f"img{i}" for i in range(n)],
        "patient_id": [f"p{i}" for i in range(n)],
        "split": ["train"] * 6 + ["test"] * n_test,
    })
    for j, c in enumerate(CLASSES):
        labels[c] = (rng.random(n) < 0.3 + 0.1 * j).astype(np.int8)
    artifacts.write_parquet(rp.labels, labels)
    artifacts.write_json(rp.run_json, {"run": name, "parameters": {"model": "small_resnet"}, "stages": {}})
    for seed in seeds:
        torch.manual_seed(seed)
        model = models.create_model("small_resnet", len(CLASSES))
        rp.seed_dir(seed).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), rp.checkpoint(seed))
    images = torch.from_numpy(rng.integers(0, 256, (n_test, 16, 16), dtype=np.uint8))
    return rp, images


class Loader:
    """load_model for sweep_method: the checkpoint of a seed, counting the calls."""

    def __init__(self, rp):
        self.rp, self.calls = rp, []

    def __call__(self, seed):
        self.calls.append(seed)
        model = models.create_model("small_resnet", len(CLASSES))
        model.load_state_dict(torch.load(self.rp.checkpoint(seed), weights_only=True))
        return model.eval()


def sweep(rp, images, loader, method="global_l1", seeds=(0, 1, 2)):
    _, classes, ids = prune.read_test_labels(rp.name)
    return prune.sweep_method(
        rp.name, method, seeds=list(seeds), sparsities=SWEEP_SPARSITIES, load_model=loader,
        images=images, classes=classes, image_ids=ids, device="cpu", batch_size=10, progress=False,
    )


def test_sweep_inputs_are_preprocessed_once_where_they_fit():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (23, 16, 16), dtype=torch.uint8)
    model = models.create_model("small_resnet", 4).eval()
    x = prune.sweep_inputs(images)
    assert x.shape == (23, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, models.preprocess(images))
    # the model sees the same numbers either way
    want = prune.predict_probs(model, images, batch_size=5, device="cpu")
    assert np.array_equal(prune.predict_probs(model, x, batch_size=5, device="cpu"), want)
    assert prune.sweep_inputs(images, budget_bytes=x.numel() * 4 - 1) is images  # too big: per batch
    with pytest.raises(ValueError, match="uint8"):
        prune.sweep_inputs(x)
    with pytest.raises(ValueError, match=r"float32 \[N, 3, H, W\], got torch.float32 \(23, 1, 16, 16\)"):
        prune.predict_probs(model, x[:, :1], batch_size=5, device="cpu")


def test_sweep_writes_the_store_of_artifacts_md():
    rp, images = make_run()
    loader = Loader(rp)
    path = sweep(rp, images, loader)
    assert path == rp.probs("global_l1")
    meta = json.loads(rp.prune_meta("global_l1").read_text())
    assert meta == {"method": "global_l1", "seeds": [0, 1, 2], "sparsities": SWEEP_SPARSITIES,
                    "classes": CLASSES}
    probs = np.load(path, allow_pickle=False)
    assert probs.shape == (3, 3, N_TEST, len(CLASSES)) and probs.dtype == np.float32
    model = loader(1)
    expected = prune.prune_model(model, 0.5).eval()
    with torch.no_grad():
        ref = torch.sigmoid(expected(models.preprocess(images))).numpy()
    np.testing.assert_allclose(probs[1, 1], ref, rtol=1e-5, atol=1e-6)
    assert not list(rp.prune_work("global_l1").glob("*.npy"))
    loaded, meta2 = prune.load_probs(rp.name, "global_l1")
    assert meta2 == meta and np.array_equal(loaded, probs)
    metrics = prune.write_metrics(rp.name, "global_l1")
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
    assert prune.load_probs(rp.name, "global_l1")[1]["seeds"] == [0, 1]


KILLED_SWEEP = textwrap.dedent(
    """
    import os, signal
    import numpy as np, torch
    from prunecxr import models, paths
    from prunecxr.compress import prune

    rp = paths.run_paths("r")
    images = torch.from_numpy(np.load({images!r}))
    _, classes, ids = prune.read_test_labels("r")
    real, calls = prune.predict_probs, []

    def load(seed):
        model = models.create_model("small_resnet", len(classes))
        model.load_state_dict(torch.load(rp.checkpoint(seed), weights_only=True))
        return model.eval()

    def predict_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == {kill_at}:  # inside seed 1
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    prune.predict_probs = predict_then_die
    prune.sweep_method(
        "r", "global_l1", seeds=[0, 1, 2], sparsities={sparsities!r}, load_model=load,
        images=images, classes=classes, image_ids=ids, device="cpu", batch_size=10, progress=False,
    )
    """
)


def test_sweep_resumes_after_being_killed(prunecxr_home, tmp_path):
    rp, images = make_run()
    np.save(tmp_path / "images.npy", images.numpy())
    script = KILLED_SWEEP.format(
        images=str(tmp_path / "images.npy"), sparsities=SWEEP_SPARSITIES, kill_at=len(SWEEP_SPARSITIES) + 2
    )
    done = subprocess.run([sys.executable, "-c", script], env=os.environ.copy(), capture_output=True)
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
    resumed, _ = prune.load_probs(rp.name, "global_l1", mmap=False)

    reference, ref_images = make_run("ref")
    sweep(reference, ref_images, Loader(reference))
    np.testing.assert_array_equal(resumed, prune.load_probs("ref", "global_l1", mmap=False)[0])


def test_run_sweep_refuses_sparsities_without_the_dense_model():
    make_run()
    with pytest.raises(ValueError, match="start with 0.0"):
        prune.run_sweep("r", methods=["global_l1"], sparsities=[0.5, 0.9])


# -- importing the authors' released predictions ---------------------------------------------
def write_release(folder, *, seeds=(0, 1), sparsities=(0.0, 0.05, 0.5), n=N_TEST, classes=CLASSES,
                  labels=None, dataset="nih-cxr-lt"):
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
    frame.to_pickle(folder / f"{dataset}_resnet50_seed-0_prune-0_val.pkl")  # ignored, as in the release
    return truth, labels


def test_release_file_names_are_the_authors():
    assert importer.release_file_name("nih-cxr-lt", 3, 0.0) == "nih-cxr-lt_resnet50_seed-3_prune-0.pkl"
    assert importer.release_file_name("nih-cxr-lt", 3, 0.05) == "nih-cxr-lt_resnet50_seed-3_prune-0.05.pkl"
    authors = np.array(range(0, 100, 5)) / 100  # the authors' sparsity_ratios
    names = {f"x_resnet50_seed-0_prune-{r}.pkl" for r in authors[1:]} | {"x_resnet50_seed-0_prune-0.pkl"}
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
    with pytest.raises(importer.PickleOptInRequired, match="Unpickling executes.*allow_pickle=True"):
        importer.import_predictions("r", tmp_path / "rel")
    with pytest.raises(importer.PickleOptInRequired):
        importer.import_predictions("r", tmp_path / "rel", allow_pickle="yes")
    assert not sentinel.exists()
    assert not paths.run_paths("r").probs("global_l1").exists()


def test_import_into_a_run_without_labels(tmp_path):
    truth, labels = write_release(tmp_path / "rel")
    path = importer.import_predictions("imp", tmp_path / "rel", allow_pickle=True, progress=False)
    probs, meta = prune.load_probs("imp", "global_l1")
    assert meta == {"method": "global_l1", "seeds": [0, 1], "sparsities": [0.0, 0.05, 0.5], "classes": CLASSES}
    assert path == paths.run_paths("imp").probs("global_l1")
    for (s, r), p in truth.items():
        np.testing.assert_array_equal(probs[meta["seeds"].index(s), meta["sparsities"].index(r)], p)
    y, classes, ids = prune.read_test_labels("imp")
    assert classes == CLASSES and np.array_equal(y, labels) and len(set(ids)) == N_TEST
    frame = pd.read_parquet(paths.run_paths("imp").labels)
    assert list(frame.columns[:3]) == ["image_id", "patient_id", "split"]
    assert (frame[CLASSES].dtypes == np.int8).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = prune.write_metrics("imp", "global_l1")
    assert metrics["ap"].notna().all()


def test_import_checks_and_reorders_against_the_runs_labels(tmp_path):
    rp, _ = make_run()
    y, classes, _ = prune.read_test_labels("r")
    shuffled = ["Pneumothorax", "Effusion", "Hernia", "No Finding"]
    order = [classes.index(c) for c in shuffled]
    truth, _ = write_release(tmp_path / "rel", classes=shuffled, labels=y[:, order], sparsities=(0.0, 0.9))
    importer.import_predictions("r", tmp_path / "rel", allow_pickle=True, progress=False)
    probs, meta = prune.load_probs("r", "global_l1")
    assert meta["classes"] == CLASSES
    np.testing.assert_array_equal(probs[1, 1][:, order], truth[(1, 0.9)])

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
    assert prune.load_probs("imp", "global_l1")[1]["sparsities"] == [0.0, 0.5]


def test_import_refuses_other_methods():
    with pytest.raises(ValueError, match="set methods = \\['global_l1'\\]"):
        importer.check_import_methods(["global_l1", "random"], import_dir="/data/preds")
    importer.check_import_methods(["global_l1", "random"], import_dir="")


# -- the stage on a real (tiny) run: data.prepare_run → train.train_population → run_sweep ----
@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """A phantom run with two trained seeds, built once for the tests below."""
    from prunecxr.data import datasets as data
    from prunecxr.train import core as train

    home = tmp_path_factory.mktemp("phantom_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNECXR_HOME", str(home))
        mp.setenv("PRUNECXR_CACHE", str(home / "cache"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes without positives in so few patients
            data.prepare_run("ph", dataset="nih-phantom", resolution=16, max_patients=60)
        train.train_population(
            "ph", seeds=2, model="small_resnet", pretrained=False, max_epochs=1, patience=1,
            batch_size=64, lr=1e-3, device="cpu", population="sequential", progress=False,
        )
    return home


def test_inference_threads_are_measured_and_restored(monkeypatch):
    from prunecxr.train import core as train

    model = models.create_model("small_resnet", 3).eval()
    images = torch.randint(0, 256, (40, 16, 16), dtype=torch.uint8)
    before = torch.get_num_threads()
    assert prune.inference_threads(model, images, batch_size=8) in (1, train._usable_cores())
    assert torch.get_num_threads() == before
    calls = []  # slower with more threads (a busy machine): one thread wins
    monkeypatch.setattr(prune, "predict_probs", lambda *a, **k: (calls.append(torch.get_num_threads()),
                                                                 time.sleep(0.02 * torch.get_num_threads())))
    monkeypatch.setattr(train, "_usable_cores", lambda: 2)
    assert prune.inference_threads(model, images, batch_size=8) == 1 and calls == [1, 2, 1, 2]


def test_run_sweep_on_a_trained_run(phantom_run, monkeypatch):
    from prunecxr.data import datasets as data
    from prunecxr.train import core as train

    monkeypatch.setenv("PRUNECXR_HOME", str(phantom_run))
    monkeypatch.setenv("PRUNECXR_CACHE", str(phantom_run / "cache"))
    with pytest.raises(ValueError, match="threads must be a positive int"):
        prune.run_sweep("ph", methods=["random"], sparsities=[0.0], device="cpu", threads=0)
    out = prune.run_sweep("ph", methods=["global_l1", "random"], sparsities=[0.0, 0.5, 0.95],
                          device="cpu", batch_size=32, progress=False)
    assert set(out) == {"global_l1", "random"}
    split = data.open_split("ph", "test")
    probs, meta = prune.load_probs("ph", "random")
    assert meta["seeds"] == [0, 1] and meta["classes"] == list(split.classes)
    assert probs.shape == (2, 3, len(split), len(split.classes))
    dense = train.predict(train.load_model("ph", 1), split.images, batch_size=32, device="cpu")
    np.testing.assert_allclose(probs[1, 0], dense, rtol=1e-5, atol=1e-6)  # sparsity 0 is the dense model
    g, _ = prune.load_probs("ph", "global_l1")
    np.testing.assert_array_equal(g[:, 0], probs[:, 0])
    assert not np.array_equal(g[:, 2], probs[:, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", prune.MissingPositivesWarning)
        metrics = prune.write_all_metrics("ph", ["random", "global_l1"])
        tables = prune.overall_tables("ph", ["random", "global_l1"])
    assert list(metrics) == list(tables) == ["global_l1", "random"]  # the paper's method first
    summary = prune.dense_magnitude_summary("ph")
    assert summary.n_models == 2 and 0 < summary.fraction_below < 1


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
    for name in ("nih-cxr-lt_resnet50_seed-0_prune-0.pkl", "nih-cxr-lt_resnet50_seed-0_prune-0.05.pkl"):
        (folder / name).write_bytes(raw)
    importer.import_predictions("old", folder, allow_pickle=True, progress=False)
    probs, meta = prune.load_probs("old", "global_l1")
    assert meta["classes"] == ["No Finding", "Effusion", "Hernia"] and meta["sparsities"] == [0.0, 0.05]
    np.testing.assert_array_equal(probs[0, 1], np.random.default_rng(0).random((5, 3)).astype(np.float32))
    y, _, _ = prune.read_test_labels("old")
    assert y.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_the_analysis_stages_read_the_sweep_without_importing_torch():
    """Notebooks 04-07 use prune's store and statistics; torch's import cost each 4-7 s."""
    code = ("import sys\n"
            "from prunecxr import analysis, compress, paper, reader_study\n"
            "assert prune.PAPER_METHOD and 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
