"""Provenance of every figure: how it was made travels with its files.

A figure saved by :func:`prunecxr.figures.save_figure` carries a provenance record: the run,
the package version, the git commit and whether the checkout was clean, the notebook and the
cell that drew it, the stage's parameters and their hash, and the input artifact files the
stage had read when it drew the figure, each with its SHA-256. The record travels

- in the PNG, as text chunks (``prunecxr:provenance``, the record as JSON; ``Description``,
  the short line), readable by any PNG tool (``exiftool``, PIL's ``Image.text``);
- in the HTML, as a visible footer (the short line) and as machine-readable JSON in
  ``<script type="application/json" class="prunecxr-provenance">``;
- beside the CSV (and the two others), as ``<name>.provenance.json``.

:func:`check` compares the recorded inputs with the files as they are now: a figure whose
input changed (or vanished) is *stale*. ``python -m prunecxr provenance FILE`` prints the
record and that verdict.

Inputs are what the stage's readers noted (:func:`prunecxr.artifacts.files_read`), named
relative to ``PRUNECXR_HOME`` (``runs/<run>/...``), or to ``PRUNECXR_CACHE`` (``$PRUNECXR_CACHE/...``),
else by their absolute path; so a run folder that moves together with its figures is still
checked. The record holds no time stamp: the same inputs, parameters and commit give the same
bytes.
"""

from __future__ import annotations

import hashlib
import html as _html
import json
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts, paths

__all__ = [
    "PNG_KEY",
    "SIDECAR_SUFFIX",
    "StageContext",
    "begin_stage",
    "check",
    "collect",
    "current",
    "describe",
    "file_sha256",
    "html_with_provenance",
    "parameters_sha256",
    "png_with_provenance",
    "png_text",
    "read",
    "short_line",
    "sidecar_path",
]

#: the version of the record's layout
SCHEMA = 1
#: the PNG text chunk holding the record as JSON
PNG_KEY = "prunecxr:provenance"
#: the file beside a figure's files that holds its record
SIDECAR_SUFFIX = ".provenance.json"
#: the class of the HTML elements (footer, JSON script) that hold the record
HTML_CLASS = "prunecxr-provenance"
CACHE_PREFIX = "$PRUNECXR_CACHE/"


@dataclass(frozen=True)
class StageContext:
    """What a stage knows about itself when it starts (:func:`begin_stage`)."""

    stage: str
    run: str
    parameters: dict[str, Any] = field(default_factory=dict)
    package_version: str = "unknown"
    git_commit: str = "unknown"  # with "-dirty" when the checkout had uncommitted changes


_context: list[StageContext] = []


def begin_stage(
    stage: str, *, run: str, parameters: Mapping[str, Any], package_version: str, git_commit: str
) -> StageContext:
    """Remember the stage that starts in this process and start noting what it reads."""
    ctx = StageContext(stage, run, dict(parameters), package_version, git_commit)
    _context[:] = [ctx]
    artifacts.start_reading()
    return ctx


def current() -> StageContext | None:
    """The stage running in this process, if one started (:func:`begin_stage`)."""
    return _context[0] if _context else None


# -- hashes and names ----------------------------------------------------------------------
def parameters_sha256(parameters: Mapping[str, Any]) -> str:
    """SHA-256 of the parameters as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(dict(parameters), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        with open(path, "rb") as fh:
            _hashes[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _hashes[key]


def location(path: str | os.PathLike) -> str:
    """How a record names an input: relative to the cache or to the home, else absolute."""
    path = Path(path).resolve()
    for root, prefix in ((paths.cache_root(), CACHE_PREFIX), (paths.home(), "")):
        if path.is_relative_to(root):
            return prefix + path.relative_to(root).as_posix()
    return str(path)


def resolve(name: str, *, home: Path) -> Path:
    """The file an input's name means, for figures under ``home``."""
    if name.startswith(CACHE_PREFIX):  # PRUNECXR_CACHE, else the cache folder of that home
        cache = paths.cache_root() if os.environ.get(paths.CACHE_ENV) else home / "cache"
        return cache / name[len(CACHE_PREFIX) :]
    p = Path(name)
    return p if p.is_absolute() else home / p


def _cell(stage: str) -> tuple[int | None, int | None]:
    """The running cell: its index in ``notebooks/<stage>.ipynb`` and its ``In [n]`` number."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None, None
    ip = get_ipython()
    if ip is None:
        return None, None
    count = getattr(ip, "execution_count", None)
    raw = getattr(getattr(ip, "history_manager", None), "input_hist_raw", None) or [""]
    source = raw[-1]
    index = None
    try:
        from .stages import NotebookError, read_cells

        try:
            cells = read_cells(paths.notebooks_dir() / f"{stage}.ipynb")
        except NotebookError:
            cells = []
        matches = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source == source]
        index = matches[0] if len(matches) == 1 else None
    except (OSError, ValueError):
        pass
    return index, count


# -- the record ----------------------------------------------------------------------------
def collect(
    name: str,
    *,
    run: str,
    inputs: Iterable[str | os.PathLike] | None = None,
    context: StageContext | None = None,
) -> dict[str, Any]:
    """The provenance record of figure ``name`` of ``run``, drawn now.

    Parameters
    ----------
    name : the figure's file stem.
    run : the run whose figure it is.
    inputs : the input files; default what the stage read so far
        (:func:`prunecxr.artifacts.files_read`).
    context : the stage; default :func:`current` when it is a stage of ``run``. Without one
        (a figure drawn outside a stage) the notebook, parameters, version and commit are
        unknown; :func:`prunecxr.figures.save_figure` then gives version and commit.
    """
    ctx = context or current()
    if ctx is None or ctx.run != run:
        ctx = StageContext("", run)
    commit = ctx.git_commit
    clean = None if commit == "unknown" else not commit.endswith("-dirty")
    cell, count = _cell(ctx.stage) if ctx.stage else (None, None)
    files = artifacts.files_read() if inputs is None else [Path(p) for p in inputs]
    return {
        "prunecxr_provenance": SCHEMA,
        "figure": name,
        "run": run,
        "package_version": ctx.package_version,
        "git_commit": commit.removesuffix("-dirty"),
        "git_clean": clean,
        "notebook": ctx.stage or None,
        "cell": cell,
        "execution_count": count,
        "parameters": ctx.parameters,
        "parameters_sha256": parameters_sha256(ctx.parameters),
        "inputs": [
            {"path": location(p), "sha256": file_sha256(p), "bytes": Path(p).stat().st_size}
            for p in files
        ],
    }


def short_line(record: Mapping[str, Any]) -> str:
    """One line for under a figure: run, notebook and cell, commit, parameters, inputs."""
    where = record.get("notebook") or "outside a notebook stage"
    if record.get("cell") is not None:
        where += f" cell {record['cell']}"
    commit = str(record.get("git_commit") or "unknown")[:10]
    if record.get("git_clean") is False:
        commit += " (uncommitted changes)"
    n = len(record.get("inputs", []))
    return (
        f"run {record.get('run')} · {where} · prunecxr {record.get('package_version')} · "
        f"commit {commit} · parameters {str(record.get('parameters_sha256', ''))[:12]} · "
        f"{n} input file{'s' if n != 1 else ''}"
    )


# -- carriers --------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_provenance(png: bytes, record: Mapping[str, Any]) -> bytes:
    """``png`` with the record as international text chunks before its end (pixels untouched)."""
    if (
        not png.startswith(b"\x89PNG\r\n\x1a\n")
        or png[-12:-8] != b"\x00\x00\x00\x00"
        or png[-8:-4] != b"IEND"
    ):
        raise ValueError("not a PNG ending in an IEND chunk")
    chunks = b""
    for key, text in (
        ("Description", short_line(record)),
        (PNG_KEY, json.dumps(record, sort_keys=True)),
    ):
        # iTXt: keyword, NUL, compression flag 0, method 0, empty language and translated keyword
        chunks += _png_chunk(
            b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
        )
    return png[:-12] + chunks + png[-12:]


def png_text(png: bytes) -> dict[str, str]:
    """The international text chunks (``iTXt``, uncompressed) of a PNG, by keyword; the
    pixels are not decoded."""
    out: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"iTXt":
            key, _, rest = data.partition(b"\x00")
            if len(rest) >= 2 and rest[0] == 0:  # not compressed
                _lang, _, rest = rest[2:].partition(b"\x00")
                _translated, _, text = rest.partition(b"\x00")
                out[key.decode("latin-1")] = text.decode("utf-8", errors="replace")
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


def html_with_provenance(page: str, record: Mapping[str, Any]) -> str:
    """``page`` with a visible provenance footer and the record as JSON, before ``</body>``."""
    data = json.dumps(record, sort_keys=True).replace("</", "<\\/")
    block = (
        f'<footer class="{HTML_CLASS}" style="font:12px sans-serif;color:#555;margin:6px 12px">'
        f"{_html.escape(short_line(record))}</footer>\n"
        f'<script type="application/json" class="{HTML_CLASS}">{data}</script>\n'
    )
    at = page.rfind("</body>")
    if at < 0:
        raise ValueError("the figure's HTML has no </body>")
    return page[:at] + block + page[at:]


#: the provenance elements of a figure's HTML (:func:`html_with_provenance`)
HTML_BLOCK = re.compile(
    rf'<footer class="{HTML_CLASS}"[^>]*>.*?</footer>\s*'
    rf'<script type="application/json" class="{HTML_CLASS}">(.*?)</script>\s*',
    re.S,
)


def sidecar_path(figure_file: str | os.PathLike) -> Path:
    """``figures/<run>/<name>.provenance.json`` of any of the figure's files."""
    p = Path(figure_file)
    stem = p.name[: -len(SIDECAR_SUFFIX)] if p.name.endswith(SIDECAR_SUFFIX) else p.stem
    return p.with_name(stem + SIDECAR_SUFFIX)


def write_sidecar(figure_file: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write the record beside the figure's files."""
    return artifacts.write_text(
        sidecar_path(figure_file), json.dumps(record, indent=2, sort_keys=True) + "\n"
    )


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of a figure file (PNG, HTML, CSV or the sidecar itself).

    Raises
    ------
    FileNotFoundError
        The file (or, for a CSV, its sidecar) does not exist.
    ValueError
        The file carries no provenance record.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    text = None
    if path.suffix.lower() == ".png":
        text = png_text(path.read_bytes()).get(PNG_KEY)
    elif path.suffix.lower() in (".html", ".htm"):
        m = HTML_BLOCK.search(path.read_text(encoding="utf-8"))
        text = m.group(1).replace("<\\/", "</") if m else None
    else:
        side = sidecar_path(path)
        if not side.exists():
            raise FileNotFoundError(f"{path} has no provenance sidecar {side.name} beside it")
        text = side.read_text(encoding="utf-8")
    if text is None:
        raise ValueError(
            f"{path} carries no prunecxr provenance record (was it saved by "
            "prunecxr.figures.save_figure?)"
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its provenance record is not valid JSON: {err}") from None
    if not isinstance(record, dict) or "prunecxr_provenance" not in record:
        raise ValueError(f"{path} carries no prunecxr provenance record")
    return record


@dataclass(frozen=True)
class InputState:
    """One recorded input as it is now: ``status`` is ``"ok"``, ``"changed"`` or ``"missing"``."""

    path: str
    file: Path
    status: str


def figure_home(path: str | os.PathLike, run: str) -> Path:
    """The ``PRUNECXR_HOME`` a figure file belongs to (``<home>/figures/<run>/<file>``), else the
    current one."""
    p = Path(path).resolve()
    if p.parent.name == run and p.parent.parent.name == "figures":
        return p.parents[2]
    return paths.home()


def check(record: Mapping[str, Any], *, home: Path) -> list[InputState]:
    """Each recorded input compared with the file as it is now."""
    out = []
    for item in record.get("inputs", []):
        file = resolve(item["path"], home=home)
        if not file.is_file():
            status = "missing"
        else:
            status = "ok" if file_sha256(file) == item["sha256"] else "changed"
        out.append(InputState(item["path"], file, status))
    return out


def describe(path: str | os.PathLike) -> tuple[str, bool]:
    """The record of a figure file as text, and whether the figure is stale (an input changed
    or is missing)."""
    record = read(path)
    states = check(record, home=figure_home(path, str(record.get("run", ""))))
    stale = [s for s in states if s.status != "ok"]
    clean = {True: "clean", False: "with uncommitted changes", None: "unknown"}[
        record.get("git_clean")
    ]
    cell = record.get("cell")
    lines = [
        f"figure      {record.get('figure')} ({Path(path).name})",
        f"run         {record.get('run')}",
        f"notebook    {record.get('notebook') or '—'}"
        + (f", cell {cell}" if cell is not None else "")
        + (
            f" (In [{record['execution_count']}])"
            if record.get("execution_count") is not None
            else ""
        ),
        f"package     prunecxr {record.get('package_version')}",
        f"commit      {record.get('git_commit')} ({clean})",
        f"parameters  sha256 {record.get('parameters_sha256')}",
    ]
    lines += [f"  {k} = {json.dumps(v)}" for k, v in sorted(record.get("parameters", {}).items())]
    lines.append(f"inputs      {len(states)} file(s)")
    by_path = {item["path"]: item for item in record.get("inputs", [])}
    for s in states:
        mark = {"ok": "ok     ", "changed": "CHANGED", "missing": "MISSING"}[s.status]
        lines.append(f"  {mark} {s.path}  sha256 {by_path[s.path]['sha256'][:16]}")
    if stale:
        lines.append(
            f"STALE: {len(stale)} input(s) changed or missing since the figure was drawn; "
            f"run notebook {record.get('notebook') or 'that drew it'} again to redraw it"
        )
    else:
        lines.append("up to date: every input has its recorded hash")
    return "\n".join(lines), bool(stale)
