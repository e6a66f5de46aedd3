"""Every path of the project is built here, and nowhere else.

Layout (see ``docs/artifacts.md``)::

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
#: the one variable that points at real datasets when the ``data_root`` parameter is empty
DATA_ENV = "PRUNECXR_DATA"

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


def data_root(value: str | os.PathLike = "") -> Path:
    """The folder of real datasets: the ``data_root`` parameter, else ``PRUNECXR_DATA``.

    Raises FileNotFoundError (pointing to ``data_access.md``) when neither is set or the
    folder does not exist.
    """
    raw = str(value) if value else os.environ.get(DATA_ENV, "")
    if not raw:
        raise FileNotFoundError(
            f"no data directory: set the parameter data_root or the environment variable "
            f"{DATA_ENV} to the folder holding the dataset (see data_access.md)"
        )
    path = Path(raw).expanduser()
    if not path.is_dir():
        origin = "parameter data_root" if value else f"environment variable {DATA_ENV}"
        raise FileNotFoundError(
            f"data directory {path} ({origin}) does not exist; see data_access.md for how to "
            "obtain the data and where to put it"
        )
    return path


#: where the runner executes notebooks from, when not the checkout's ``notebooks/`` (set for
#: the kernels it starts, so that a stage reads its parameters cell from the notebook it runs)
NOTEBOOKS_ENV = "PRUNECXR_NOTEBOOKS"


def notebooks_dir() -> Path:
    """The pipeline's notebooks: ``PRUNECXR_NOTEBOOKS`` when set, else ``notebooks/``."""
    env = os.environ.get(NOTEBOOKS_ENV)
    return Path(env).expanduser().resolve() if env else project_root() / "notebooks"


#: the longest run name: it names folders, and file systems cap a name at 255 bytes
MAX_RUN_NAME = 100
#: the analyses that write ``analysis/<method>/intervals_<stage>.parquet``
INTERVAL_STAGES = ("overall", "forgetting", "cooccurrence", "pies")


def check_run_name(run: str) -> str:
    if not isinstance(run, str) or not _RUN_NAME.match(run):
        raise ValueError(
            f"invalid run name {run!r}: use letters, digits, '.', '_' and '-' "
            "(it names folders under runs/, figures/ and reports/)"
        )
    if len(run) > MAX_RUN_NAME:
        raise ValueError(
            f"run name {run[:40]!r}... is {len(run)} characters long; use at most {MAX_RUN_NAME} "
            "(it names folders under runs/, figures/ and reports/)"
        )
    return run


def check_method_name(method: str) -> str:
    if not isinstance(method, str) or not _METHOD_NAME.match(method):
        raise ValueError(f"invalid method name {method!r}")
    return method


@dataclass(frozen=True)
class RunPaths:
    """The files of one run, as fixed by ``docs/artifacts.md``."""

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

    @property
    def locations(self) -> Path:
        """Where the phantom drew each finding (``locations.parquet``, synthetic data only)."""
        return self.root / "locations.parquet"

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

    @property
    def train_config(self) -> Path:
        """The population's training configuration and plan (written by ``02_train``)."""
        return self.models / "train.json"

    # -- pruning --------------------------------------------------------------
    def prune_dir(self, method: str) -> Path:
        return self.root / "prune" / check_method_name(method)

    def probs(self, method: str) -> Path:
        return self.prune_dir(method) / "probs.npy"

    def prune_meta(self, method: str) -> Path:
        return self.prune_dir(method) / "meta.json"

    def metrics(self, method: str) -> Path:
        return self.prune_dir(method) / "metrics.parquet"

    def prune_work(self, method: str) -> Path:
        """Notebook 03's per-seed partial results and their provenance (not an artifact)."""
        return self.prune_dir(method) / "work"

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

    def paired_tests(self, method: str) -> Path:
        """Notebook 03's paired tests of Fig. 1, one row per level."""
        return self.analysis_dir(method) / "paired_tests.parquet"

    def first_drop_stability(self, method: str) -> Path:
        """Notebook 03's first significant level under seed resampling."""
        return self.analysis_dir(method) / "first_drop_stability.parquet"

    def dyadic_tests(self, method: str) -> Path:
        """Notebook 05's P values of Fig. 4 and Eq. 2 under each inference."""
        return self.analysis_dir(method) / "dyadic_tests.parquet"

    def intervals(self, method: str, stage: str) -> Path:
        """Bootstrap intervals of one analysis (``overall``, ``forgetting``, ``cooccurrence``, ``pies``)."""
        if stage not in INTERVAL_STAGES:
            raise ValueError(
                f"unknown interval stage {stage!r}; choose one of {list(INTERVAL_STAGES)}"
            )
        return self.analysis_dir(method) / f"intervals_{stage}.parquet"

    # -- notebook 09 (attend) -------------------------------------------------------
    @property
    def attend_dir(self) -> Path:
        """Notebook 09's tables (``attend/``)."""
        return self.root / "attend"

    def attend_table(self, name: str) -> Path:
        """``attend/<name>.parquet``: ``htl``, ``classification``, ``localization``, ``differences``,
        ``forgetting``."""
        return self.attend_dir / f"{check_method_name(name)}.parquet"

    @property
    def attend_branch(self) -> Path:
        """The arms' shared branch points: each seed's state after its plain first epoch
        (``attend/branch/seed-<s>-epoch-1.pt``, :class:`prunecxr.train.checkpoints.Branch`)."""
        return self.attend_dir / "branch"

    def attend_epoch(self, seed: int, epoch: int) -> Path:
        """An attended arm's record of the images it weighed in one epoch (0-based) of one seed."""
        return self.attend_dir / "work" / f"seed-{int(seed)}-epoch-{int(epoch)}.parquet"

    @property
    def deployment(self) -> Path:
        """Notebook 08's deployment table: measured size, MACs, latency and AP per method and level."""
        return self.root / "compression" / "deployment.parquet"

    @property
    def reader_study(self) -> Path:
        return self.root / "reader_study"

    def reader_packet(self, reader: str) -> Path:
        """The HTML form of one reader (``reader`` is an id such as ``reader-1``)."""
        return self.reader_study / "packets" / f"{reader}.html"

    @property
    def reader_key(self) -> Path:
        """Code → image id and PIE status; never given to readers."""
        return self.reader_study / "key.csv"

    @property
    def reader_manifest(self) -> Path:
        return self.reader_study / "study.json"

    @property
    def reader_responses(self) -> Path:
        """Where the readers' exported CSVs go (real answers only)."""
        return self.reader_study / "responses"

    @property
    def reader_simulated(self) -> Path:
        """Simulated answers, kept apart from real ones."""
        return self.reader_study / "simulated"

    @property
    def reader_answers(self) -> Path:
        return self.reader_study / "answers.parquet"

    @property
    def reader_tests(self) -> Path:
        return self.reader_study / "tests.parquet"

    @property
    def reader_stratified(self) -> Path:
        """Notebook 07's reader-adjusted tests."""
        return self.reader_study / "stratified_tests.parquet"

    # -- products ---------------------------------------------------------------
    @property
    def figures(self) -> Path:
        return self.home / "figures" / self.name

    @property
    def reports(self) -> Path:
        return self.home / "reports" / self.name

    @property
    def timings(self) -> Path:
        """The runner's record of each notebook's status and duration."""
        return self.reports / "timings.json"


def run_paths(run: str) -> RunPaths:
    """Paths of run ``run`` under :func:`home`."""
    return RunPaths(check_run_name(run), home())
