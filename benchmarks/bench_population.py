"""What Ray costs: a population trained as Ray tasks against one seed after another.

Both sides train the ``quick`` profile's population (its phantom data, model, recipe, seeds and
thread count: the former default, 1,000 patients, 10 seeds of up to 12 epochs, about 80 s a
side here) into fresh runs of one temporary home, back to back in one process:

* ``sequential``: :func:`prunecxr.train.train_population` with ``population="sequential"``;
* ``ray``: the same with ``population="ray"`` on a Ray cluster started on this machine. The
  cluster's start is timed on its own (a notebook pays it once per stage), and the ratio is
  printed without and with it.

With the default ``threads = 0`` every model uses all usable cores, so Ray runs one task at a
time, exactly the sequential schedule: the ratio ``sequential / ray`` (wall time) is what
Ray's scheduling, its worker processes and the progress relay cost. Goal: at least 0.95 (Ray
costs at most 5%). Both sides give the same weights bit for bit (checked and printed).

It also times the same training steps in this process alone and with the idle cluster beside
it: on a machine of few cores, Ray's own processes (its raylet, GCS and agents) take a share of
the cores whatever the tasks do, a floor under the ratio that no scheduling removes.

And it prints the per-task scheduling overhead: the mean round trip of an empty task with the
population's resource request (submit, schedule, run, return), after the workers are warm.

Shared machines drift (up to 30% from minute to minute on the 2-core VM this was written on,
more while other work runs), and a population takes minutes: ``--repeats`` alternates the two
sides and keeps the fastest of each, and the script also prints the ratio with the epochs'
own time (``history.csv``'s ``seconds``) taken from the sequential side for both: both sides
train the same epochs with the same threads and priority, so that ratio keeps what Ray adds
around the epochs (scheduling, worker start, data set-up, the relay) and the drift between the
sides does not move it. It cannot see a slowdown inside the epochs (Ray's own processes
competing for the cores, spare workers starting), so the measured wall ratio is the goal's
figure, and the ratio of the epochs' times is printed beside it.

    python benchmarks/bench_population.py [--seeds 10] [--epochs 12] [--repeats 1]
    python benchmarks/bench_population.py --quick   # a short check that everything runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from prunecxr import artifacts, cluster, config, data, fmt, paths, runtime  # noqa: E402
from prunecxr import train as T  # noqa: E402


def train(run: str, prof: dict, *, seeds: int, epochs: int, population: str) -> tuple[float, float]:
    """(wall seconds, seconds inside epochs) of one population."""
    shutil.rmtree(paths.run_paths(run).root / "models", ignore_errors=True)
    t0 = time.perf_counter()
    T.train_population(
        run,
        seeds=seeds,
        model=prof["model"],
        pretrained=prof["pretrained"],
        max_epochs=epochs,
        patience=prof["patience"],
        batch_size=prof["batch_size"],
        lr=prof["lr"],
        bn_eval_compat=prof["bn_eval_compat"],
        schedule=prof["schedule"],
        precision=prof["precision"],
        device="cpu",
        population=population,
        threads=prof["threads"],
        progress=False,
    )
    wall = time.perf_counter() - t0
    inside = sum(float(artifacts.read_history(run, s)["seconds"].sum()) for s in range(seeds))
    return wall, inside


def same_weights(run_a: str, run_b: str, seeds: int) -> bool:
    for s in range(seeds):
        a, b = (
            torch.load(paths.run_paths(r).checkpoint(s), weights_only=True) for r in (run_a, run_b)
        )
        if list(a) != list(b) or not all(torch.equal(a[k], b[k]) for k in a):
            return False
    return True


#: seconds the cluster is left alone before the steps are timed beside it
IDLE_SECONDS = 5.0


def fixed_work(prof: dict, steps: int = 60) -> float:
    """Seconds of the same training steps in this process (one batch, the profile's model):
    timed with and without a Ray cluster idle beside it, what Ray's own processes cost."""
    from prunecxr import models
    from prunecxr.train import recipe

    torch.manual_seed(0)
    device = torch.device("cpu")
    net = models.create_model(prof["model"], 15).to(memory_format=torch.channels_last)
    opt = recipe.adam(net.parameters(), lr=1e-3, device=device)
    x = models.preprocess(
        torch.randint(
            0, 256, (prof["batch_size"], prof["resolution"], prof["resolution"]), dtype=torch.uint8
        ),
        channels_last=True,
    )
    y = torch.zeros(prof["batch_size"], 15)
    precision = recipe.resolve_precision(prof["precision"], device)
    t0 = 0.0
    for k in range(steps + 5):
        if k == 5:
            t0 = time.perf_counter()
        with recipe.autocast(device, precision):
            out = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _noop() -> None:
    return None


def task_round_trip(options: dict, n: int) -> float:
    """Mean seconds from submitting an empty task with ``options`` to having its result."""
    import ray

    task = ray.remote(_noop).options(**options)
    ray.get([task.remote() for _ in range(4)])  # warm workers
    t0 = time.perf_counter()
    for _ in range(n):
        ray.get(task.remote())
    return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    prof = config.load_profile("quick")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=prof["n_seeds"])
    ap.add_argument("--epochs", type=int, default=prof["max_epochs"])
    ap.add_argument("--patients", type=int, default=prof["max_patients"])
    ap.add_argument(
        "--repeats", type=int, default=1, help="timed populations of each side, alternating"
    )
    ap.add_argument(
        "--tasks", type=int, default=50, help="empty tasks timed for the per-task overhead"
    )
    ap.add_argument(
        "--quick", action="store_true", help="a short run: 200 patients, 2 seeds, 1 epoch"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.patients, args.seeds, args.epochs, args.tasks = 200, 2, 1, 10

    runtime.keep_freed_memory()  # as training does, on both sides
    threads = runtime.check_threads(prof["threads"])
    workdir = Path(tempfile.mkdtemp(prefix="bench_population-"))
    os.environ[paths.HOME_ENV] = str(workdir / "home")
    os.environ[paths.CACHE_ENV] = str(workdir / "cache")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data.prepare_run(
                "seq",
                dataset=prof["dataset"],
                resolution=prof["resolution"],
                max_patients=args.patients,
                split_seed=prof["split_seed"],
            )
            data.prepare_run(
                "ray",
                dataset=prof["dataset"],
                resolution=prof["resolution"],
                max_patients=args.patients,
                split_seed=prof["split_seed"],
            )
        n_train = len(data.open_split("seq", "train"))
        print(
            f"device: cpu ({runtime.usable_cores()} usable cores); torch {torch.__version__}; the quick "
            f"profile's population: {args.seeds} seeds of {prof['model']}, {prof['resolution']} px, "
            f"{n_train} training images, up to {args.epochs} epochs (patience {prof['patience']}), "
            f"{threads} thread(s) per model"
        )

        seq, ray_, starts, stops, alone, beside = [], [], [], [], [], []
        options = per_task = None
        for r in range(args.repeats):
            for side in ("sequential", "ray") if r % 2 == 0 else ("ray", "sequential"):
                if side == "sequential":  # no Ray process runs beside it
                    got = train("seq", prof, seeds=args.seeds, epochs=args.epochs, population=side)
                    seq.append(got)
                    with runtime.num_threads(threads):
                        alone.append(fixed_work(prof))
                else:
                    t0 = time.perf_counter()
                    with cluster.connect(""):  # a cluster on this machine, as a notebook starts it
                        starts.append(time.perf_counter() - t0)
                        got = train(
                            "ray", prof, seeds=args.seeds, epochs=args.epochs, population=side
                        )
                        ray_.append(got)
                        time.sleep(IDLE_SECONDS)  # Ray stops the workers the tasks left idle
                        with runtime.num_threads(threads):
                            beside.append(fixed_work(prof))
                        if per_task is None:
                            options = cluster.task_options(
                                torch.device("cpu"), threads=threads, gpus_per_model=1.0
                            )
                            per_task = task_round_trip(options, args.tasks)
                        t1 = time.perf_counter()
                    stops.append(time.perf_counter() - t1)
                print(
                    f"    {side:10s}: {got[0]:7.1f} s wall, {got[1]:7.1f} s inside epochs",
                    flush=True,
                )
        start, stop = min(starts), min(stops)

        (s_wall, s_in), (r_wall, r_in) = min(seq), min(ray_)
        s_out, r_out = s_wall - s_in, r_wall - r_in
        ratio, ratio_start = s_wall / r_wall, s_wall / (r_wall + start + stop)
        # the same epochs on both sides, so what Ray adds is the time outside them: a ratio that
        # the machine's drift between the two sides does not move
        steady, steady_start = s_wall / (s_in + r_out), s_wall / (s_in + r_out + start + stop)
        same = same_weights("seq", "ray", args.seeds)

        def goal(x):
            return f"goal >= 0.95: {'met' if x >= 0.95 else 'NOT met'}"

        print(f"\npopulation, fastest of {args.repeats}; wall time, each side back to back")
        print(
            f"    one after another (sequential)     : {s_wall:7.1f} s   (inside epochs {s_in:6.1f} s, outside {s_out:4.1f} s)"
        )
        print(
            f"    Ray tasks on a running cluster     : {r_wall:7.1f} s   (inside epochs {r_in:6.1f} s, outside {r_out:4.1f} s)"
        )
        print(
            f"    starting and stopping the cluster  : {start:7.1f} s + {stop:.1f} s (once per stage)"
        )
        print(f"    same weights bit for bit: {'yes' if same else 'NO'}")
        print(
            f"    sequential / ray, measured wall     = {fmt.num(ratio, 3)}   ({goal(ratio)}; "
            f"cluster start included {fmt.num(ratio_start, 3)})"
        )
        print(
            f"    sequential / ray, outside epochs    = {fmt.num(steady, 3)}   (cluster start included "
            f"{fmt.num(steady_start, 3)})"
        )
        print(
            "      (the sequential side's epoch time on both sides, plus each side's time outside epochs:"
        )
        print(
            "       what Ray adds around the epochs, immune to the machine's drift between the sides;"
        )
        print(
            f"       it leaves out any slowdown inside them: here the epochs took {fmt.num(r_in / s_in, 3)}x as long on Ray)"
        )
        print(
            f"    Ray's time outside epochs, per seed = {fmt.num((r_out - s_out) / args.seeds, 2)} s more than sequential"
        )
        print(
            f"    the same training steps in this process with the idle cluster beside it: "
            f"x{min(beside) / min(alone):.3f} as long (fastest of {len(alone)}; Ray's own processes "
            f"share the {runtime.usable_cores()} cores)"
        )
        print(
            f"    per-task scheduling overhead (empty task, {options['num_cpus']} CPU(s), mean of {args.tasks}) "
            f"= {per_task * 1000:.1f} ms"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
