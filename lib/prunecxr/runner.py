"""Run the notebooks 01 → 07 with papermill: the engine behind ``make reproduce``.

``python -m prunecxr run`` (and :func:`run_notebooks`) resolves a profile of
``profiles.toml`` plus command-line overrides, checks every key against the parameters the
notebooks declare, records the resolved parameters in ``runs/<run>/run.json``, executes the
selected notebooks in order into ``reports/<run>/<nb>.ipynb``, exports each to HTML and
finally builds the run's report (``reports/<run>/index.html``).

Parameters are declared by each notebook in its first code cell, tagged ``parameters``, as
literals with a type and a comment::

    run: str = "default"  # names runs/<run>/, figures/<run>/ and reports/<run>/
    n_seeds: int = 10  # models in the population

Each notebook receives exactly the subset of (profile ∪ overrides) it declares. A key that
no notebook declares is refused, as is a value of the wrong type: papermill itself only
warns, and a typo would silently run with the defaults.

The first failing notebook stops the run (:class:`NotebookFailed` names the notebook, the
cell and the error; the partial notebook stays in ``reports/<run>/<nb>.failed.ipynb``).
Running again continues: the stages themselves skip work that is already finished.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import nbformat

from . import artifacts, config, console, events, paths, runlock, runtime
from .stages import (
    RUN_PARAMETER,
    Notebook,
    Parameter,
    ParameterError,
    conform,
    discover_notebooks,
    select_notebooks,
)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class NotebookFailed(RuntimeError):
    """A notebook raised while it ran; the run stopped there.

    Attributes
    ----------
    notebook : str
        The notebook's name (``03_prune``).
    cell_index : int or None
        0-based position of the failing cell in the stored notebook (``nb.cells[i]``).
    execution_count : int or None
        The ``In [n]`` number of the failing cell in the executed notebook.
    ename, evalue : str
        The exception's type and message.
    traceback : list of str
        The traceback lines, ANSI colours removed.
    source : str
        The failing cell's code.
    output : Path or None
        The partially executed notebook (``reports/<run>/<nb>.failed.ipynb``).
    """

    def __init__(
        self,
        notebook: str,
        *,
        cell_index: int | None,
        execution_count: int | None,
        ename: str,
        evalue: str,
        traceback: Sequence[str] = (),
        source: str = "",
        output: Path | None = None,
    ):
        self.notebook = notebook
        self.cell_index = cell_index
        self.execution_count = execution_count
        self.ename = ename
        self.evalue = evalue
        self.traceback = [_ANSI.sub("", line) for line in traceback]
        self.source = source
        self.output = output
        self.notes: list[str] = []
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: notebook, cell and error."""
        where = f"cell {self.cell_index}" if self.cell_index is not None else "an unknown cell"
        if self.execution_count is not None:
            where += f" (In [{self.execution_count}])"
        return f"notebook {self.notebook} failed in {where}: {self.ename}: {self.evalue}"

    def describe(self, *, tail: int = 25) -> str:
        """The summary, the failing cell's first lines, the traceback's last ``tail`` lines."""
        lines = [self.summary()]
        if self.source:
            code = self.source.strip().splitlines()
            shown = code[:6] + (["    ..."] if len(code) > 6 else [])
            lines += ["", "failing cell:"] + [f"    {line}" for line in shown]
        tb = "\n".join(self.traceback).splitlines()
        if tb:
            lines += ["", "traceback (last lines):"] + tb[-tail:]
        if self.output is not None:
            lines += ["", f"partially executed notebook: {self.output}"]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def parse_value(text: str) -> Any:
    """An override's value: a Python or TOML literal, else the text itself (a bare string).

    ``"3"`` → 3, ``"1e-3"`` → 0.001, ``"true"``/``"True"`` → True, ``"['a','b']"`` → list,
    ``"nih-cxr-lt"`` → ``"nih-cxr-lt"``.
    """
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, str]:
    """Split ``key=value`` (the value stays text until its declared type is known)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ParameterError(f"override {item!r} is not key=value (e.g. -p n_seeds=3)")
    return key, value


def _coerce_override(key: str, text: str, declared: Parameter, *, notebook: str) -> Any:
    """The override text as a value of the declared type (a str parameter takes bare text)."""
    value = parse_value(text)
    ok, out = conform(value, declared._type_node(), declared.default)
    if ok:
        return out
    ok, out = conform(text.strip(), declared._type_node(), declared.default)
    if ok:  # e.g. data_root=1999 for a str parameter: keep the text
        return out
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):  # [global_l1,random]: quotes lost to a shell
        items = [parse_value(item) for item in inner[1:-1].split(",") if item.strip()]
        ok, out = conform(items, declared._type_node(), declared.default)
        if ok:
            return out
    raise ParameterError(
        f"override {key}={text} does not match the type {declared.type_name} that notebook "
        f"{notebook} declares for {key!r} (e.g. -p {key}={declared.default!r})"
    )


def _declarers(key: str, notebooks: Iterable[Notebook]) -> list[Notebook]:
    return [nb for nb in notebooks if key in nb.parameters]


def _unknown(key: str, *, source: str, selected, everyone) -> ParameterError:
    declared = sorted({k for nb in everyone for k in nb.parameters})
    names = ", ".join(nb.name for nb in selected)
    elsewhere = [nb.name for nb in _declarers(key, everyone)]
    if elsewhere:
        hint = f"it is declared by {', '.join(elsewhere)}, which is not selected"
    else:
        close = difflib.get_close_matches(key, declared, n=3)
        hint = (
            f"did you mean {' or '.join(map(repr, close))}?"
            if close
            else (f"declared parameters: {', '.join(declared)}")
        )
    scope = (
        "no notebook declares it (notebooks"
        if selected is everyone
        else ("no selected notebook declares it (selected")
    )
    return ParameterError(f"unknown parameter {key!r} ({source}): {scope}: {names}); {hint}")


def resolve_parameters(
    profile_values: Mapping[str, Any],
    overrides: Mapping[str, str] | Sequence[str] = (),
    *,
    selected: Sequence[Notebook],
    notebooks: Sequence[Notebook],
    profile: str = "profile",
    run: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The run name and the resolved parameters: the profile, then the overrides.

    Parameters
    ----------
    profile_values : the profile's table (``config.load_profile``).
    overrides : ``key=value`` texts, or a mapping key → text; checked against ``selected``.
    selected : the notebooks about to run.
    notebooks : all notebooks; every profile key must be declared by one of them.
    profile : the profile's name, for messages.
    run : the run name (``--run``); default the ``run`` override, else the profile's.

    Raises
    ------
    ParameterError
        A key no notebook declares (naming the key and the notebooks), a value of the wrong
        type (naming the notebook that declares it), or a ``--run`` that contradicts ``-p run=``.
    """
    if not isinstance(overrides, Mapping):
        pairs = [parse_override(item) for item in overrides]
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ParameterError(f"override(s) given twice: {', '.join(repeated)}")
        overrides = dict(pairs)

    resolved: dict[str, Any] = {}
    for key, value in profile_values.items():
        owners = _declarers(key, notebooks)
        if not owners:
            raise _unknown(
                key, source=f"profile {profile!r}", selected=notebooks, everyone=notebooks
            )
        for nb in owners:
            value = nb.parameters[key].check(value, source=f"profile {profile!r} ({nb.name})")
        resolved[key] = value

    for key, text in overrides.items():
        owners = _declarers(key, selected)
        if not owners:
            raise _unknown(
                key, source=f"override {key}={text}", selected=selected, everyone=notebooks
            )
        value = _coerce_override(key, text, owners[0].parameters[key], notebook=owners[0].name)
        for nb in owners[1:]:
            value = nb.parameters[key].check(value, source=f"override {key}={text} ({nb.name})")
        resolved[key] = value

    if run is not None:
        if RUN_PARAMETER in overrides and resolved[RUN_PARAMETER] != run:
            raise ParameterError(
                f"--run {run!r} contradicts -p run={overrides[RUN_PARAMETER]}; give one of them"
            )
        resolved[RUN_PARAMETER] = run
    if RUN_PARAMETER not in resolved:
        raise ParameterError(f"profile {profile!r} has no 'run' and no --run was given")
    paths.check_run_name(resolved[RUN_PARAMETER])
    return resolved[RUN_PARAMETER], resolved


def notebook_parameters(nb: Notebook, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``resolved`` that ``nb`` declares."""
    return {k: resolved[k] for k in nb.parameters if k in resolved}


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


@dataclass
class NotebookRun:
    """The outcome of one notebook."""

    name: str
    status: str  # "ok" | "failed"
    seconds: float
    ipynb: Path
    html: Path | None = None
    external_resources: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """What :func:`run_notebooks` did."""

    run: str
    profile: str
    parameters: dict[str, Any]
    notebooks: list[NotebookRun]
    report: Path | None = None


def _record_timing(run: str, name: str, entry: dict[str, Any]) -> None:
    timings = artifacts.read_timings(run)
    timings[name] = entry
    artifacts.write_json(paths.run_paths(run).timings, dict(sorted(timings.items())))


def _source_cell_index(nb: Notebook, err) -> int | None:
    """Map papermill's index (in the executed notebook, after its injected cell) back."""
    index = err.cell_index
    if index is None:
        return None
    stored = nbformat.read(nb.path, as_version=4).cells
    guess = index - 1 if index > nb.parameters_cell else index
    if 0 <= guess < len(stored) and stored[guess].source == err.source:
        return guess
    matches = [i for i, c in enumerate(stored) if c.source == err.source]
    return matches[0] if len(matches) == 1 else guess


class _DropPapermillInspection(logging.Filter):
    """papermill re-inspects the parameters cell with a line parser of its own, which
    misreads a comment holding an '=' and then warns that a declared parameter is
    unknown. The runner has already checked every parameter against the cell's syntax
    tree, so those two warnings are noise, and misleading."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


@contextlib.contextmanager
def _quiet_papermill_inspection():
    loggers = [logging.getLogger("papermill"), logging.getLogger("papermill.translators")]
    drop = _DropPapermillInspection()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@contextlib.contextmanager
def _kernel_env(values: Mapping[str, str]):
    """Environment variables for the kernels started inside the block: which notebooks they
    run (``paths.NOTEBOOKS_ENV``, so ``start_stage`` reads the parameters cell of the
    notebook being executed) and that this process holds the run's lock."""
    with runtime.environment(values):
        yield


def kernel_config(*, sockets: Path, kernel_log: bool = False):
    """The configuration of papermill's notebook client and kernel manager (papermill
    passes it to nbclient, which passes it to the manager it creates).

    - IPC transport: the kernel's sockets are files only this user can open, instead of TCP
      ports that carry code and outputs unencrypted (ipykernel warns about those on every
      start). They are ``<sockets>/kernel-<n>``, in a folder of this execution's own
      (:func:`execute_notebook` makes it): jupyter_client's default, ``kernel-ipc-<n>`` in the
      working directory, numbers the files by which exist, so two kernels started at the same
      moment in one folder (two runs, or two test processes) could take the same sockets and
      read each other's messages ("Invalid Signature").
    - Unless ``kernel_log``, the kernel application's own log is kept to critical messages:
      it writes to the runner's console, and what it says there asks nothing of the user
      (a ``KeyboardInterrupt caught in kernel`` when jupyter_client interrupts the kernel
      as it shuts it down, whatever the kernel is doing). A cell's errors and warnings are in
      the executed notebook; a kernel that dies fails the notebook.
    """
    from traitlets.config import Config

    config = {"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}}
    if not kernel_log:
        config["NotebookClient"] = {"extra_arguments": ["--IPKernelApp.log_level=CRITICAL"]}
    return Config(config)


def progress_file(run: str, notebook: str) -> Path:
    """The progress events file of ``notebook`` while the runner executes it (hidden; it is
    removed when the notebook ends)."""
    return paths.run_paths(run).reports / f".{notebook}.progress.jsonl"


#: free space below which a dead kernel is reported together with the disk's state
LOW_DISK_BYTES = 64 << 20


def _low_disk_notes() -> list[str]:
    """Why a kernel may have died: a nearly full disk under the run's folders (a write to a
    memory-mapped file on a full disk kills the process with SIGBUS, before Python can say
    anything)."""
    notes, seen = [], set()
    for folder in dict.fromkeys((paths.home(), paths.cache_root())):
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        device = probe.stat().st_dev
        free = shutil.disk_usage(probe).free
        if free < LOW_DISK_BYTES and device not in seen:
            seen.add(device)
            notes.append(
                f"the disk holding {folder} has only {free // 1024} KiB free: a full disk "
                "kills the kernel; free space and run the same command again"
            )
    return notes


def execute_notebook(
    nb: Notebook,
    *,
    run: str,
    parameters: Mapping[str, Any],
    kernel: str = "python3",
    log_output: bool = False,
    export_html: bool = True,
    progress: str = "off",
    label: str | None = None,
    stream: TextIO | None = None,
) -> NotebookRun:
    """Execute ``nb`` into ``reports/<run>/<nb>.ipynb`` and export it to ``<nb>.html``.

    The notebook executes into a hidden file that is renamed when it finishes, so
    ``<nb>.ipynb`` is always a complete run. On failure it is renamed ``<nb>.failed.ipynb``.

    The kernel talks to papermill over IPC sockets (files only this user can open) rather
    than unencrypted TCP, the transport ipykernel warns about. Its progress events
    (:mod:`prunecxr.events`) go to ``reports/<run>/.<nb>.progress.jsonl``, which
    ``progress`` (a mode of :class:`prunecxr.console.LiveProgress`; ``label`` names the
    notebook there, ``stream`` is where the line goes, stdout by default) follows.

    Raises
    ------
    NotebookFailed
        When a cell raises (or the kernel dies).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    reports = paths.run_paths(run).reports
    reports.mkdir(parents=True, exist_ok=True)
    final = reports / f"{nb.name}.ipynb"
    failed = reports / f"{nb.name}.failed.ipynb"
    partial = reports / f".{nb.name}.running.ipynb"
    events_file = progress_file(run, nb.name)
    events_file.unlink(missing_ok=True)
    started, t0 = config.now(), time.perf_counter()
    entry = {"started": started, "parameters": dict(parameters)}
    try:
        kernel_env = {
            paths.NOTEBOOKS_ENV: str(nb.path.parent.resolve()),
            **runlock.holder_env(run),
            events.PROGRESS_ENV: str(events_file),
        }
        live = console.LiveProgress(
            label or nb.name,
            events_file,
            mode=progress,
            stream=stream if stream is not None else sys.stdout,
        )
        with (
            _quiet_papermill_inspection(),
            _kernel_env(kernel_env),
            live,
            tempfile.TemporaryDirectory(prefix="prunecxr-kernel-") as sockets,
        ):
            papermill.execute_notebook(
                str(nb.path),
                str(partial),
                parameters=dict(parameters),
                kernel_name=kernel,
                cwd=str(nb.path.parent),
                progress_bar=False,
                stdout_file=sys.stdout if log_output else None,
                stderr_file=sys.stderr if log_output else None,
                config=kernel_config(sockets=Path(sockets), kernel_log=log_output),
            )
    except BaseException as err:
        seconds = time.perf_counter() - t0
        if not isinstance(err, Exception):
            raise  # KeyboardInterrupt: stop, keeping the partial notebook
        if isinstance(err, PapermillExecutionError):
            failure = NotebookFailed(
                nb.name,
                cell_index=_source_cell_index(nb, err),
                execution_count=err.exec_count,
                ename=err.ename,
                evalue=err.evalue,
                traceback=err.traceback,
                source=err.source,
            )
        else:  # a dead kernel, a timeout, a kernel that will not start, a full disk
            failure = NotebookFailed(
                nb.name,
                cell_index=None,
                execution_count=None,
                ename=type(err).__name__,
                evalue=str(err),
            )
        if failure.ename == "DeadKernelError":
            failure.notes += _low_disk_notes()
        # Record the failure; when that fails too (a full disk), the first error is the one
        # to report, with a note, never the second one's traceback.
        try:
            if partial.exists():
                os.replace(partial, failed)
                failure.output = failed
            _record_timing(
                run,
                nb.name,
                entry
                | {
                    "status": "failed",
                    "seconds": round(seconds, 2),
                    "finished": config.now(),
                },
            )
            config.fail_stage(nb.name, run=run, error=f"{failure.ename}: {failure.evalue}")
        except OSError as second:
            failure.notes.append(f"the failure could not be recorded either: {second}")
        raise failure from (None if isinstance(err, PapermillExecutionError) else err)
    finally:
        events_file.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    os.replace(partial, final)
    failed.unlink(missing_ok=True)
    result = NotebookRun(nb.name, "ok", seconds, final)
    if export_html:
        from . import report

        t1 = time.perf_counter()
        result.html, result.external_resources = report.export_notebook(final)
        entry["export_seconds"] = round(time.perf_counter() - t1, 2)
    _record_timing(
        run,
        nb.name,
        entry
        | {
            "status": "ok",
            "seconds": round(seconds, 2),
            "finished": config.now(),
        },
    )
    return result


def run_notebooks(
    *,
    profile: str = "default",
    run: str | None = None,
    notebooks: str | None = None,
    overrides: Mapping[str, str] | Sequence[str] = (),
    notebooks_dir: str | os.PathLike | None = None,
    profile_values: Mapping[str, Any] | None = None,
    kernel: str = "python3",
    report: bool = True,
    log_output: bool = False,
    echo: Callable[[str], None] = print,
    progress: str = "off",
) -> RunResult:
    """Execute the selected notebooks in order; stop at the first failure.

    Parameters
    ----------
    profile : a profile of ``profiles.toml``.
    run : the run name; default the ``run`` override, else the profile's ``run``.
    notebooks : which notebooks (see :func:`select_notebooks`); default the profile's
        ``notebooks`` key (:data:`prunecxr.config.NOTEBOOKS_KEY`), else all.
    overrides : ``key=value`` texts (``["n_seeds=3", "methods=['global_l1']"]``).
    notebooks_dir : where the notebooks are; default ``notebooks/`` of the checkout.
    profile_values : the profile's parameters, to use instead of ``profiles.toml`` (tests).
    kernel : the Jupyter kernel to execute with.
    report : build ``reports/<run>/index.html`` at the end.
    log_output : stream the notebooks' outputs to this process's stdout/stderr.
    echo : where the runner's lines go (a notebook started, finished).
    progress : the live progress line of each notebook (:class:`prunecxr.console.LiveProgress`):
        ``"auto"`` (redrawn in place on a terminal, a line every 10 s elsewhere), ``"line"``,
        ``"log"`` or ``"off"`` (the default here; ``python -m prunecxr run`` shows it).

    Raises
    ------
    ParameterError, NotebookError
        Before anything runs.
    NotebookFailed
        When a notebook fails; the notebooks before it are complete.
    """
    all_nbs = discover_notebooks(notebooks_dir)
    values = dict(profile_values) if profile_values is not None else config.load_profile(profile)
    chosen = values.pop(config.NOTEBOOKS_KEY, None)
    selected = select_notebooks(notebooks if notebooks is not None else chosen, all_nbs)
    run_name, resolved = resolve_parameters(
        values, overrides, selected=selected, notebooks=all_nbs, profile=profile, run=run
    )
    rp = paths.run_paths(run_name)
    runlock.acquire(run_name)
    try:
        if rp.run_json.exists():
            previous = artifacts.read_json(rp.run_json).get("profile")
            if previous is not None and previous != profile:
                echo(
                    f"warning: run {run_name!r} was made with profile {previous!r}; "
                    f"now running with {profile!r}"
                )
        removed = remove_leftovers(run_name)
        if removed:
            echo(f"removed {removed} temporary file(s) that an interrupted run left behind")
        config.init_run(run_name, profile=profile)

        echo(f"run {run_name!r} (profile {profile!r}): {', '.join(nb.name for nb in selected)}")
        done: list[NotebookRun] = []
        for i, nb in enumerate(selected, 1):
            echo(f"[{i}/{len(selected)}] {nb.name} ...")
            result = execute_notebook(
                nb,
                run=run_name,
                parameters=notebook_parameters(nb, resolved),
                kernel=kernel,
                log_output=log_output,
                progress=progress,
                label=f"[{i}/{len(selected)}] {nb.name}",
            )
            done.append(result)
            extra = f", HTML {result.html.name}" if result.html else ""
            echo(f"[{i}/{len(selected)}] {nb.name} finished in {result.seconds:.1f} s{extra}")
            for url in result.external_resources:
                echo(f"warning: {result.html.name} refers to an external resource: {url}")
        out = RunResult(run_name, profile, resolved, done)
        if report:
            from . import report as _report

            out.report = _report.build_report(run_name, notebooks_dir=notebooks_dir)
            echo(f"report: {out.report}")
        return out
    finally:
        runlock.release(run_name)


def remove_leftovers(run: str) -> int:
    """Remove what killed writes of ``run`` left behind: temporary files of atomic writes
    (``.*.tmp``) under ``runs/<run>/``, ``figures/<run>/`` and ``reports/<run>/``,
    partially executed notebooks (``reports/<run>/.NN_name.running.ipynb``) and their
    progress files (``.NN_name.progress.jsonl``). Call it only while holding the run's lock
    (no other process is writing them)."""
    rp = paths.run_paths(run)
    count = sum(
        artifacts.remove_stale_temporaries(folder, recursive=True)
        for folder in (rp.root, rp.figures, rp.reports)
    )
    if rp.reports.is_dir():
        for partial in [
            *rp.reports.glob(".*.running.ipynb"),
            *rp.reports.glob(".*.progress.jsonl"),
        ]:
            partial.unlink(missing_ok=True)
            count += 1
    return count


def describe_profiles() -> str:
    """A table of every profile's parameters (one row per key, one column per profile)."""
    table = config.profiles()
    names = list(table)
    keys: list[str] = []
    for values in table.values():
        keys += [k for k in values if k not in keys]
    rows = [["parameter", *names]] + [
        [k, *(json.dumps(table[n].get(k, "—")) if k in table[n] else "—" for n in names)]
        for k in keys
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
