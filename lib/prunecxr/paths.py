"""Every path of the project is built here, and nowhere else.

Layout (see ``ARTIFACTS.md`` and the README)::

    <home>/runs/<run>/...       run artifacts (git-ignored)
    <home>/figures/<run>/...    figures: interactive HTML, static PNG, plotted data CSV
    <home>/reports/<run>/...    executed notebooks and the HTML report
    <home>/cache/...            image caches, shared by runs (keyed by a manifest of their inputs)

``<home>`` is the environment variable ``PRUNECXR_HOME`` when set (tests point it at a
temporary folder), else the project checkout that holds this package.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "PRUNECXR_HOME"
CACHE_ENV = "PRUNECXR_CACHE"

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_METHOD_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def project_root() -> Path:
    """The checkout that holds ``lib/prunecxr`` (the package is installed editable)."""
    return Path(__file__).resolve().parents[2]


def home() -> Path:
    """Root of ``runs/``, ``figures/``, ``reports/`` and ``cache/``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser().resolve() if env else project_root()


def cache_root() -> Path:
    """Where image caches live: ``PRUNECXR_CACHE`` or ``<home>/cache``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else home() / "cache"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def check_run_name(run: str) -> str:
    if not isinstance(run, str) or not _RUN_NAME.match(run):
        raise ValueError(
            f"invalid run name {run!r}: use letters, digits, '.', '_' and '-' "
            "(it names folders under runs/, figures/ and reports/)"
        )
    return run


def check_method_name(method: str) -> str:
    if not isinstance(method, str) or not _METHOD_NAME.match(method):
        raise ValueError(f"invalid method name {method!r}")
    return method


@dataclass(frozen=True)
class RunPaths:
    """The files of one run, as fixed by ``ARTIFACTS.md``."""

    name: str
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "runs" / self.name

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def labels(self) -> Path:
        return self.root / "labels.parquet"

    # -- models ---------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.root / "models"

    def seed_dir(self, seed: int) -> Path:
        return self.models / f"seed-{int(seed)}"

    def checkpoint(self, seed: int) -> Path:
        """The selected (lowest validation loss) weights: a plain ``state_dict``."""
        return self.seed_dir(seed) / "model.pt"

    def history(self, seed: int) -> Path:
        return self.seed_dir(seed) / "history.csv"

    def train_state(self, seed: int) -> Path:
        """Resume point of an unfinished seed (removed once the seed is final)."""
        return self.seed_dir(seed) / "last.pt"

    # -- pruning --------------------------------------------------------------
    def prune_dir(self, method: str) -> Path:
        return self.root / "prune" / check_method_name(method)

    def probs(self, method: str) -> Path:
        return self.prune_dir(method) / "probs.npy"

    def prune_meta(self, method: str) -> Path:
        return self.prune_dir(method) / "meta.json"

    def metrics(self, method: str) -> Path:
        return self.prune_dir(method) / "metrics.parquet"

    # -- analyses -------------------------------------------------------------
    def analysis_dir(self, method: str) -> Path:
        return self.root / "analysis" / check_method_name(method)

    def forgettability(self, method: str) -> Path:
        return self.analysis_dir(method) / "forgettability.parquet"

    def class_summary(self, method: str) -> Path:
        return self.analysis_dir(method) / "class_summary.parquet"

    def pairs(self, method: str) -> Path:
        return self.analysis_dir(method) / "pairs.parquet"

    def pies(self, method: str) -> Path:
        return self.analysis_dir(method) / "pies.parquet"

    @property
    def reader_study(self) -> Path:
        return self.root / "reader_study"

    # -- products ---------------------------------------------------------------
    @property
    def figures(self) -> Path:
        return self.home / "figures" / self.name

    @property
    def reports(self) -> Path:
        return self.home / "reports" / self.name


def run_paths(run: str) -> RunPaths:
    """Paths of run ``run`` under :func:`home`."""
    return RunPaths(check_run_name(run), home())
