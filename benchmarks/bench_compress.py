"""Benchmark of what compression buys on a CPU: dense ResNet-50 against int8_ptq, channel_l1
at 50% and global_l1 at 90%, batch 1, side by side in one run.

    .venv/bin/python benchmarks/bench_compress.py [--resolution 224] [--threads 1]
        [--rounds 7] [--seconds 1.0] [--classes 20]

A ResNet-50 with ``--classes`` outputs (random weights: speed does not depend on what the
weights learned) is compressed four ways by :mod:`prunecxr.compress` exactly as notebook 08
compresses a trained one:

* ``dense`` — the float32 network (eval mode, BatchNorm unfused, as every notebook runs it);
* ``int8_ptq`` — FX static int8 quantization for x86 (calibrated on 32 random images);
  goal ≥ 2× faster than dense;
* ``channel_l1`` at 50% of the channels (Torch-Pruning, uniform): goal ≥ 1.8× faster;
* ``global_l1`` at 90% sparsity, the paper's pruning: expected ~1×, because unstructured zeros
  are still multiplied by dense kernels — the point of measuring it;
* ``dense BN-folded`` — a reference without a goal: the float network with BatchNorm folded
  into the convolutions (``torch.fx.experimental.optimization.fuse``), as int8 conversion
  folds it, to show how much of int8's gain is folding and how much is int8 arithmetic.

Latency is one image at ``--resolution`` px on ``--threads`` CPU threads
(``torch.utils.benchmark.Timer.timeit``; 0 = every usable core). The default is one thread: on
a shared 2-core machine a second thread waits at every barrier for a core another process holds
(measured there: dense 140 ms per image on 2 threads, 80 ms on 1), which would measure the
neighbour, not the model. Each of ``--rounds`` rounds times every variant for
about ``--seconds`` seconds, one after another; a variant's speed-up is the median over rounds
of (dense's time in that round) / (its time in that round), so load from other processes on a
shared machine affects both sides of each ratio. The table also shows parameters, non-zero
parameters and the zlib-compressed size (:mod:`prunecxr.compress.deploy`).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import numpy as np
import torch
import torchvision
from torch.fx.experimental.optimization import fuse

from prunecxr import compress, runtime
from prunecxr.compress import deploy

GOALS = {"int8_ptq": 2.0, "channel_l1 50%": 1.8, "global_l1 90%": None}
REFERENCES = {"dense BN-folded"}


def build(resolution: int, classes: int):
    torch.manual_seed(0)
    dense = torchvision.models.resnet50(num_classes=classes).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, resolution, resolution), dtype=np.uint8)
    labels = (rng.random((32, classes)) < 0.2).astype(np.uint8)
    calibration = compress.CalibrationSet(images, labels, batch_size=8, n_images=32)
    return {
        "dense": dense,
        "int8_ptq": compress.compress_model(dense, 8, method="int8_ptq", calibration=calibration),
        "channel_l1 50%": compress.compress_model(dense, 0.5, method="channel_l1"),
        "global_l1 90%": compress.compress_model(dense, 0.9, method="global_l1"),
        "dense BN-folded": fuse(copy.deepcopy(dense)).eval(),
    }


def seconds_per_call(model, x, threads: int, seconds: float) -> float:
    from torch.utils import benchmark

    timer = benchmark.Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
    with torch.inference_mode():
        one = timer.timeit(1).mean
        return timer.timeit(max(1, int(seconds / max(one, 1e-6)))).mean


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=20)
    args = parser.parse_args(argv)
    threads = runtime.check_threads(args.threads)
    variants = build(args.resolution, args.classes)
    x = torch.randn(1, 3, args.resolution, args.resolution)
    for model in variants.values():  # warm-up: weight packing, allocation
        with torch.inference_mode():
            model(x)
            model(x)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, model in variants.items():
            times[name].append(seconds_per_call(model, x, threads, args.seconds))
    print(
        f"ResNet-50, {args.classes} classes, {args.resolution}×{args.resolution} px, batch 1, {threads} CPU "
        f"thread(s), {args.rounds} alternating rounds of ~{args.seconds:g} s per variant"
    )
    print(
        f"{'variant':<16}{'ms/img (median)':>16}{'speed-up':>10}{'goal':>8}  {'met':<12}"
        f"{'params':>12}{'non-zero':>12}{'size MB (zlib)':>16}"
    )
    for name, model in variants.items():
        ratio = statistics.median(d / t for d, t in zip(times["dense"], times[name]))
        goal = GOALS.get(name)
        plain = name == "dense" or name in REFERENCES
        goal_text = "—" if plain else ("~1×" if goal is None else f"≥{goal:g}×")
        met = (
            "reference"
            if name in REFERENCES
            else ("" if plain else ("yes" if goal is None or ratio >= goal else "NO"))
        )
        if name == "global_l1 90%":
            met = "as expected" if 0.8 <= ratio <= 1.25 else "unexpected"
        params, nonzero = deploy.parameter_counts(model)
        size = deploy.serialized_bytes(model) / 1e6
        print(
            f"{name:<16}{1000 * statistics.median(times[name]):>16.1f}{ratio:>9.2f}×{goal_text:>8}  {met:<12}"
            f"{params:>12,}{nonzero:>12,}{size:>16.1f}"
        )
    print(
        "global_l1 at 90% keeps the dense network's shape and kernels: its zeros are still multiplied, "
        "so it is no faster (it is smaller only once compressed)."
    )


if __name__ == "__main__":
    main()
