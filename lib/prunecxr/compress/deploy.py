"""What compression buys at deployment, measured on this machine (notebook 08).

For each method and level, one seed's compressed model (the run's first) is measured, never
estimated from formulas:

* ``parameters`` — parameters of the network as built (a physically pruned network has fewer);
* ``nonzero_parameters`` — those that are not 0 (int8 layers: non-zero integer codes);
* ``size_bytes`` — the ``state_dict`` as ``torch.save`` writes it, compressed by zlib (level
  9): masked zeros and coarse grids compress, a smaller or int8 network is smaller;
* ``macs`` — multiply-accumulates of one image, counted by ``torch.utils.flop_counter`` on the
  float network (FLOPs / 2 of its convolutions and matrix products). Unstructured zeros are
  still multiplied, so pruning by sparsity leaves them unchanged; an int8 network performs the
  MACs of the float network it quantizes, in int8;
* ``latency_b1_ms``, ``latency_b64_ms`` — CPU milliseconds per image at batch 1 and at batch
  64 on a fixed number of threads (:func:`latency`, ``torch.utils.benchmark``), measured in
  :data:`PAIRED_ROUNDS` rounds that alternate the compressed model with the method's dense one;
  ``rel_latency_*`` is the median over rounds of the ratio of the two, so the load of other
  processes on a shared machine touches both sides of each ratio (:func:`paired_latency`);

beside the accuracy the sweep measured over every seed (``metrics.parquet``): ``mean_ap``, the
median over seeds of the class-mean AP, and ``tail_ap``, the same over the five rarest
training classes (:data:`prunecxr.published.N_RAREST`), each with its relative change against
the dense level (``rel_*``). :func:`tradeoff_figure` draws latency and size against tail AP,
one curve per method: the trade-off a deployer reads.

Timings are facts of one machine at one moment (and noisy on a shared one); the table records
the thread count, and :mod:`benchmarks.bench_compress` compares methods side by side in one run.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import artifacts, fmt, inference, levels, published, runtime
from .compressor import CalibrationSet
from .methods import METHODS, check_method
from .recovery import Recovery

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: batch sizes of the latency columns
LATENCY_BATCHES = (1, 64)
DEPLOY_COLUMNS = [
    "method",
    "level_name",
    "level",
    "recover",
    "parameters",
    "nonzero_parameters",
    "size_bytes",
    "macs",
    "latency_b1_ms",
    "latency_b64_ms",
    "threads",
    "mean_ap",
    "tail_ap",
    "rel_nonzero_parameters",
    "rel_size_bytes",
    "rel_macs",
    "rel_latency_b1_ms",
    "rel_latency_b64_ms",
    "rel_mean_ap",
    "rel_tail_ap",
]


# =========================================================================================
# Measures of one model
# =========================================================================================
def _quantized_weight(module: nn.Module) -> torch.Tensor | None:
    """The integer codes of an int8 layer's weight (None for a float layer)."""
    weight = getattr(module, "weight", None)
    if callable(weight) and not isinstance(weight, nn.Parameter):
        w = weight()
        if isinstance(w, torch.Tensor) and w.is_quantized:
            return w.int_repr()
    return None


def _quantized_bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    if callable(bias) and not isinstance(bias, nn.Parameter):
        return bias()
    return None


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(parameters, non-zero parameters)`` of ``model``: float parameters, and the weights
    and biases packed inside int8 layers (their integer codes)."""
    total = nonzero = 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            total += p.numel()
            nonzero += int(torch.count_nonzero(p.detach()))
        codes = _quantized_weight(module)
        if codes is not None:
            total += codes.numel()
            nonzero += int(torch.count_nonzero(codes))
            bias = _quantized_bias(module)
            if bias is not None:
                total += bias.numel()
                nonzero += int(torch.count_nonzero(bias))
    return total, nonzero


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``model.state_dict()`` as ``torch.save`` writes it, compressed by zlib (level 9)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(zlib.compress(buffer.getvalue(), 9))


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of ``model`` on ``example`` per image (FLOPs / 2 of convolutions and
    matrix products, ``torch.utils.flop_counter``); a float network only."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(example)
    return int(counter.get_total_flops() // 2 // example.shape[0])


#: blocks of calls a latency is the median of
LATENCY_BLOCKS = 3
#: rounds of a paired latency (compressed, then dense)
PAIRED_ROUNDS = 3


def latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    threads: int,
    min_run_time: float = 0.2,
    warm_up: bool = True,
) -> float:
    """Seconds per image of ``model(example)`` on the CPU with ``threads`` threads.

    A ``torch.utils.benchmark.Timer`` on ``threads`` threads: after two warm-up calls (weight
    packing, allocation; ``warm_up=False`` skips them for a model just measured), one call to
    estimate the time of a call, then :data:`LATENCY_BLOCKS` blocks of ``number`` calls each, ``number``
    chosen so the blocks together last about ``min_run_time`` seconds; the median of the
    blocks' mean call time, divided by the batch size. (``blocked_autorange`` itself spends
    at least ~100 calls estimating its block size, whatever ``min_run_time``.)
    """
    from torch.utils import benchmark

    n = runtime.check_threads(threads)
    model.eval()
    with torch.inference_mode():
        timer = benchmark.Timer("model(x)", globals={"model": model, "x": example}, num_threads=n)
        if warm_up:
            timer.timeit(2)
        first = timer.timeit(1).mean  # an estimate of one call
        number = max(1, int(min_run_time / LATENCY_BLOCKS / max(first, 1e-6)))
        blocks = [timer.timeit(number).mean for _ in range(LATENCY_BLOCKS)]
    return float(np.median(blocks)) / example.shape[0]


def paired_latency(
    model: nn.Module,
    dense: nn.Module,
    example: torch.Tensor,
    *,
    threads: int,
    min_run_time: float,
    rounds: int = PAIRED_ROUNDS,
) -> tuple[float, float]:
    """``(seconds per image of model, its ratio to dense's)``: :data:`PAIRED_ROUNDS` rounds of
    :func:`latency` of ``model`` and then of ``dense``, ``min_run_time`` spread over them; the
    medians over rounds of the model's time and of the ratio within each round."""
    share = min_run_time / (2 * rounds)
    own, ratios = [], []
    for k in range(rounds):
        t = latency(model, example, threads=threads, min_run_time=share, warm_up=k == 0)
        t_dense = latency(dense, example, threads=threads, min_run_time=share, warm_up=k == 0)
        own.append(t)
        ratios.append(t / t_dense)
    return float(np.median(own)), float(np.median(ratios))


# =========================================================================================
# The table
# =========================================================================================
def class_mean_ap(metrics: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.Series:
    """Median over seeds of the mean AP over ``classes`` (all by default), per level."""
    axis = levels.axis_of(metrics.columns)
    m = metrics if classes is None else metrics[metrics["class"].isin(list(classes))]
    per_seed = m.groupby(["seed", axis.name])["ap"].mean()
    return per_seed.groupby(axis.name).median()


def rarest_classes(run: str, classes: Sequence[str], n: int = published.N_RAREST) -> list[str]:
    """The ``n`` classes with the fewest training images that have a positive test image
    (ties by canonical order)."""
    labels = artifacts.read_labels(run, list(classes))
    train = labels[labels["split"] == "train"][list(classes)].sum()
    test = labels[labels["split"] == "test"][list(classes)].sum()
    usable = [c for c in classes if test[c] > 0]
    order = sorted(usable, key=lambda c: (int(train[c]), list(classes).index(c)))
    return order[:n]


def architecture(model: nn.Module) -> tuple:
    """The shapes of ``model``'s parameters: equal for two networks of one architecture."""
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def measure_level(
    model: nn.Module,
    *,
    example: torch.Tensor,
    macs: int | None = None,
    threads: int,
    min_run_time: float,
    dense: nn.Module | None = None,
) -> dict[str, float]:
    """The deployment measures of one compressed model (module docstring); ``macs`` when
    already counted (an int8 network performs those of the float network it quantizes).
    With ``dense``, the latencies are paired with it (:func:`paired_latency`) and the row
    holds their ratios as ``latency_ratio_b<B>``."""
    params, nonzero = parameter_counts(model)
    row = {
        "parameters": params,
        "nonzero_parameters": nonzero,
        "size_bytes": serialized_bytes(model),
        "macs": count_macs(model, example[:1]) if macs is None else int(macs),
    }
    for b in LATENCY_BATCHES:
        x = example[:1].expand(b, *example.shape[1:]).contiguous()
        if dense is None:
            row[f"latency_b{b}_ms"] = 1000 * latency(
                model, x, threads=threads, min_run_time=min_run_time
            )
        else:
            t, ratio = paired_latency(model, dense, x, threads=threads, min_run_time=min_run_time)
            row[f"latency_b{b}_ms"], row[f"latency_ratio_b{b}"] = 1000 * t, ratio
    return row


def deployment_table(
    run: str,
    methods: Sequence[str],
    *,
    threads: int = 1,
    min_run_time: float = 0.2,
    seed: int | None = None,
    calibration: CalibrationSet | None = None,
    recovery: Recovery | None = None,
) -> pd.DataFrame:
    """One row per method and level of the run's stores: measured size, MACs and latency of
    one seed's compressed model, and the accuracy of all seeds (columns :data:`DEPLOY_COLUMNS`).

    Parameters
    ----------
    run : a run whose stores (``prune/<method>/``) and checkpoints exist.
    methods : the methods to measure, each with a store.
    threads : CPU threads of the latency measures (0 = every usable core); recorded.
    min_run_time : seconds ``blocked_autorange`` spends per measure.
    seed : the seed whose models are measured (default: the store's first).
    calibration : training images (:func:`prunecxr.compress.sweep.calibration_set`), for the
        methods and recoveries that read them.
    recovery : the recovery of the stores whose ``recover`` is not ``none``; checked against
        the stores' ``meta.json``. Recovery changes the values of the weights (BatchNorm
        statistics, or fine-tuned weights that stay masked, on the grid, or in the smaller
        network), not the network that runs, so the sizes and times are measured on the
        compressed model before recovery; the AP columns are those of the recovered models
        the sweep evaluated.
    """
    n_threads = runtime.check_threads(threads)
    recovery = recovery or Recovery()
    macs_of: dict[tuple, int] = {}  # MACs per architecture, counted once
    rows = []
    for method in artifacts.method_order(methods):
        entry = METHODS[check_method(method)]
        meta = artifacts.read_meta(run, method)
        metrics = artifacts.read_metrics(run, method)
        rare = rarest_classes(run, meta["classes"])
        mean_ap, tail_ap = class_mean_ap(metrics), class_mean_ap(metrics, rare)
        chosen = meta["seeds"][0] if seed is None else int(seed)
        dense = inference.load_model(run, chosen, device="cpu")
        reference = inference.load_model(
            run, chosen, device="cpu"
        )  # the dense model, never compressed
        shape = artifacts.read_train_record(run)["image_shape"]
        example = torch.zeros((LATENCY_BATCHES[-1], 3, *shape))
        compressor = entry.create(dense, seed=chosen, calibration=calibration)
        if meta["recover"] not in ("none", recovery.kind):
            raise ValueError(
                f"the store of {method!r} was recovered with {meta['recover']!r}, not {recovery.kind!r}: "
                "measure it with the recovery it was swept with"
            )
        dense_macs = macs_of.setdefault(architecture(dense), count_macs(dense, example[:1]))
        for level in meta["levels"]:
            model = compressor.compress(level)
            quantized = any(_quantized_weight(m) is not None for m in model.modules())
            key = architecture(model)
            if not quantized and key not in macs_of:
                macs_of[key] = count_macs(model, example[:1])
            row = measure_level(
                model,
                example=example,
                macs=dense_macs if quantized else macs_of[key],
                threads=n_threads,
                min_run_time=min_run_time,
                dense=reference,
            )
            row.update(
                {
                    "method": method,
                    "level_name": meta["level_name"],
                    "level": float(level),
                    "recover": meta["recover"],
                    "threads": n_threads,
                    "mean_ap": float(mean_ap.get(level, np.nan)),
                    "tail_ap": float(tail_ap.get(level, np.nan)),
                }
            )
            rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("nonzero_parameters", "size_bytes", "macs", "mean_ap", "tail_ap"):
        dense_value = table.groupby("method")[column].transform(
            "first"
        )  # each method's dense level
        table[f"rel_{column}"] = (table[column] - dense_value) / dense_value
    for b in LATENCY_BATCHES:  # paired with the dense model, round by round
        table[f"rel_latency_b{b}_ms"] = table[f"latency_ratio_b{b}"] - 1.0
    return table[DEPLOY_COLUMNS]


def deployment_display(table: pd.DataFrame) -> pd.DataFrame:
    """The deployment table for reading: levels as text, sizes in kB, changes in %."""
    out = pd.DataFrame(
        {
            "method": table["method"],
            "level": [
                levels.axis(n).format(v) + ("" if n == "bits" else f" {n.replace('_', ' ')}")
                for n, v in zip(table["level_name"], table["level"])
            ],
            "non-zero params": [f"{int(v):,}" for v in table["nonzero_parameters"]],
            "size (kB, zlib)": [fmt.num(v / 1000, 1) for v in table["size_bytes"]],
            "MACs (M)": [fmt.num(v / 1e6, 2) for v in table["macs"]],
            "latency b=1 (ms/img)": [fmt.num(v, 3) for v in table["latency_b1_ms"]],
            "latency b=64 (ms/img)": [fmt.num(v, 3) for v in table["latency_b64_ms"]],
            "mean AP": [fmt.num(v, 3) for v in table["mean_ap"]],
            "tail AP (5 rarest)": [fmt.num(v, 3) for v in table["tail_ap"]],
            "Δ size": [fmt.pct(v) for v in table["rel_size_bytes"]],
            "Δ latency b=1": [fmt.pct(v) for v in table["rel_latency_b1_ms"]],
            "Δ mean AP": [fmt.pct(v) for v in table["rel_mean_ap"]],
            "Δ tail AP": [fmt.pct(v) for v in table["rel_tail_ap"]],
        }
    )
    return out


def tradeoff_figure(table: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Latency per image (batch 1) and compressed size against tail-class AP, one curve per
    method, levels in compression order along each curve (hover names the level)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=["CPU latency per image (batch 1)", "model size (zlib of the state dict)"],
    )
    palette = [
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#9467bd",
        "#ff7f0e",
        "#8c564b",
        "#e377c2",
        "#17becf",
    ]
    data = table.copy()
    data["level_text"] = [
        levels.axis(n).format(v) for n, v in zip(data["level_name"], data["level"])
    ]
    for k, (method, sub) in enumerate(data.groupby("method", sort=False)):
        color = palette[k % len(palette)]
        for col, (x, unit) in enumerate(
            (("latency_b1_ms", "ms"), ("size_bytes", "bytes")), start=1
        ):
            fig.add_trace(
                go.Scatter(
                    x=sub[x],
                    y=sub["tail_ap"],
                    mode="lines+markers",
                    name=method,
                    legendgroup=method,
                    showlegend=col == 1,
                    line=dict(color=color),
                    text=sub["level_text"],
                    hovertemplate=f"{method} %{{text}}<br>%{{x:.3g}} {unit}<br>tail AP %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="ms per image (log scale)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="bytes (log scale)", type="log", row=1, col=2)
    fig.update_yaxes(
        title_text=f"mean AP of the {published.N_RAREST} rarest training classes", row=1, col=1
    )
    fig.update_layout(
        title="What compression saves and what the rare classes pay", legend_title_text="method"
    )
    return fig, data[
        [
            "method",
            "level_name",
            "level",
            "level_text",
            "latency_b1_ms",
            "size_bytes",
            "tail_ap",
            "mean_ap",
        ]
    ]


def tail_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, what its fastest level (batch 1) and its most compressed level cost the
    rare classes: speed-up, size ratio and relative change of mean AP and tail AP against the
    method's dense level. The numbers of the README's sentence about each method."""
    rows = []
    for method, sub in table.groupby("method", sort=False):
        dense = sub.iloc[0]
        fastest = sub.loc[sub["rel_latency_b1_ms"].idxmin()]
        for what, row in (("fastest", fastest), ("most compressed", sub.iloc[-1])):
            rows.append(
                {
                    "method": method,
                    "which": what,
                    "level": levels.axis(row["level_name"]).format(row["level"]),
                    "speed-up b=1": fmt.ratio(1.0 / (1.0 + row["rel_latency_b1_ms"]), 2),
                    "size ratio": fmt.ratio(dense["size_bytes"] / row["size_bytes"], 2),
                    "Δ mean AP": fmt.pct(row["rel_mean_ap"], 1),
                    "Δ tail AP": fmt.pct(row["rel_tail_ap"], 1),
                }
            )
    return pd.DataFrame(rows)


def run_stage(
    run: str,
    methods: Sequence[str],
    *,
    threads: int = 1,
    min_run_time: float = 0.2,
    calibration_images: int = 256,
    recover: str = "none",
    recover_batches: int = 8,
    finetune_epochs: int = 1,
    finetune_lr: float = 1e-4,
) -> pd.DataFrame:
    """:func:`deployment_table` of ``methods`` (those with a store), written to
    ``compression/deployment.parquet``; the recovery is the one the stores were swept with."""
    from .sweep import calibration_set

    present = set(artifacts.methods_present(run))
    chosen = [m for m in dict.fromkeys(methods) if m in present]
    if not chosen:
        raise FileNotFoundError(f"none of the methods {list(methods)} has a store in run {run!r}")
    recovery = Recovery(recover, batches=recover_batches, epochs=finetune_epochs, lr=finetune_lr)
    needs = recovery.kind != "none" or any(METHODS[m].needs_calibration for m in chosen)
    calibration = calibration_set(run, images=calibration_images) if needs else None
    table = deployment_table(
        run,
        chosen,
        threads=threads,
        min_run_time=min_run_time,
        calibration=calibration,
        recovery=recovery,
    )
    artifacts.write_deployment(run, table)
    return table
