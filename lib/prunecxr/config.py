"""Profiles (named parameter sets) and the run record ``run.json``.

A profile is a table of notebook parameters in ``profiles.toml``. ``default`` names every
key; every other profile inherits from it and names only what differs. Each notebook
declares the subset it uses in its ``parameters`` cell (:mod:`prunecxr.stages`), and the
runner passes each notebook exactly that subset.

``run.json`` (``docs/artifacts.md``) is written here and nowhere else:

- ``stages.<NN_name>``: the parameters, start and finish time of the last *successful*
  execution of each notebook (:func:`finish_stage`); ``parameters`` merges them, so it holds
  what the run's files were made with;
- ``running.<NN_name>``: an execution that started (:func:`start_stage`) and has not finished;
- ``failed.<NN_name>``: the last failed execution, with its parameters and error, kept apart
  until the notebook succeeds (:func:`fail_stage`);
- ``data``: what notebook 01 prepared (:func:`record_data`): the single source of what a
  run's data is. Later stages read it (:func:`run_data`, :func:`is_synthetic`), never a
  profile.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from . import artifacts, paths, provenance, runlock, stages

PROFILES_FILE = Path(__file__).with_name("profiles.toml")
#: the profile that names every key; the others inherit from it
BASE_PROFILE = "default"

#: Datasets whose pixels are synthetic; every figure and table made on them says so.
SYNTHETIC_DATASETS = frozenset({"nih-phantom"})

PHANTOM_NOTICE = (
    "PHANTOM IMAGES: real NIH ChestX-ray14 labels, synthetic pixels. "
    "Not evidence about real chest X-rays."
)


# =========================================================================================
# Profiles
# =========================================================================================
#: the one profile key that is not a notebook parameter: which notebooks ``make reproduce`` runs
#: (``"all"``, ``"01-07"``, ``"08"``; the ``--notebooks`` option wins)
NOTEBOOKS_KEY = "notebooks"


def profiles(path: str | Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    """Every profile, by name, resolved: ``default``'s values updated by the profile's own."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    if BASE_PROFILE not in data:
        raise ValueError(
            f"{path} has no [{BASE_PROFILE}] profile, which every other profile inherits from"
        )
    base = dict(data[BASE_PROFILE])
    out = {}
    for name, values in data.items():
        if not isinstance(values, dict):
            raise ValueError(f"{path}: {name!r} is not a table ([{name}]) of parameters")
        extra = sorted(set(values) - set(base))
        if extra:
            raise ValueError(
                f"{path}: profile [{name}] sets {extra}, which [{BASE_PROFILE}] does not name; "
                f"every key must have a default there"
            )
        out[name] = base | dict(values)
    return out


def profile_overrides(path: str | Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    """Every profile's own keys, as written in ``profiles.toml`` (what differs from ``default``)."""
    with open(path, "rb") as fh:
        return {name: dict(values) for name, values in tomllib.load(fh).items()}


def load_profile(name: str) -> dict[str, Any]:
    """The resolved parameters of profile ``name``."""
    table = profiles()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(table)}")
    return dict(table[name])


# =========================================================================================
# Provenance
# =========================================================================================
def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


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
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# =========================================================================================
# The run record
# =========================================================================================
read_run = artifacts.read_run


def _update_run(run: str, update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    rp = paths.run_paths(run)
    record = (
        artifacts.read_json(rp.run_json)
        if rp.run_json.exists()
        else {
            "run": run,
            "created": now(),
            "parameters": {},
            "stages": {},
        }
    )
    update(record)
    record["package_version"] = package_version()
    record["git_commit"] = git_commit()
    record["updated"] = now()
    artifacts.write_json(rp.run_json, record)
    return record


def init_run(run: str, *, profile: str | None) -> dict[str, Any]:
    """Record the profile a runner executes with. Parameters are recorded by each stage
    when it succeeds (:func:`finish_stage`), never from the profile."""

    def update(record):
        if profile is not None:
            record["profile"] = profile

    return _update_run(run, update)


def declared_parameters(stage: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values in ``namespace`` of the parameters that notebook ``stage`` declares.

    The notebook's ``parameters`` cell (in the checkout's ``notebooks/``) is the one place
    that names them; each value is checked against its declared type.
    """
    nb = stages.read_notebook(paths.notebooks_dir() / f"{stage}.ipynb")
    missing = [name for name in nb.parameters if name not in namespace]
    if missing:
        raise stages.ParameterError(
            f"notebook {stage} declares {missing} in its parameters cell, but they are not "
            "defined: run the parameters cell first"
        )
    return {
        name: p.check(namespace[name], source=f"notebook {stage}")
        for name, p in nb.parameters.items()
    }


def start_stage(stage: str, namespace: Mapping[str, Any]) -> paths.RunPaths:
    """Record that notebook ``stage`` starts; returns the run's paths.

    Call it from the notebook as ``px.start_stage("03_prune", globals())``: the values of
    the parameters the notebook declares are taken from its namespace and recorded under
    ``running.<stage>``. They become the run's parameters only when the stage succeeds
    (:func:`finish_stage`). Stages after ``01_data`` require the run to exist already.

    The stage holds the run's lock (:mod:`prunecxr.runlock`) until :func:`finish_stage`,
    unless the runner that started this kernel holds it; another process holding it is
    refused with :class:`prunecxr.runlock.RunLocked`.

    From here on the figures this process saves carry the stage, its parameters and the
    files it read (:mod:`prunecxr.provenance`).
    """
    params = declared_parameters(stage, namespace)
    run = params.pop(stages.RUN_PARAMETER)
    rp = paths.run_paths(run)
    if not stage.startswith("01") and not rp.run_json.exists():
        raise FileNotFoundError(
            f"{rp.run_json} does not exist: run notebook 01_data for run {run!r} first"
        )
    runlock.acquire(run)

    def update(record):
        record.setdefault("running", {})[stage] = {"parameters": params, "started": now()}

    record = _update_run(run, update)
    provenance.begin_stage(
        stage,
        run=run,
        parameters=params,
        package_version=record["package_version"],
        git_commit=record["git_commit"],
    )
    return rp


def finish_stage(stage: str, *, run: str) -> None:
    """Mark notebook ``stage`` of ``run`` as finished: its parameters become the run's."""

    def update(record):
        attempt = record.get("running", {}).pop(stage, None)
        if attempt is None:
            raise RuntimeError(
                f"run.json of run {run!r} has no started {stage}: call start_stage first"
            )
        record.setdefault("stages", {})[stage] = attempt | {"finished": now()}
        record.setdefault("parameters", {}).update(attempt["parameters"])
        record.get("failed", {}).pop(stage, None)
        for key in ("running", "failed"):
            if not record.get(key):
                record.pop(key, None)

    _update_run(run, update)
    runlock.release(run)


def stage_parameters(stage: str, *, run: str) -> dict[str, Any]:
    """The parameters notebook ``stage`` of ``run`` is running with, as :func:`start_stage`
    recorded them (``run.json["running"][stage]["parameters"]``, without ``run``).

    A stage's entry point (``px.train.run_stage(run)``) reads its options here, so a notebook
    passes the run name, not each of its parameters by hand.

    Raises
    ------
    RuntimeError
        When ``stage`` has not been started for ``run`` (call ``px.start_stage`` first).
    """
    attempt = read_run(run).get("running", {}).get(stage)
    if attempt is None:
        raise RuntimeError(
            f"run.json of run {run!r} has no running {stage}: start the stage first "
            f"(px.start_stage({stage!r}, globals()) in the notebook)"
        )
    return dict(attempt["parameters"])


def fail_stage(stage: str, *, run: str, error: str) -> None:
    """Record that notebook ``stage`` failed: its parameters go to ``failed.<stage>``, apart
    from the parameters the run's files were made with."""
    if not paths.run_paths(run).run_json.exists():
        return

    def update(record):
        attempt = record.get("running", {}).pop(stage, None) or {}
        record.setdefault("failed", {})[stage] = attempt | {"failed": now(), "error": error}
        if not record.get("running"):
            record.pop("running", None)

    _update_run(run, update)


def record_data(run: str, data: dict[str, Any]) -> dict[str, Any]:
    """Record what notebook 01 prepared: ``run.json["data"]`` (dataset, whether its pixels
    are synthetic, classes, image cache entries)."""
    if "dataset" not in data or "synthetic" not in data:
        raise ValueError("a data record names its 'dataset' and whether it is 'synthetic'")

    def update(record):
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


def _data_record(run: str) -> dict[str, Any]:
    path = paths.run_paths(run).run_json
    return (artifacts.read_json(path).get("data") or {}) if path.exists() else {}


def run_dataset(run: str) -> str:
    """The dataset a run's data was prepared from (``run.json["data"]["dataset"]``);
    ``"unknown"`` for a run without a data record."""
    return str(_data_record(run).get("dataset", "unknown"))


def is_synthetic(run: str) -> bool:
    """Whether the run's pixels are synthetic (the phantom), as its data record says.

    A run without a data record counts as real data: nothing is embedded and no phantom
    notice is given, the safe side for patient images.
    """
    return bool(_data_record(run).get("synthetic", False))


#: values of the ``embed_images`` parameter (notebooks 01 and 06)
EMBED_CHOICES = ("auto", "yes", "no")


def resolve_embed(embed_images, *, run: str) -> bool:
    """``embed_images`` as a bool: "auto" embeds for synthetic (phantom) runs only.

    Real chest X-rays stay out of notebooks and reports unless asked for ("yes"), because the
    datasets' use agreements restrict redistribution. What a run's data is comes from its
    data record (:func:`is_synthetic`), so a later stage run with another profile cannot
    relabel real images as phantom.
    """
    if isinstance(embed_images, bool):
        return embed_images
    if embed_images not in EMBED_CHOICES:
        raise ValueError(
            f"unknown embed_images {embed_images!r}; choose one of {list(EMBED_CHOICES)}"
        )
    if embed_images == "auto":
        return is_synthetic(run)
    return embed_images == "yes"
