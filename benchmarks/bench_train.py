"""Training speed: pipeline efficiency.

End-to-end training images/s of :func:`prunecxr.train.fit_population` (batches gathered from a
memory-mapped uint8 image cache, augmentation on batched tensors, preprocessing, forward,
backward, optimizer step, validation and checkpoints) divided by the raw forward+backward
images/s of the same model and batch on a preprocessed in-memory tensor. Goal: at least 0.9.
(What scheduling the seeds as Ray tasks costs: ``benchmarks/bench_population.py``.)

Shared machines are noisy (on the 2-core VM this was written on, the same measurement
varies by 30% from minute to minute), so every ratio compares measurements taken back to
back. It runs ``--rounds`` rounds after an untimed warm-up training (a process's one-off
costs are not part of a pipeline's rate); each round times a raw step beside each
pipeline measurement, in the order raw, pipeline, pipeline, raw and reversed in the next
round, so that a drift in the machine's speed does not favour one side; it prints the
median of the rounds' ratios and their spread. On a CPU with one thread it counts CPU
time of this process, which other processes' load does not inflate.
Defaults follow the ``default`` profile: model, resolution, batch size, learning rate and
schedule, precision (bf16 autocast where the CPU computes it natively) and thread count (0: all
usable cores); the training set is 20,000 images for 2 epochs (the default's 78,506 would take
minutes a round; with the ``quick`` profile's 2,690 the fixed costs of an epoch weigh more:
0.76 instead of 0.79 with the default recipe), validation a tenth.

It first prints the recipe's speed levers, each added to the one before (batch size,
channels_last, bf16 autocast), as raw training images/s side by side: what each lever the
default recipe keeps gained here. Both sides of every ratio run with the tuned ``malloc`` of :mod:`prunecxr.runtime`, as training does.

    python benchmarks/bench_train.py [--device auto] [--images 20000] [--epochs 2] [--rounds 6]
    python benchmarks/bench_train.py --quick   # a short check that everything runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from prunecxr import config, fmt, models, paths, runtime  # noqa: E402
from prunecxr import train as T  # noqa: E402
from prunecxr.train import recipe  # noqa: E402


def make_cache(folder: Path, n: int, size: int, classes: int, seed: int):
    """A memory-mapped uint8 image cache and 0/1 labels (class c brightens a stripe)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < 0.15).astype(np.uint8)
    path = folder / f"images-{seed}.u8"
    images = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, size, size))
    images[:] = rng.integers(0, 120, (n, size, size), dtype=np.uint8)
    stripe = max(size // classes, 1)
    for c in range(classes):
        rows = labels[:, c] == 1
        images[rows, (c * stripe) % size : (c * stripe) % size + stripe, :] += 100
    images.flush()
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(n, size, size)), labels


def clock(device, threads):
    """CPU time of this process where it runs one thread (immune to other processes' load),
    else wall time."""
    return time.process_time if device.type == "cpu" and threads == 1 else time.perf_counter


def raw_images_per_s(
    model_name,
    classes,
    size,
    batch,
    device,
    threads,
    *,
    optimizer_step,
    seconds=3.0,
    precision="fp32",
    channels_last=None,
):
    """Forward+backward (+ Adam step) of one model on a fixed preprocessed batch on the device.

    One batch, used over and over, sits in the CPU's caches as a batch that the pipeline has
    just made does. (Cycling through many batches made beforehand ran 20% slower than the
    whole pipeline here, with glibc's default ``malloc``: they come from memory, not from the
    cache.)
    """
    torch.manual_seed(0)
    model = models.create_model(model_name, classes).to(device).train()
    cl = recipe.uses_channels_last(device) if channels_last is None else channels_last
    if cl:
        model = model.to(memory_format=torch.channels_last)
    x = models.preprocess(
        torch.randint(0, 256, (batch, size, size), dtype=torch.uint8, device=device),
        channels_last=cl,
    )
    y = torch.randint(0, 2, (batch, classes), device=device).float()
    opt = recipe.adam(model.parameters(), lr=1e-3, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        with recipe.autocast(device, precision):
            out = model(x)
        F.binary_cross_entropy_with_logits(out.float(), y).backward()
        if optimizer_step:
            opt.step()

    for _ in range(3):
        step()
    sync(device)
    now = clock(device, threads)
    n, t0 = 0, now()
    while now() - t0 < seconds:
        step()
        n += 1
    sync(device)
    return n * batch / (now() - t0)


def levers(shape, precision, *, rounds, seconds):
    """The recipe's speed levers, each added to the one before: training images/s of a raw
    forward+backward+Adam step (the recipe's own pipeline is timed below), median of
    ``rounds`` rounds that alternate their order."""
    model, classes, size, batch, device, threads = shape
    steps = [  # (what, batch, channels_last, precision)
        ("float32, default layout, batch 64 (the quick profile)", 64, False, "fp32"),
        (f"+ batch {batch}", batch, False, "fp32"),
        ("+ channels_last", batch, True, "fp32"),
        (f"+ {precision} autocast (the default recipe)", batch, True, precision),
    ]
    got = {k: [] for k in range(len(steps))}
    for r in range(rounds):
        for k in range(len(steps)) if r % 2 == 0 else reversed(range(len(steps))):
            _, b, cl, prec = steps[k]
            got[k].append(
                raw_images_per_s(
                    model,
                    classes,
                    size,
                    b,
                    device,
                    threads,
                    optimizer_step=True,
                    seconds=seconds,
                    precision=prec,
                    channels_last=cl,
                )
            )
    print(
        f"\nthe recipe's speed levers: raw training images/s ({model}, {size} px), median of {rounds} rounds"
    )
    base = prev = None
    for k, (what, *_rest) in enumerate(steps):
        ips = float(np.median(got[k]))
        gain = "" if prev is None else f"   x{ips / prev:.2f} (x{ips / base:.2f} in all)"
        print(f"    {what:52s}: {ips:8.0f}{gain}")
        base, prev = base or ips, ips
    print()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_seconds(
    data, cfg, *, seeds, population, device, threads, tag: str, now=time.perf_counter
) -> float:
    shutil.rmtree(paths.run_paths(tag).root, ignore_errors=True)
    tx, ty, vx, vy = data
    sync(device)
    t0 = now()
    T.fit_population(
        tx,
        ty,
        vx,
        vy,
        seeds=seeds,
        config=cfg,
        run=tag,
        device=device,
        population=population,
        threads=threads,
        progress=False,
    )
    sync(device)
    return now() - t0


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({runtime.usable_cores()} usable cores)"


def main(argv=None) -> int:
    prof = config.load_profile("default")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default=prof["model"])
    ap.add_argument("--resolution", type=int, default=prof["resolution"])
    ap.add_argument("--batch-size", type=int, default=prof["batch_size"])
    ap.add_argument("--images", type=int, default=20000, help="training images (val: a tenth)")
    ap.add_argument("--classes", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each timed training")
    ap.add_argument("--rounds", type=int, default=6, help="paired rounds of (a)")
    ap.add_argument(
        "--threads",
        type=int,
        default=prof["threads"],
        help="CPU threads per model; 0: all usable cores, as training's default",
    )
    ap.add_argument(
        "--quick", action="store_true", help="a short run: 256 images, 1 epoch, 1 round"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.rounds = 256, 1, 1

    device = runtime.resolve_device(args.device)
    if device.type == "cpu":
        runtime.keep_freed_memory()  # as training does; before either side is timed
    workdir = Path(tempfile.mkdtemp(prefix="bench_train-"))
    os.environ[paths.HOME_ENV] = str(workdir / "home")
    os.environ[paths.CACHE_ENV] = str(workdir / "cache")
    try:
        tx, ty = make_cache(workdir, args.images, args.resolution, args.classes, 0)
        vx, vy = make_cache(workdir, max(args.images // 10, 8), args.resolution, args.classes, 1)
        data = (tx, ty, vx, vy)
        tiny_val = (tx, ty, vx[:8], vy[:8])  # the training loop alone, validation negligible
        cfg = T.TrainConfig(
            model=args.model,
            pretrained=False,
            max_epochs=args.epochs,
            patience=args.epochs,
            batch_size=args.batch_size,
            lr=prof["lr"],
            schedule=prof["schedule"],
            precision=prof["precision"],
        )
        precision = recipe.resolve_precision(cfg.precision, device)
        threads = None
        if device.type == "cpu":  # both sides of every ratio run with the count training uses
            threads = runtime.check_threads(args.threads)
            torch.set_num_threads(threads)
        print(
            f"device: {device_name(device)}; torch {torch.__version__}; model {args.model}, "
            f"{args.resolution} px, batch {args.batch_size}, {args.images} training images, "
            f"{args.epochs} epochs per timed training; {precision}"
            + (f"; {threads} thread(s)" if threads else "")
        )

        # pipeline efficiency
        now = clock(device, threads)
        shape = (args.model, args.classes, args.resolution, args.batch_size, device, threads)
        levers(shape, precision, rounds=args.rounds, seconds=1.0 if args.quick else 2.0)
        # untimed warm-up: one-off costs of a process (first checkpoint write, lazy imports)
        fit_seconds(
            data,
            cfg,
            seeds=[0],
            population="sequential",
            device=device,
            threads=threads,
            tag="warm",
            now=now,
        )

        def measure(side, r):
            if side == "raw":
                return raw_images_per_s(
                    *shape, optimizer_step=False, seconds=2.0, precision=precision
                )
            if side == "raw_opt":
                return raw_images_per_s(
                    *shape, optimizer_step=True, seconds=2.0, precision=precision
                )
            return (
                args.epochs
                * args.images
                / fit_seconds(
                    data if side == "e2e" else tiny_val,
                    cfg,
                    seeds=[0],
                    population="sequential",
                    device=device,
                    threads=threads,
                    tag=f"{side}{r}",
                    now=now,
                )
            )

        order = ("raw", "e2e", "loop", "raw_opt")  # each pipeline beside its raw step
        rounds = []
        for r in range(args.rounds):
            got = {side: measure(side, r) for side in (order if r % 2 == 0 else order[::-1])}
            rounds.append(tuple(got[side] for side in order))
            print(f"    round {r + 1}: end-to-end / raw {got['e2e'] / got['raw']:.3f}", flush=True)
        raw, e2e, loop, raw_opt = (np.array(col) for col in zip(*rounds))
        eff, pipe = np.median(e2e / raw), np.median(loop / raw_opt)
        unit = "CPU-second, one thread" if now is time.process_time else "second"
        print(
            f"\npipeline efficiency: images per {unit}, median of {args.rounds} rounds "
            "(each times both sides back to back)"
        )
        print(f"    raw forward+backward, in-memory tensors      : {np.median(raw):8.0f}")
        print(f"    raw forward+backward+Adam step               : {np.median(raw_opt):8.0f}")
        print(f"    fit_population, val = a tenth of train        : {np.median(e2e):8.0f}")
        print(f"    fit_population, val = 8 images (the loop)     : {np.median(loop):8.0f}")
        spread = (
            f"rounds {fmt.num(float(np.min(e2e / raw)), 2)}-{fmt.num(float(np.max(e2e / raw)), 2)}"
        )
        print(
            f"    efficiency, end-to-end / raw forward+backward = {fmt.num(float(eff), 2)}   "
            f"({spread}; goal >= 0.90: {'met' if eff >= 0.9 else 'NOT met'})"
        )
        print(
            f"    the data pipeline alone (loop / raw step)     = {fmt.num(float(pipe), 2)}   "
            "(batches from the uint8 cache, augmentation, preprocessing, checkpoints)"
        )

    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
