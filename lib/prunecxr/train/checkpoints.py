"""What training leaves on disk, and the checks that let it resume.

Files (``docs/artifacts.md``), per seed ``s`` under ``runs/<run>/models/seed-<s>/``:

``model.pt``
    the selected weights (lowest validation loss), a plain ``state_dict``; its presence
    marks the seed as final, and a final seed is skipped when training runs again;
``history.csv``
    one row per epoch (:data:`prunecxr.artifacts.HISTORY_COLUMNS`): ``epoch`` (1-based),
    ``train_loss``, ``val_loss``, ``val_mean_ap``, ``seconds`` (wall time of the epoch,
    validation included);
``last.pt``
    the resume point of an unfinished seed after each epoch: model, optimizer, data
    generator, early-stopping state, best weights so far and the history; removed once the
    seed is final.

A population trained beside another of the same seeds and recipe can start from a **branch
point** (:class:`Branch`): the resume point of a seed after its first ``epoch`` epochs, written
once to a shared folder by whichever population reaches it first and read by the others
(notebook 09's arms, whose first epoch is the same plain epoch, :mod:`prunecxr.attend.weights`).
A seed started from it continues exactly as a seed resumed from its own ``last.pt`` does.

``models/train.json`` (:func:`write_record`) records the recipe, the number of classes, the
image size, the class names and how the population was executed (``execution``:
``population``, ``threads``, ``workers``, ``device``, and with Ray ``gpus_per_model`` and
``nodes``). Training refuses to continue a
population with another recipe (:func:`check_meta`), or on another kind of device or with
another CPU thread count (:func:`check_execution`): both change the floating-point rounding,
and one population is trained one way.

Every file is written atomically and every checkpoint loads with ``torch.load(...,
weights_only=True)`` (:func:`prunecxr.inference.save_checkpoint`,
:func:`prunecxr.inference.load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import artifacts, inference, models, paths, runtime
from .recipe import EarlyStopping, TrainConfig

__all__ = [
    "STATE_FORMAT",
    "Branch",
    "SeedState",
    "check_execution",
    "check_meta",
    "derived_seed",
    "finalize",
    "initial_state",
    "read_branch",
    "read_record",
    "save_branch",
    "save_progress",
    "start_seed",
    "started_seeds",
    "to_cpu",
    "train_meta",
    "write_record",
]

#: version of the ``last.pt`` layout
STATE_FORMAT = 1
_START_OVER = "Use another run name, or delete the run's models/ folder to start over."


@dataclass
class SeedState:
    """One seed in training: its data generator, early stopping and records."""

    seed: int
    epoch: int  # epochs completed
    generator: torch.Generator
    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor] | None
    history: list[dict[str, float]]


def derived_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one ``purpose`` of seed ``seed`` (independent of torch's own streams)."""
    digest = hashlib.blake2b(f"prunecxr:{purpose}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def initial_state(config: TrainConfig, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """The initial weights of ``seed``: only the seed decides them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.create_model(config.model, num_classes, pretrained=config.pretrained)
    return model.state_dict()


def to_cpu(obj):
    """Contiguous CPU copies of every tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True).contiguous()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


# -- what a population is --------------------------------------------------------------------


def train_meta(
    config: TrainConfig, num_classes: int, image_shape: tuple[int, int]
) -> dict[str, Any]:
    """The facts every checkpoint of one population shares (saved in train.json and last.pt)."""
    return {
        "config": config.to_dict(),
        "num_classes": int(num_classes),
        "image_shape": list(image_shape),
    }


def check_meta(found: dict[str, Any], expected: dict[str, Any], where) -> None:
    """Refuse to continue ``where``'s population with another recipe or other data."""
    keys = ("config", "num_classes", "image_shape") + (
        ("attention",) if "attention" in {*found, *expected} else ()
    )
    for key in keys:
        old, new = found.get(key), expected.get(key)
        if key == "config" and isinstance(old, dict):
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            if diff:
                shown = ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items())
                raise ValueError(
                    f"{where} was trained with {shown}. A population is trained with one "
                    f"configuration. {_START_OVER}"
                )
        elif old != new:
            raise ValueError(
                f"{where} was trained with {key}={old!r}, this data has {new!r}. {_START_OVER}"
            )


def check_execution(record: dict[str, Any], execution: dict[str, Any], where) -> None:
    """Refuse to continue a population on another kind of device, in another precision or with
    another thread count.

    ``record`` is the population's ``train.json``; ``execution`` how this call would train.
    Both change the floating-point rounding, and training amplifies rounding into
    differences like those between seeds, so a population is trained one way.
    """
    old = record.get("execution")
    if not isinstance(old, dict) or "threads" not in old or "device" not in old:
        raise ValueError(
            f"{where} does not record the device and thread count its seeds were trained with "
            f"(written by an older prunecxr), so continuing them could mix roundings. {_START_OVER}"
        )
    old_type, new_type = torch.device(old["device"]).type, torch.device(execution["device"]).type
    if old_type != new_type:
        raise ValueError(
            f"{where}: the population was trained on {old['device']!r}, this call would train on "
            f"{execution['device']!r}, which rounds differently. Set device = {old['device']!r}. "
            f"{_START_OVER}"
        )
    old_precision = old.get(
        "precision", "bf16" if old_type == "cuda" else "fp32"
    )  # before it was recorded
    if old_precision != execution["precision"]:
        raise ValueError(
            f"{where}: the population was trained in {old_precision}, this call would train in "
            f"{execution['precision']} (precision 'auto' is bf16 where the hardware computes it "
            f"natively). Set precision = {old_precision!r}. {_START_OVER}"
        )
    if old["threads"] != execution["threads"]:
        here = runtime.usable_cores()
        raise ValueError(
            f"{where}: the population was trained with threads={old['threads']} (CPU threads per "
            f"model), this call asks for threads={execution['threads']} (0 means all {here} usable "
            "cores here). The thread count changes the floating-point rounding, so a population "
            f"is trained with one count: set threads = {old['threads']}. {_START_OVER}"
        )


def started_seeds(run: str) -> list[int]:
    """The seeds of ``run`` with a final checkpoint or a resume point, sorted."""
    rp = paths.run_paths(run)
    return [
        s
        for s in artifacts.seed_dirs(run)
        if rp.checkpoint(s).exists() or rp.train_state(s).exists()
    ]


def read_record(run: str) -> dict[str, Any] | None:
    """``models/train.json`` of ``run``, or None before training first wrote it."""
    if not paths.run_paths(run).train_config.exists():
        return None
    return artifacts.read_train_record(run)


def write_record(
    run: str, meta: dict[str, Any], *, classes: list[str] | None, execution: dict[str, Any]
) -> None:
    """Write ``models/train.json``: ``meta`` (:func:`train_meta`), ``classes``, ``execution``."""
    artifacts.write_json(
        paths.run_paths(run).train_config, {**meta, "classes": classes, "execution": execution}
    )


# -- one seed's files ------------------------------------------------------------------------


def start_seed(
    seed: int,
    rp: paths.RunPaths,
    meta: dict[str, Any],
    config: TrainConfig,
    *,
    branch_state: dict[str, Any] | None = None,
):
    """``(SeedState, model state, optimizer state or None)`` from ``last.pt``, else from
    ``branch_state`` (:func:`read_branch`), else a fresh start."""
    state_path = rp.train_state(seed)
    artifacts.remove_stale_temporaries(rp.seed_dir(seed))
    if state_path.exists():
        saved = inference.load_checkpoint(state_path)
        if (
            not isinstance(saved, dict)
            or saved.get("format") != STATE_FORMAT
            or saved.get("seed") != seed
        ):
            raise ValueError(
                f"{state_path} is not a training state of seed {seed} (format {STATE_FORMAT})"
            )
        check_meta(saved, meta, state_path)
        return _continued(saved, config)
    if branch_state is not None:
        return _continued(branch_state, config)
    state = initial_state(config, meta["num_classes"], seed)
    gen = torch.Generator().manual_seed(derived_seed(seed, "data"))
    record = SeedState(
        seed=seed,
        epoch=0,
        generator=gen,
        stopper=EarlyStopping(config.patience),
        best_state=None,
        history=[],
    )
    return record, state, None


def _continued(saved: dict[str, Any], config: TrainConfig):
    gen = torch.Generator()
    gen.set_state(saved["generator"])
    stopper = EarlyStopping(config.patience)
    stopper.load_state_dict(saved["early_stopping"])
    record = SeedState(
        seed=int(saved["seed"]),
        epoch=int(saved["epoch"]),
        generator=gen,
        stopper=stopper,
        best_state=saved["best_model"],
        history=list(saved["history"]),
    )
    return record, saved["model"], saved["optimizer"]


def _resume_point(rec: SeedState, model_state, optim_state, meta: dict[str, Any]) -> dict:
    return {
        "format": STATE_FORMAT,
        "seed": rec.seed,
        "epoch": rec.epoch,
        **meta,
        "model": model_state,
        "optimizer": optim_state,
        "generator": rec.generator.get_state(),
        "early_stopping": rec.stopper.state_dict(),
        "best_model": rec.best_state,
        "history": rec.history,
    }


def save_progress(
    rp: paths.RunPaths, rec: SeedState, model_state, optim_state, meta: dict[str, Any]
) -> None:
    """Write the seed's resume point ``last.pt`` and its ``history.csv`` so far."""
    inference.save_checkpoint(
        rp.train_state(rec.seed), _resume_point(rec, model_state, optim_state, meta)
    )
    artifacts.write_history(rp.history(rec.seed), rec.history)


def finalize(rp: paths.RunPaths, rec: SeedState) -> None:
    """Write the seed's ``history.csv`` and ``model.pt`` (the best weights), drop ``last.pt``."""
    if rec.best_state is None:
        raise RuntimeError(
            f"seed {rec.seed}: the validation loss was never finite in {rec.epoch} epochs "
            "(training diverged); lower lr or check the data"
        )
    artifacts.write_history(rp.history(rec.seed), rec.history)
    inference.save_checkpoint(rp.checkpoint(rec.seed), rec.best_state)
    rp.train_state(rec.seed).unlink(missing_ok=True)


# -- branch points ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Branch:
    """Where populations of the same seeds share the resume point after epoch ``epoch``.

    ``folder`` holds one file per seed (:meth:`path`). ``execution`` is set by
    :func:`prunecxr.train.fit_population` to the device type, thread count and precision of
    the call: a branch point made another way rounds differently, so it is not used (the
    seed trains its first epochs itself and writes the branch point anew).
    """

    folder: Path
    epoch: int = 1
    execution: tuple = ()

    def __post_init__(self):
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 1:
            raise ValueError(f"a branch point's epoch must be a positive int; got {self.epoch!r}")

    def path(self, seed: int) -> Path:
        return Path(self.folder) / f"seed-{int(seed)}-epoch-{self.epoch}.pt"

    def made_by(self, execution: dict[str, Any]) -> Branch:
        """This branch for a call that trains as ``execution`` (``train.json``'s record)."""
        key = (
            torch.device(execution["device"]).type,
            execution["threads"],
            execution["precision"],
        )
        return dataclasses.replace(self, execution=key)


def _shared_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """What every population sharing a branch point has in common: ``meta`` without its
    ``attention`` (the arms differ in it, from the branch point on)."""
    return {k: v for k, v in meta.items() if k != "attention"}


def read_branch(branch: Branch, seed: int, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The branch point of ``seed``, or None when there is none or it was made with another
    recipe, data or execution than ``meta`` and ``branch.execution`` say."""
    path = branch.path(seed)
    if not path.exists():
        return None
    saved = inference.load_checkpoint(path)
    if (
        not isinstance(saved, dict)
        or saved.get("format") != STATE_FORMAT
        or saved.get("seed") != seed
        or saved.get("epoch") != branch.epoch
        or tuple(saved.get("execution", ())) != tuple(branch.execution)
    ):
        return None
    try:
        check_meta(saved, _shared_meta(meta), path)
    except ValueError:
        return None
    return saved


def save_branch(
    branch: Branch, rec: SeedState, model_state, optim_state, meta: dict[str, Any]
) -> None:
    """Write ``rec``'s resume point (after epoch ``branch.epoch``) as the branch point of its seed."""
    if rec.epoch != branch.epoch or not branch.execution:
        raise ValueError(
            f"seed {rec.seed}: a branch point is the state after epoch {branch.epoch} of a call "
            f"whose execution is known; got epoch {rec.epoch}"
        )
    point = _resume_point(rec, model_state, optim_state, _shared_meta(meta))
    point["execution"] = list(branch.execution)
    inference.save_checkpoint(branch.path(rec.seed), point)
