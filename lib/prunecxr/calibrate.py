"""Calibrating the phantom's difficulty to a published target (``python -m prunecxr calibrate-phantom``).

The phantom draws each finding with a *strength* of its own (:mod:`prunecxr.data.phantom`).
This module fits those strengths so that the default recipe's dense models reach a target
per-class test AUROC, and writes them as package data with their provenance
(``data/reference/phantom_difficulty_<condition>.json``, read by
:func:`prunecxr.data.reference.phantom_difficulty`). Two conditions:

``calibrated``
    every finding at CheXNet's published AUROC on ChestX-ray14 (Rajpurkar et al. 2017,
    arXiv:1711.05225, Table 2), so the phantom is as hard, class by class, as real films are
    for a real model;
``equal``
    every finding at one common AUROC, the median of that table, so that the findings differ
    only in frequency (the controlled experiment of profile ``controlled``).

The calibration only ever looks at dense test AUROC against the target: never at pruning.

How one iteration works: render all images with the current strengths, train the
calibration seeds with the default profile's recipe, predict the test split, and average each
finding's AUROC over the seeds. Then, per finding, a step on the binormal scale: an AUROC
``A`` corresponds to a separation ``d' = √2 Φ⁻¹(A)`` between the scores of positives and
negatives, and a detector's ``d'`` grows with the signal's amplitude; so ``log strength`` is
moved by ``(log d'_target - log d'_reached) / slope``, where the slope of ``log d'`` on
``log strength`` is estimated from the last two iterations (secant; 1 until there are two,
or when the estimate is implausible), a step that follows an overshoot is halved, and every
step is limited to a factor :data:`MAX_STEP`; from iteration :data:`BRACKET_FROM` on, a
finding whose measurements straddle the target is interpolated between the closest pair
that brackets it (regula falsi), which settles the steep findings the secant oscillates on. The iterations start from :data:`prunecxr.data.phantom.UNCALIBRATED_STRENGTH`
for every finding and are deterministic, so the same command on the same machine gives the
same table.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import config, inference, paths
from .data import phantom, reference
from .data.datasets import create_dataset
from .data.splits import subsample_patients
from .metrics import ranking_metrics
from .train import TrainConfig, fit_population

try:
    import fcntl
except ImportError:  # Windows: no lock; two calibrations may then train the same seed twice
    fcntl = None

#: the largest factor one iteration may change a strength by
MAX_STEP = 2.5
#: AUROCs are clipped to this range before the binormal transform (0.5 has d' = 0)
AUROC_CLIP = (0.505, 0.995)
#: the secant slope is used only inside this range; else the step assumes slope 1
SLOPE_RANGE = (0.25, 4.0)
#: from this iteration on, a finding whose measurements straddle its target is interpolated
#: between the closest pair that brackets it (regula falsi): near the target the secant of
#: the last two iterations oscillates on steep findings (Atelectasis went 0.75, 0.88, 0.74,
#: 0.89 for strengths 1.34, 1.52, 1.30, 1.52 against a target of 0.81)
BRACKET_FROM = 10
#: the recipe keys of a profile the calibration trains with
RECIPE_KEYS = (
    "resolution",
    "max_patients",
    "model",
    "pretrained",
    "max_epochs",
    "patience",
    "batch_size",
    "lr",
    "schedule",
    "precision",
    "threads",
    "eval_batch_size",
)
#: keys that change how the recipe runs, not what it learns (beyond rounding): a table
#: calibrated with other values of these still belongs to the recipe
EXECUTION_KEYS = ("threads", "device")
SOURCE = (
    "Rajpurkar, P., Irvin, J., et al.: CheXNet: Radiologist-Level Pneumonia Detection on "
    "Chest X-Rays with Deep Learning. arXiv:1711.05225 (2017), Table 2, column CheXNet "
    "(data/reference/chexnet_auroc.csv)"
)


def target_auroc(condition: str) -> dict[str, float]:
    """The AUROC each finding is calibrated to under ``condition`` (finding → AUROC)."""
    published = reference.chexnet_auroc()
    missing = [f for f in phantom.FINDINGS if f not in published.index]
    if missing:
        raise ValueError(f"{reference.CHEXNET_FILE} lacks the findings {missing}")
    if condition == "calibrated":
        return {f: float(published[f]) for f in phantom.FINDINGS}
    if condition == "equal":
        common = float(np.median(published[list(phantom.FINDINGS)].to_numpy()))
        return {f: common for f in phantom.FINDINGS}
    raise ValueError(
        f"unknown phantom difficulty {condition!r}; choose one of {list(reference.CONDITIONS)}"
    )


def separation(auroc: float) -> float:
    """The binormal separation ``d' = √2 Φ⁻¹(AUROC)``, AUROC clipped to :data:`AUROC_CLIP`."""
    return math.sqrt(2.0) * float(stats.norm.ppf(min(max(auroc, AUROC_CLIP[0]), AUROC_CLIP[1])))


def _bracketed(f: str, target: float, history: Sequence[tuple[Mapping, Mapping]]) -> float | None:
    """The strength of ``f`` interpolated (log strength against log d') between the closest
    measurements below and above ``target``; None when none straddle it."""
    points = [(math.log(s[f]), math.log(separation(a[f]))) for s, a in history]
    goal = math.log(separation(target))
    below = [p for p in points if p[1] < goal]
    above = [p for p in points if p[1] > goal]
    if not below or not above:
        return None
    lo, hi = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
    if abs(hi[1] - lo[1]) < 1e-12:
        return None
    return math.exp(lo[0] + (goal - lo[1]) * (hi[0] - lo[0]) / (hi[1] - lo[1]))


def next_strength(
    strength: Mapping[str, float],
    reached: Mapping[str, float],
    target: Mapping[str, float],
    *,
    previous: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
    history: Sequence[tuple[Mapping[str, float], Mapping[str, float]]] = (),
) -> dict[str, float]:
    """One calibration step for every finding (see the module docstring).

    Parameters
    ----------
    strength : the strengths just measured.
    reached : the dense test AUROC they gave (seed mean), finding → AUROC.
    target : finding → target AUROC.
    previous : the strengths and AUROCs of the iteration before, for the secant slope.
    history : every (strengths, AUROCs) measured so far, this iteration's included; from
        iteration :data:`BRACKET_FROM` on (``len(history) >= BRACKET_FROM``) a finding
        whose measurements straddle its target is interpolated between the closest
        bracketing pair instead.

    Returns
    -------
    dict finding → the next strength, within a factor :data:`MAX_STEP` of ``strength`` and
    within the renderer's range (0, 50].
    """
    out = {}
    for f in strength:
        slope = 1.0
        if previous is not None:
            ds = math.log(strength[f]) - math.log(previous[0][f])
            dd = math.log(separation(reached[f])) - math.log(separation(previous[1][f]))
            if abs(ds) > 0.05 and SLOPE_RANGE[0] <= dd / ds <= SLOPE_RANGE[1]:
                slope = dd / ds
        error = math.log(separation(target[f])) - math.log(separation(reached[f]))
        step = error / slope
        if previous is not None:
            before = math.log(separation(target[f])) - math.log(separation(previous[1][f]))
            if before * error < 0:  # overshot the target: halve the step (a class that is
                step *= 0.5  # learned or not, Hernia near its edge, would oscillate)
        bracket = _bracketed(f, target[f], history) if len(history) >= BRACKET_FROM else None
        if bracket is not None:
            step = math.log(bracket) - math.log(strength[f])
        step = min(max(step, -math.log(MAX_STEP)), math.log(MAX_STEP))
        out[f] = round(min(strength[f] * math.exp(step), 50.0), 4)
    return out


def recipe(profile: str = "default", **overrides) -> dict:
    """The training recipe of ``profile`` the calibration uses (:data:`RECIPE_KEYS`)."""
    prof = config.load_profile(profile)
    if prof["dataset"] != "nih-phantom":
        raise ValueError(
            f"profile {profile!r} does not use the phantom (dataset {prof['dataset']!r})"
        )
    keys = RECIPE_KEYS + ("device",)
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; choose from {list(keys)}")
    return {k: overrides.get(k, prof[k]) for k in keys}


@contextlib.contextmanager
def _home(folder: Path) -> Iterator[Path]:
    """``PRUNECXR_HOME`` set to ``folder`` for the calibration's models, then restored."""
    old = os.environ.get(paths.HOME_ENV)
    os.environ[paths.HOME_ENV] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop(paths.HOME_ENV, None)
        else:
            os.environ[paths.HOME_ENV] = old


def _seed_key(strength: Mapping[str, float], recipe: Mapping, seed: int) -> str:
    """What one seed's measurement depends on, hashed: the strengths, the recipe, the renderer."""
    text = json.dumps(
        {
            "strength": dict(strength),
            "recipe": dict(recipe),
            "seed": int(seed),
            "renderer_version": phantom.RENDERER_VERSION,
            "hernia_size": phantom.HERNIA_SIZE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _exclusive(path: Path, *, wait: bool) -> Iterator[bool]:
    """Try to hold an exclusive lock on ``path`` (waiting for it when ``wait``); yields whether
    it is held. Two calibrations that need the same seed: one trains it, the other reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        if fcntl is None:
            yield True
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def measure(
    strength: Mapping[str, float],
    *,
    recipe: Mapping,
    seeds: Sequence[int],
    after_training: Callable[[str, int], None] | None = None,
) -> pd.DataFrame:
    """Dense test AUROC of the phantom drawn with ``strength``: one row per (seed, finding).

    Renders the phantom (all images, or ``recipe["max_patients"]``) on NIH-CXR-LT's split,
    trains ``seeds`` with ``recipe`` and evaluates each on the test split. Each seed's result
    is kept under ``<cache>/calibration/<key>.json`` (the key hashes the strengths, the recipe,
    the seed and the renderer), and its training resumes from the last finished epoch
    (``<cache>/calibration/work/<key>/``): a killed calibration continues where it stopped, and
    two conditions that measure the same table share the work. ``after_training(run, seed)``,
    when given, is called for each seed while its model is still there
    (:func:`prunecxr.inference.load_model` reads it); the seed is then trained afresh in a
    temporary folder. Returns columns ``seed``, ``class``, ``auroc``, ``n_pos``.
    """
    from . import artifacts

    root = paths.cache_root() / "calibration"
    classes = list(phantom.CLASSES)
    device = recipe.get("device", "cpu")
    cfg = TrainConfig(
        model=recipe["model"],
        pretrained=bool(recipe.get("pretrained", False)),
        max_epochs=int(recipe["max_epochs"]),
        patience=int(recipe["patience"]),
        batch_size=int(recipe["batch_size"]),
        lr=float(recipe["lr"]),
        schedule=recipe["schedule"],
        precision=recipe["precision"],
    )
    drawn = {}

    def arrays():
        if not drawn:
            table = create_dataset("nih-phantom").table()
            table = subsample_patients(table, int(recipe["max_patients"]), seed=0).reset_index(
                drop=True
            )
            meta = phantom.load_table().set_index("image_id").loc[table["image_id"]].reset_index()
            drawn["images"] = phantom.render(
                meta, resolution=int(recipe["resolution"]), difficulty=dict(strength)
            )
            drawn["labels"] = table[classes].to_numpy(np.uint8)
            drawn["part"] = {s: (table["split"] == s).to_numpy() for s in ("train", "val", "test")}
        return drawn["images"], drawn["labels"], drawn["part"]

    def train_and_score(seed: int, home: Path) -> list[dict]:
        images, labels, part = arrays()
        with _home(home):
            fit_population(
                images[part["train"]],
                labels[part["train"]],
                images[part["val"]],
                labels[part["val"]],
                seeds=[seed],
                config=cfg,
                run="calibration",
                classes=classes,
                device=device,
                threads=int(recipe["threads"]),
                progress=False,
            )
            if after_training is not None:
                after_training("calibration", seed)
            probs = inference.predict(
                inference.load_model("calibration", seed),
                images[part["test"]],
                batch_size=int(recipe["eval_batch_size"]),
                device=device,
            )
        _, auroc = ranking_metrics(labels[part["test"]], probs)
        return [
            {
                "seed": seed,
                "class": c,
                "auroc": float(auroc[k]),
                "n_pos": int(labels[part["test"], k].sum()),
            }
            for k, c in enumerate(classes)
        ]

    results: dict[int, list[dict]] = {}
    pending = [int(s) for s in seeds]
    if after_training is not None:
        for seed in pending:
            with tempfile.TemporaryDirectory(prefix="prunecxr-calibrate-") as tmp:
                results[seed] = train_and_score(seed, Path(tmp))
        pending = []
    while pending:  # seeds another process is training now are left for later
        progressed = False
        for seed in list(pending):
            key = _seed_key(strength, recipe, seed)
            done = root / f"{key}.json"
            with _exclusive(root / f"{key}.lock", wait=False) as held:
                if not held:
                    continue
                if not done.exists():
                    work = root / "work" / key
                    artifacts.write_json(done, train_and_score(seed, work))
                    shutil.rmtree(work, ignore_errors=True)
                results[seed] = artifacts.read_json(done)
                pending.remove(seed)
                progressed = True
        if pending and not progressed:  # wait until the other process lets go of one
            with _exclusive(root / f"{_seed_key(strength, recipe, pending[0])}.lock", wait=True):
                pass
    rows = [row for seed in (int(s) for s in seeds) for row in results[seed]]
    return pd.DataFrame(rows)


def _finding_means(measured: pd.DataFrame) -> dict[str, float]:
    means = measured.groupby("class")["auroc"].mean()
    return {f: float(means[f]) for f in phantom.FINDINGS}


def _errors(reached: Mapping[str, float], target: Mapping[str, float]) -> tuple[float, float]:
    diff = np.array([abs(reached[f] - target[f]) for f in phantom.FINDINGS])
    return float(diff.mean()), float(diff.max())


def calibrate(
    condition: str,
    *,
    seeds: Sequence[int] = (0, 1),
    max_iterations: int = 12,
    tolerance_mean: float = 0.015,
    tolerance_max: float = 0.04,
    profile: str = "default",
    recipe_overrides: Mapping | None = None,
    start: Mapping[str, float] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Fit the strengths of ``condition`` (see the module docstring).

    Parameters
    ----------
    condition : ``"calibrated"`` or ``"equal"`` (:func:`target_auroc`).
    seeds : the calibration's training seeds; each iteration averages their AUROCs.
    max_iterations : iterations at most; the loop ends early once the seed-mean AUROCs are
        within ``tolerance_mean`` (mean absolute difference) and ``tolerance_max`` (every
        finding) of the target.
    profile, recipe_overrides : the recipe (:func:`recipe`).
    start : the first strengths (default :data:`~prunecxr.data.phantom.UNCALIBRATED_STRENGTH`
        for every finding).
    log : where a line per iteration goes.

    Returns
    -------
    The record :func:`write_table` writes: ``condition``, ``strength`` (the iteration closest
    to the target: smallest largest difference, then smallest mean), ``target_auroc``,
    ``reached_auroc``,
    ``provenance``.
    """
    target = target_auroc(condition)
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 1
    ):
        raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}")
    rec = recipe(profile, **dict(recipe_overrides or {}))
    seeds = [int(s) for s in seeds]
    strength = phantom.strengths(
        start or {f: phantom.UNCALIBRATED_STRENGTH for f in phantom.FINDINGS}
    )
    history, previous = [], None
    for k in range(max_iterations):
        t0 = time.perf_counter()
        measured = measure(strength, recipe=rec, seeds=seeds)
        reached = _finding_means(measured)
        undefined = [f for f, v in reached.items() if not np.isfinite(v)]
        if undefined:
            raise ValueError(
                f"no test AUROC for {undefined} (no positive or no negative test image "
                f"with max_patients={rec['max_patients']}): calibrate on more patients"
            )
        mean_err, max_err = _errors(reached, target)
        history.append(
            {
                "iteration": k,
                "strength": dict(strength),
                "auroc": reached,
                "mean_abs_diff": round(mean_err, 4),
                "max_abs_diff": round(max_err, 4),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        worst = max(phantom.FINDINGS, key=lambda f: abs(reached[f] - target[f]))
        log(
            f"[{condition}] iteration {k}: mean |AUROC - target| {mean_err:.3f}, largest "
            f"{max_err:.3f} ({worst}: {reached[worst]:.3f} vs {target[worst]:.3f}), "
            f"{history[-1]['seconds']:.0f} s"
        )
        if mean_err <= tolerance_mean and max_err <= tolerance_max:
            break
        measured_so_far = [(h["strength"], h["auroc"]) for h in history]
        strength, previous = (
            next_strength(strength, reached, target, previous=previous, history=measured_so_far),
            (strength, reached),
        )
    # the binding tolerance is every finding's: the iteration with the smallest largest
    # difference, then the smallest mean
    best = min(history, key=lambda h: (h["max_abs_diff"], h["mean_abs_diff"]))
    return {
        "condition": condition,
        "strength": best["strength"],
        "target_auroc": target,
        "reached_auroc": {f: round(v, 4) for f, v in best["auroc"].items()},
        "provenance": {
            "target_source": SOURCE
            if condition == "calibrated"
            else "the median of " + SOURCE + ", for every finding",
            "recipe": rec,
            "profile": profile,
            "seeds": seeds,
            "renderer_version": phantom.RENDERER_VERSION,
            "tolerance": {"mean_abs_diff": tolerance_mean, "max_abs_diff": tolerance_max},
            "converged": best["mean_abs_diff"] <= tolerance_mean
            and best["max_abs_diff"] <= tolerance_max,
            "chosen_iteration": best["iteration"],
            "iterations": history,
            "date": _dt.date.today().isoformat(),
            "command": f"python -m prunecxr calibrate-phantom --condition {condition}",
            "what_it_looks_at": "dense test AUROC against the target only; never pruning results",
        },
    }


def check(
    condition: str,
    *,
    seeds: Sequence[int] = (0, 1),
    profile: str = "default",
    recipe_overrides: Mapping | None = None,
) -> dict:
    """Measure the shipped table of ``condition`` once: its record with ``reached_auroc``
    replaced by what the seeds reach now (nothing is written)."""
    record = reference.phantom_difficulty(condition)
    measured = measure(
        record["strength"],
        recipe=recipe(profile, **dict(recipe_overrides or {})),
        seeds=[int(s) for s in seeds],
    )
    record["reached_auroc"] = {f: round(v, 4) for f, v in _finding_means(measured).items()}
    return record


def write_table(record: Mapping, folder: str | os.PathLike | None = None) -> Path:
    """Write ``record`` as ``phantom_difficulty_<condition>.json`` into ``folder`` (default:
    the package's reference data, where the renderer reads it)."""
    from . import artifacts

    file = reference.difficulty_file(record["condition"])
    folder = Path(str(file)).parent if folder is None else folder  # package data: a plain folder
    path = Path(folder) / file.name
    artifacts.write_json(path, dict(record))
    return path


def compare(record_or_condition: Mapping | str) -> pd.DataFrame:
    """Target beside reached AUROC, per finding, of a table (or a shipped condition)."""
    record = (
        reference.phantom_difficulty(record_or_condition)
        if isinstance(record_or_condition, str)
        else record_or_condition
    )
    rows = [
        {
            "finding": f,
            "strength": record["strength"][f],
            "target_auroc": record["target_auroc"][f],
            "reached_auroc": record["reached_auroc"][f],
        }
        for f in phantom.FINDINGS
    ]
    out = pd.DataFrame(rows)
    out["difference"] = out["reached_auroc"] - out["target_auroc"]
    return out
