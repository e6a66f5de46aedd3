"""Benchmark of the inference beside the paper's (docs/statistics.md) on data the size of the default run.

Synthetic data of the default run's shape: 15 classes, 10 seeds, 20 sparsities, 21,081 test
images of 2,307 patients (probabilities with a class signal that fades with sparsity), and the
labels' prevalences of NIH ChestX-ray14. Each new analysis is timed at the default profile's
parameters (``n_boot``, ``n_boot_patients``, ``n_permutations``, ``n_pie_draws``) beside the
analysis of the paper that it stands beside, and the total added is printed last (the budget:
about 20 s on the 2-core machine, the default run staying within 10 minutes).

Usage: ``python benchmarks/bench_statistics.py [--threads 2]``. Nothing is written.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd

N_SEEDS, N_CLASSES, N_TEST, N_PATIENTS = 10, 15, 21_081, 2_307
SPARSITIES = [round(0.05 * k, 2) for k in range(20)]
PREVALENCE = np.array(
    [0.54, 0.18, 0.12, 0.10, 0.06, 0.05, 0.04, 0.05, 0.03, 0.02, 0.02, 0.02, 0.015, 0.012, 0.002]
)


def synthetic(seed: int = 0):
    """Labels, probabilities [seed, sparsity, image, class], metrics and PIEs of the default run's shape."""
    from prunecxr import metrics as metrics_
    from prunecxr.analysis import pies

    rng = np.random.default_rng(seed)
    classes = [f"class{c:02d}" for c in range(N_CLASSES)]
    patient = np.sort(rng.integers(0, N_PATIENTS, N_TEST))
    y = (rng.random((N_TEST, N_CLASSES)) < PREVALENCE).astype(np.int8)
    skill = np.linspace(2.0, 0.0, N_CLASSES)  # the rarest class is not learned
    probs = np.empty((N_SEEDS, len(SPARSITIES), N_TEST, N_CLASSES), np.float32)
    rows = []
    for i in range(N_SEEDS):
        noise = rng.normal(size=(N_TEST, N_CLASSES))
        for k, s in enumerate(SPARSITIES):
            fade = skill * (1 - s**3 * np.linspace(0.5, 2, N_CLASSES)).clip(0)
            logit = y * fade + noise + 0.3 * rng.normal(size=(N_TEST, N_CLASSES)) * s
            probs[i, k] = 1 / (1 + np.exp(-(logit - 2)))
            ap, auroc = metrics_.ranking_metrics(y, probs[i, k])
            rows += [(i, s, c, ap[j], auroc[j], int(y[:, j].sum())) for j, c in enumerate(classes)]
    metrics = pd.DataFrame(rows, columns=["seed", "sparsity", "class", "ap", "auroc", "n_pos"])
    test = pd.DataFrame(y, columns=classes)
    test.insert(0, "patient_id", [f"p{p}" for p in patient])
    test.insert(0, "image_id", [f"im{k:05d}" for k in range(N_TEST)])
    labels = pd.concat(
        [
            test.assign(split="test"),
            test.assign(split="train", image_id=lambda d: "tr" + d["image_id"]),
        ],
        ignore_index=True,
    )
    table = pies.pie_table(
        probs[:, 0].mean(axis=0),
        probs[:, SPARSITIES.index(0.9)].mean(axis=0),
        test["image_id"],
        fraction=0.05,
    )
    return classes, labels, test, probs, metrics, table


def timed(fn):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-boot-patients", type=int, default=100)
    parser.add_argument("--n-permutations", type=int, default=1999)
    parser.add_argument("--n-pie-draws", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from prunecxr.analysis import (
        cooccurrence,
        dyadic,
        forgetting,
        overall,
        paired,
        pie_intervals,
        pies,
        uncertainty,
    )

    print(
        f"synthetic run: {N_CLASSES} classes, {N_SEEDS} seeds, {len(SPARSITIES)} sparsities, "
        f"{N_TEST:,} test images of {N_PATIENTS:,} patients"
    )
    (classes, labels, test, probs, metrics, table), t = timed(synthetic)
    print(f"(made in {t:.1f} s)\n")
    rows = []

    def row(analysis, paper_fn, new_fn):
        _, t_paper = timed(paper_fn)
        out, t_new = timed(new_fn)
        rows.append((analysis, t_paper, t_new))
        return out

    # 03: Fig. 1
    row(
        "03 Fig. 1: Welch | paired, sign-flip, Holm/BH, first-drop stability",
        lambda: overall.overall_table(metrics),
        lambda: (
            paired.paired_table(metrics, n_permutations=args.n_permutations),
            paired.first_drop_stability(metrics, n_resamples=args.n_boot),
        ),
    )
    # 04: Fig. 3
    curves = forgetting.forgettability_curves(metrics, classes=classes)
    summary = forgetting.class_summary(curves, labels)
    changes = uncertainty.seed_changes(metrics, classes)
    flags = (
        uncertainty.unlearned_table(metrics, classes)
        .set_index("class")
        .loc[classes, "unlearned"]
        .to_numpy()
    )
    patient = pd.factorize(test["patient_id"])[0]
    data = uncertainty.PatientData(
        y=test[classes].to_numpy(np.int64), dense=probs[:, 0], extreme=probs[:, -1], patient=patient
    )
    row(
        "04 Fig. 3: curves, correlations | seeds+classes bootstrap (BCa)",
        lambda: forgetting.frequency_correlations(
            forgetting.class_summary(
                forgetting.forgettability_curves(metrics, classes=classes), labels
            )
        ),
        lambda: uncertainty.forgetting_intervals(
            changes, summary["train_count"].to_numpy(), flags, n_boot=args.n_boot, n_boot_patients=0
        ),
    )
    row(
        "04 Fig. 3: | patient bootstrap of the change at 95% (AP recomputed)",
        lambda: None,
        lambda: uncertainty.forgetting_intervals(
            changes,
            summary["train_count"].to_numpy(),
            flags,
            patients=data,
            n_boot=1,
            n_boot_patients=args.n_boot_patients,
        ),
    )
    # 05: Fig. 4, Eq. 2
    pairs = cooccurrence.pair_table(curves, labels)
    row(
        "05 Fig. 4, Eq. 2: pairs, OLS | Mantel, QAP, Freedman-Lane, robust SEs (all + learned)",
        lambda: cooccurrence.summarize("m", cooccurrence.pair_table(curves, labels)),
        lambda: [
            dyadic.dyadic_tests(p, c, n_permutations=args.n_permutations)
            for p, c in ((pairs, classes), dyadic.learned_pairs(pairs, classes, flags))
        ],
    )
    row(
        "05 Fig. 4, Eq. 2: | classes+seeds bootstrap (all + learned)",
        lambda: None,
        lambda: [
            dyadic.cooccurrence_intervals(p, c, changes, n_boot=args.n_boot)
            for p, c in ((pairs, classes), dyadic.learned_pairs(pairs, classes, flags))
        ],
    )
    # 06: Fig. 5
    is_pie = table["is_pie"].to_numpy()
    row(
        "06 Fig. 5: PIEs, ratios | patient-clustered ratio intervals",
        lambda: (
            pies.pie_table(
                probs[:, 0].mean(axis=0),
                probs[:, SPARSITIES.index(0.9)].mean(axis=0),
                test["image_id"],
                fraction=0.05,
            ),
            pies.class_ratios(test, is_pie, classes),
        ),
        lambda: pie_intervals.pie_ratio_intervals(
            test,
            is_pie,
            classes,
            train_counts=summary["train_count"].to_numpy(),
            is_unlearned=flags,
            n_boot=args.n_boot,
        ),
    )
    row(
        "06 Fig. 5: | PIE set stability over seed draws",
        lambda: None,
        lambda: pie_intervals.pie_stability(
            probs,
            0,
            SPARSITIES.index(0.9),
            test["image_id"].to_numpy(),
            is_pie,
            fraction=0.05,
            n_resamples=args.n_pie_draws,
        ),
    )

    width = max(len(r[0]) for r in rows)
    print(f"{'analysis (paper | new)':<{width}}  {'paper s':>8}  {'new s':>8}")
    for name, t_paper, t_new in rows:
        print(f"{name:<{width}}  {t_paper:8.2f}  {t_new:8.2f}")
    print(f"{'total':<{width}}  {sum(r[1] for r in rows):8.2f}  {sum(r[2] for r in rows):8.2f}")


if __name__ == "__main__":
    main()
