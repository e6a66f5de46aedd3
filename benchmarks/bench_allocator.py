"""CPU tensor work with glibc's default ``malloc`` and with :mod:`prunecxr.runtime`'s tuning.

Two workloads of the ``default`` profile, each in fresh child processes (``malloc``
settings are per process): ``train``, training steps of its model (forward, backward,
Adam) on batches of its size and resolution; ``sweep``, the pruning sweep's forward passes
(:func:`prunecxr.inference.predict` over a test set of the default run's size in batches
of ``eval_batch_size``). Each is run with ``PRUNECXR_MALLOC=system`` and with the
tuning, alternating which goes first, ``--repeats`` times, for one thread and for all
cores. It prints the median time of each side, the median of the paired ratios and the
page faults per run (a count, not a timing: it does not depend on the machine's load).

    python benchmarks/bench_allocator.py [--repeats 3] [--steps 30] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from prunecxr import config, runtime  # noqa: E402

TEST_IMAGES = 932  # the default run's test split


def child(workload: str, threads: int, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from prunecxr import inference, models
    from prunecxr.train import recipe

    tuned = runtime.keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    prof = config.load_profile("default")
    size, classes = prof["resolution"], 15
    model = models.create_model(prof["model"], classes)
    if workload == "train":
        batch = prof["batch_size"]
        x = models.preprocess(torch.randint(0, 256, (batch, size, size), dtype=torch.uint8))
        y = torch.randint(0, 2, (batch, classes)).float()
        opt = recipe.adam(model.parameters(), lr=prof["lr"], device=torch.device("cpu"))

        def work():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                F.binary_cross_entropy_with_logits(model(x), y).backward()
                opt.step()
    else:
        model.eval()
        images = torch.randint(0, 256, (TEST_IMAGES, size, size), dtype=torch.uint8)

        def work():
            for _ in range(max(steps // 10, 1)):
                inference.predict(model, images, batch_size=prof["eval_batch_size"], device="cpu")

    work()  # warm-up: first-use costs of the kernels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"tuned": tuned, "seconds": seconds, "faults": faults}


def run_child(workload: str, threads: int, steps: int, mode: str) -> dict:
    env = dict(os.environ, **{runtime.MALLOC_ENV: mode})
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            workload,
            "--threads",
            str(threads),
            "--steps",
            str(steps),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--steps", type=int, default=30, help="training steps per run (sweep: a tenth, in passes)"
    )
    ap.add_argument("--threads", type=int, default=0, help="0: one thread and all cores")
    ap.add_argument("--child", choices=("train", "sweep"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.steps)))
        return 0

    cores = runtime.usable_cores()
    counts = [args.threads] if args.threads else sorted({1, cores})
    probe = run_child("train", 1, 1, "tuned")
    if not probe["tuned"]:
        print("malloc is not glibc's here (or the environment tunes it): nothing to compare")
        return 0
    print(
        f"{args.repeats} runs of each side, alternating; times are medians, ratio = median of "
        "paired (default / tuned)"
    )
    for workload in ("train", "sweep"):
        for threads in counts:
            pairs = []
            for r in range(args.repeats):
                order = ("system", "tuned") if r % 2 == 0 else ("tuned", "system")
                got = {mode: run_child(workload, threads, args.steps, mode) for mode in order}
                pairs.append((got["system"], got["tuned"]))
            sys_s = np.array([p[0]["seconds"] for p in pairs])
            tun_s = np.array([p[1]["seconds"] for p in pairs])
            ratio = np.median(sys_s / tun_s)
            print(
                f"  {workload:5s} {threads} thread{'s' if threads > 1 else ' '}: glibc default "
                f"{np.median(sys_s):6.2f} s ({int(np.median([p[0]['faults'] for p in pairs])):>7,} page faults), "
                f"tuned {np.median(tun_s):6.2f} s ({int(np.median([p[1]['faults'] for p in pairs])):>5,}); "
                f"speed-up {ratio:.2f}x (pairs {np.min(sys_s / tun_s):.2f}-{np.max(sys_s / tun_s):.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
