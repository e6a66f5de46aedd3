"""Profiles (named parameter sets) and the run record ``run.json``.

A profile is a flat table of notebook parameters in ``profiles.toml``; each notebook
declares the subset it uses in its ``parameters`` cell, and the runner passes each notebook
exactly that subset. ``run.json`` records the resolved parameters of every stage that ran,
with the package version, the git commit and timestamps.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from . import io, paths

PROFILES_FILE = Path(__file__).with_name("profiles.toml")

#: Datasets whose pixels are synthetic; every figure and table made on them says so.
SYNTHETIC_DATASETS = frozenset({"nih-phantom"})

PHANTOM_NOTICE = (
    "PHANTOM IMAGES: real NIH ChestX-ray14 labels, synthetic pixels. "
    "Not evidence about real chest X-rays."
)


def profiles() -> dict[str, dict[str, Any]]:
    """All profiles, by name, from ``profiles.toml``."""
    with open(PROFILES_FILE, "rb") as fh:
        data = tomllib.load(fh)
    return {name: dict(values) for name, values in data.items()}


def load_profile(name: str) -> dict[str, Any]:
    """The parameters of profile ``name``."""
    table = profiles()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(table)}")
    return dict(table[name])


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_version() -> str:
    try:
        return metadata.version("prunecxr")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when it has uncommitted changes."""
    root = paths.project_root()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def read_run(run: str) -> dict[str, Any]:
    """The run record of ``run`` (``runs/<run>/run.json``)."""
    path = paths.run_paths(run).run_json
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 01_data for run {run!r} first")
    return io.read_json(path)


def _update_run(run: str, update) -> dict[str, Any]:
    rp = paths.run_paths(run)
    record = io.read_json(rp.run_json) if rp.run_json.exists() else {
        "run": run,
        "created": now(),
        "parameters": {},
        "stages": {},
    }
    update(record)
    record["package_version"] = package_version()
    record["git_commit"] = git_commit()
    record["updated"] = now()
    io.write_json(rp.run_json, record)
    return record


def init_run(run: str, *, profile: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """Record the profile and resolved parameters a runner is about to execute with."""

    def update(record):
        if profile is not None:
            record["profile"] = profile
        record.setdefault("parameters", {}).update(parameters)

    return _update_run(run, update)


def start_stage(stage: str, *, run: str, params: dict[str, Any]) -> paths.RunPaths:
    """Record that notebook ``stage`` starts with ``params``; returns the run's paths.

    Stages after ``01_data`` require the run to exist already.
    """
    rp = paths.run_paths(run)
    if not stage.startswith("01") and not rp.run_json.exists():
        raise FileNotFoundError(
            f"{rp.run_json} does not exist: run notebook 01_data for run {run!r} first"
        )

    def update(record):
        record.setdefault("parameters", {}).update(params)
        record.setdefault("stages", {})[stage] = {
            "parameters": params,
            "started": now(),
            "finished": None,
        }

    _update_run(run, update)
    return rp


def finish_stage(stage: str, *, run: str) -> None:
    """Mark notebook ``stage`` of ``run`` as finished."""

    def update(record):
        record.setdefault("stages", {}).setdefault(stage, {})["finished"] = now()

    _update_run(run, update)


def record_data(run: str, data: dict[str, Any], *, parameters: dict[str, Any]) -> dict[str, Any]:
    """Record what notebook 01 prepared: ``run.json["data"]`` (dataset, classes, image
    cache entries) and the data parameters it was prepared with."""

    def update(record):
        record.setdefault("parameters", {}).update(parameters)
        record["data"] = data

    return _update_run(run, update)


def run_data(run: str) -> dict[str, Any]:
    """``run.json["data"]``: the dataset, classes and image cache of ``run``."""
    record = read_run(run)
    if "data" not in record:
        raise FileNotFoundError(
            f"run {run!r} has no prepared data in {paths.run_paths(run).run_json}: "
            "run notebook 01_data first"
        )
    return record["data"]


def run_dataset(run: str) -> str:
    """The dataset name a run was made from (recorded by notebook 01)."""
    return read_run(run).get("parameters", {}).get("dataset", "unknown")


def is_synthetic(run: str) -> bool:
    """Whether the run's pixels are synthetic (the phantom)."""
    return run_dataset(run) in SYNTHETIC_DATASETS


#: values of the ``embed_images`` parameter (notebooks 01 and 06)
EMBED_CHOICES = ("auto", "yes", "no")


def resolve_embed(embed_images, *, run: str) -> bool:
    """``embed_images`` as a bool: "auto" embeds for synthetic (phantom) runs only.

    Real chest X-rays stay out of notebooks and reports unless asked for ("yes"), because the
    datasets' use agreements restrict redistribution.
    """
    if isinstance(embed_images, bool):
        return embed_images
    if embed_images not in EMBED_CHOICES:
        raise ValueError(f"unknown embed_images {embed_images!r}; choose one of {list(EMBED_CHOICES)}")
    if embed_images == "auto":
        return is_synthetic(run)
    return embed_images == "yes"
