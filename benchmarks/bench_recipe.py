"""The default recipe's choices that are about learning, not speed: what the models learn per epoch.

Trains one seed on the full phantom (all 112,120 images on NIH-CXR-LT's split) with each
setting given, through :func:`prunecxr.train.fit_population` (the recipe of notebook 02, one
epoch budget per setting), and prints per setting the wall time of training, the test mean AP
of the selected epoch and the test AP of the five classes rarest in training. It is how the ``default``
profile's resolution, batch size, learning rate, schedule and epoch count were chosen: the
goal is dense models that learn the rare classes within the 10-minute budget of a 2-core
machine (README, "Profiles"). Each setting is ``resolution:batch:lr:schedule:epochs``.

    python benchmarks/bench_recipe.py                       # the default profile's setting
    python benchmarks/bench_recipe.py 48:128:4e-3:onecycle:4 48:64:3e-3:constant:4 64:128:4e-3:onecycle:4
    python benchmarks/bench_recipe.py --quick               # a short check that everything runs

The image cache goes under ``PRUNECXR_CACHE`` (default: a temporary folder), so a second call
with the same resolution reuses it.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from prunecxr import config, data, inference, paths, runtime  # noqa: E402
from prunecxr import train as T  # noqa: E402
from prunecxr.metrics import ranking_metrics  # noqa: E402

RAREST = 5


def parse(setting: str) -> dict:
    try:
        res, batch, lr, schedule, epochs = setting.split(":")
        return {
            "resolution": int(res),
            "batch_size": int(batch),
            "lr": float(lr),
            "schedule": schedule,
            "max_epochs": int(epochs),
        }
    except ValueError:
        raise SystemExit(
            f"setting {setting!r}: expected resolution:batch:lr:schedule:epochs, "
            "e.g. 48:128:4e-3:onecycle:4"
        ) from None


def main(argv=None) -> int:
    prof = config.load_profile("default")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("settings", nargs="*")
    ap.add_argument(
        "--patients", type=int, default=prof["max_patients"], help="0: all (the default profile)"
    )
    ap.add_argument("--quick", action="store_true", help="200 patients, 1 epoch")
    args = ap.parse_args(argv)
    default = (
        f"{prof['resolution']}:{prof['batch_size']}:{prof['lr']}:{prof['schedule']}:"
        f"{prof['max_epochs']}"
    )
    settings = [parse(s) for s in (args.settings or [default])]
    if args.quick:
        args.patients = 200
        for s in settings:
            s["max_epochs"] = 1
    runtime.keep_freed_memory()
    threads = runtime.check_threads(prof["threads"])
    workdir = Path(tempfile.mkdtemp(prefix="bench_recipe-"))
    os.environ[paths.HOME_ENV] = str(workdir / "home")
    os.environ.setdefault(paths.CACHE_ENV, str(workdir / "cache"))
    try:
        print(
            f"{prof['model']}, seed 0, {threads} thread(s), precision {prof['precision']}; "
            f"phantom, {'all' if not args.patients else args.patients} patients"
        )
        for k, s in enumerate(settings):
            run = f"r{k}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data.prepare_run(
                    run,
                    dataset=prof["dataset"],
                    resolution=s["resolution"],
                    max_patients=args.patients,
                    split_seed=prof["split_seed"],
                )
            t0 = time.perf_counter()
            T.train_population(
                run,
                seeds=1,
                model=prof["model"],
                pretrained=False,
                max_epochs=s["max_epochs"],
                patience=s["max_epochs"],
                batch_size=s["batch_size"],
                lr=s["lr"],
                schedule=s["schedule"],
                precision=prof["precision"],
                device="cpu",
                threads=prof["threads"],
                progress=False,
            )
            seconds = time.perf_counter() - t0
            test = data.open_split(run, "test")
            probs = inference.predict(
                inference.load_model(run, 0),
                test.images,
                batch_size=prof["eval_batch_size"],
                device="cpu",
            )
            ap_, _ = ranking_metrics(test.labels, probs)
            freq = data.open_split(run, "train").labels.sum(axis=0)
            rare = np.argsort(freq, kind="stable")[:RAREST]  # in training, as the paper's "rarest"
            rare_text = ", ".join(f"{test.classes[c]} {ap_[c]:.3f}" for c in rare)
            print(
                f"  {s['resolution']} px, batch {s['batch_size']}, lr {s['lr']:g} {s['schedule']}, "
                f"{s['max_epochs']} epochs: {seconds:6.1f} s; test mean AP {np.nanmean(ap_):.3f}; "
                f"rarest: {rare_text}",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
