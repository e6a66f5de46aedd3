"""Benchmark of notebook 03's sweep: evaluation throughput against raw forward throughput,
and the time global L1 needs to rank ResNet-50's weights for all 20 sparsities.

    .venv/bin/python benchmarks/bench_prune.py [--model small_resnet] [--resolution 64]
        [--n-images 2048] [--batch-size 128] [--device auto] [--repeats 3]

1. **Evaluation / raw forward.** The sweep's evaluation of one model at one sparsity is
   ``Pruner.apply`` (dense weights copied back, mask written as zeros) followed by
   ``inference.predict`` over the test images as ``run_sweep`` prepares them
   (``inference.preprocessed``: preprocessed once where they fit in memory, as here) → forward → sigmoid → one host copy
   at the end. Its throughput, in images per second, is divided by
   that of the same model's bare ``model(x)`` on already-preprocessed batches of the same size
   on the same device. The goal is ≥ 0.9: the sweep adds little to the forward passes.
   Each of ``--repeats`` rounds times one raw pass and, right after it, one sweep step (the
   sparsity cycling through 0, 0.5, 0.9); the ratio shown is the median of the rounds' ratios,
   so that load from other processes on a shared machine affects both sides of each ratio.
   On a CPU both sides run with the sweep's tuned ``malloc`` (:mod:`prunecxr.runtime`).
2. **Thresholds.** Wall time of :func:`prunecxr.compress.magnitude_thresholds` on a ResNet-50
   (20 classes): collect the 23.5 M magnitudes of the pruned set, sort them once, read the 20
   thresholds; and of ``create_pruner("global_l1", ...)`` plus one ``mask`` per sparsity
   (a sparsity whose threshold falls inside a run of equal float32 magnitudes takes its mask
   from ``torch.topk``, to break the ties exactly as ``torch.nn.utils.prune`` does).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from prunecxr import compress, config, inference, models, runtime
from prunecxr.published import PAPER_SPARSITIES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def raw_forward_seconds(model, batches, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for x in batches:
        model(x)
    _sync(device)
    return time.perf_counter() - start


def sweep_seconds(pruner, model, images, sparsities, batch_size, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for s in sparsities:
        pruner.apply(s)
        inference.predict(model, images, batch_size=batch_size, device=device)
    _sync(device)
    return time.perf_counter() - start


def throughput_ratio(args) -> None:
    device = runtime.resolve_device(args.device)
    if device.type == "cpu":
        runtime.keep_freed_memory()  # as run_sweep does; both sides run with it
    torch.manual_seed(0)
    model = models.create_model(args.model, 20).to(device).eval()
    images = torch.randint(
        0, 256, (args.n_images, args.resolution, args.resolution), dtype=torch.uint8
    )
    images = images.to(device)
    batches = [
        models.preprocess(images[i : i + args.batch_size])
        for i in range(0, args.n_images, args.batch_size)
    ]
    pruner = compress.create_pruner("global_l1", model)
    sparsities = [0.0, 0.5, 0.9]
    inputs = inference.preprocessed(images)  # what run_sweep evaluates

    raw_forward_seconds(model, batches[:2], device)  # warm-up (cuDNN autotuning, allocator)
    sweep_seconds(pruner, model, inputs[: args.batch_size], [0.5], args.batch_size, device)
    raw, swept = [], []
    for i in range(args.repeats):  # adjacent pairs share whatever else the machine is doing
        raw.append(args.n_images / raw_forward_seconds(model, batches, device))
        sparsity = sparsities[i % len(sparsities)]
        swept.append(
            args.n_images
            / sweep_seconds(pruner, model, inputs, [sparsity], args.batch_size, device)
        )
    ratios = [s / r for s, r in zip(swept, raw)]
    print(
        f"device: {device} ({torch.get_num_threads()} CPU threads)"
        if device.type == "cpu"
        else f"device: {device}"
    )
    print(
        f"model {args.model}, {args.n_images} images {args.resolution}x{args.resolution}, batch {args.batch_size}; "
        + (
            "test images preprocessed once"
            if inputs.dtype == torch.float32
            else "each batch preprocessed"
        )
    )
    print(
        f"  raw forward        : median {statistics.median(raw):8.1f} images/s, best {max(raw):8.1f}"
    )
    print(
        f"  sweep evaluation   : median {statistics.median(swept):8.1f} images/s, best {max(swept):8.1f}"
    )
    print(
        f"  sweep / raw forward: median of {args.repeats} adjacent pairs {statistics.median(ratios):.3f} "
        f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)}); goal >= 0.9"
    )


def threshold_time(args) -> None:
    torch.manual_seed(0)
    model = models.create_model("resnet50", 20)
    n = sum(p.numel() for _, p in compress.prunable_parameters(model))
    compress.magnitude_thresholds(model, PAPER_SPARSITIES)  # warm-up
    times, mask_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        compress.magnitude_thresholds(model, PAPER_SPARSITIES)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        pruner = compress.create_pruner("global_l1", model)
        for s in PAPER_SPARSITIES:
            pruner.mask(s)
        mask_times.append(time.perf_counter() - start)
    tied = [s for s in PAPER_SPARSITIES if pruner.plan.select.tied(compress.n_to_prune(s, n))]
    print(f"ResNet-50 pruned set: {n:,} weights (every Conv2d and Linear weight)")
    print(
        f"  20 thresholds (gather |w|, one sort): {statistics.median(times):.3f} s (median of {args.repeats})"
    )
    print(
        f"  create_pruner + 20 masks            : {statistics.median(mask_times):.3f} s "
        f"({len(tied)} sparsities tie at the threshold and take torch.topk: {tied})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="small_resnet")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument(
        "--batch-size", type=int, default=config.load_profile("default")["eval_batch_size"]
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    throughput_ratio(args)
    threshold_time(args)


if __name__ == "__main__":
    main()
