"""prunecxr.compress.deploy: the measures of one model, the deployment table and its figure."""

import numpy as np
import pandas as pd
import pytest
import torch

from prunecxr import artifacts, compress, models
from prunecxr.analysis import forgetting
from prunecxr.compress import deploy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_parameter_counts_and_size_by_hand():
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, :2] = 1.0
    assert deploy.parameter_counts(layer) == (15, 2 + int(torch.count_nonzero(layer.bias)))
    dense = torch.nn.Linear(400, 300)
    sparse = torch.nn.Linear(400, 300)
    with torch.no_grad():
        sparse.weight.mul_(torch.rand_like(sparse.weight) < 0.1)
    assert deploy.serialized_bytes(sparse) < 0.5 * deploy.serialized_bytes(dense)


def test_macs_are_counted_and_latency_is_positive():
    torch.manual_seed(0)
    model = models.create_model("small_resnet", 3).eval()
    x = torch.zeros(1, 3, 32, 32)
    macs = deploy.count_macs(model, x)
    # stem 3→16 (3×3, 16×16 out) alone is 16·16·16·27 = 110,592 MACs; fc 64·3
    assert macs > 110_592 and deploy.count_macs(model, torch.zeros(4, 3, 32, 32)) == macs
    smaller = compress.compress_model(model, 0.5, method="channel_l1")
    assert deploy.count_macs(smaller, x) < 0.5 * macs
    assert 0 < deploy.latency(model, x, threads=1, min_run_time=0.01) < 1.0


def test_deployment_table_of_a_run():
    from test_compress import make_run

    rp, images = make_run("d", seeds=(0, 1))
    _, classes, ids = artifacts.read_test_labels("d")
    for method, lv in (
        ("global_l1", [0.0, 0.9]),
        ("weight_quant", [32, 4]),
        ("channel_l1", [0.0, 0.5]),
    ):
        compress.sweep_method(
            "d",
            method,
            seeds=[0, 1],
            levels=lv,
            load_model=_loader("d"),
            images=images,
            classes=classes,
            image_ids=ids,
            device="cpu",
            batch_size=8,
            threads=1,
            progress=False,
        )
        compress.write_method_metrics("d", method)
    table = deploy.deployment_table(
        "d", ["weight_quant", "channel_l1", "global_l1"], threads=1, min_run_time=0.01
    )
    assert list(table.columns) == deploy.DEPLOY_COLUMNS
    assert list(table["method"]) == [
        "global_l1",
        "global_l1",
        "channel_l1",
        "channel_l1",
        "weight_quant",
        "weight_quant",
    ]
    by = table.set_index(["method", "level"])
    assert (
        by.loc[("global_l1", 0.9), "macs"] == by.loc[("global_l1", 0.0), "macs"]
    )  # zeros are multiplied
    assert by.loc[("global_l1", 0.9), "rel_nonzero_parameters"] < -0.8
    assert (
        by.loc[("channel_l1", 0.5), "parameters"] < 0.4 * by.loc[("channel_l1", 0.0), "parameters"]
    )
    assert by.loc[("weight_quant", 4.0), "rel_size_bytes"] < -0.3
    metrics = artifacts.read_metrics("d", "global_l1")
    assert by.loc[("global_l1", 0.0), "mean_ap"] == pytest.approx(
        metrics[metrics["sparsity"] == 0].groupby("seed")["ap"].mean().median()
    )
    fig, data = deploy.tradeoff_figure(table)
    assert len(fig.data) == 6 and set(data["method"]) == {"global_l1", "channel_l1", "weight_quant"}
    summary = deploy.tail_summary(table)
    assert list(summary["which"][:2]) == ["fastest", "most compressed"]
    shown = deploy.deployment_display(table)
    assert shown["level"].tolist()[:2] == ["0% sparsity", "90% sparsity"]


def _loader(run):
    from prunecxr import inference

    return inference.model_loader(run, "cpu")


def test_first_forgotten_orders_by_first_drop_then_rarity():
    curves = pd.DataFrame(
        {
            "class": ["A"] * 3 + ["B"] * 3 + ["C"] * 3,
            "bits": [32.0, 8.0, 2.0] * 3,
            "median_rel_ap_change": [0, -0.3, -0.5, 0, -0.1, -0.6, 0, -0.25, -0.9],
            "n_seeds": 3,
        }
    )
    summary = pd.DataFrame(
        {
            "class": ["A", "B", "C"],
            "train_count": [50, 5, 10],
            "test_count": [5, 2, 3],
            "first_drop": [8.0, 2.0, 8.0],
            "rel_change_at_extreme": [-0.5, -0.6, -0.9],
            "extreme_level": 2.0,
            "drop_threshold": 0.2,
        }
    )
    res = forgetting.Forgetting(
        "weight_quant", curves, summary, forgetting.frequency_correlations(summary)
    )
    table = forgetting.first_forgotten({"weight_quant": res}, n=3)
    assert table["class"].tolist() == ["C", "A", "B"]  # 8 bits first (C rarer than A), then 2 bits
    assert table["first_drop_level"].tolist() == ["8 bits", "8 bits", "2 bits"]
    assert np.allclose(table["change_at_extreme"], [-0.9, -0.5, -0.6])
