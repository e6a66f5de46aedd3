"""docs/artifacts.md is the contract: every file a run writes, and every column and key, is in it.

The document has a machine-readable shape (described in its own "How this page is read" paragraph):

* tables whose first header is ``path`` list the files a run may leave, tables whose first header
  is ``transient path`` the files a completed run must not leave; each row's first cell holds one
  or more path patterns in backticks, relative to ``PRUNECXR_HOME``, with ``<placeholder>``s and
  ``{a,b}`` alternatives;
* a table whose first header is ``column`` (or ``key``) lists, in backticks in its first cell, the
  columns of the table files (or the keys of the JSON files) named in backticks in the heading
  above it; ``a.b`` is the key ``b`` of the object ``a``; ``<class>`` stands for every class of
  the run, ``<plotted>`` for any column;
* a table whose first header is ``figure`` lists the figure names that ``<name>`` stands for.

The slow test walks every file of a smoke run (runs/, figures/, reports/, cache/) and fails on a
file, a column of a parquet/CSV file or a key of a JSON file that the document does not list;
the fast ones show that the checker rejects what it should, on a tiny tree and on the real
document.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from prunecxr import paths

DOC = Path(__file__).resolve().parents[1] / "docs" / "artifacts.md"

#: what each placeholder of a path, a column or a key may be
PLACEHOLDERS = {
    "run": r"[A-Za-z0-9][A-Za-z0-9._-]*",
    "method": r"[a-z0-9][a-z0-9_]*",
    "s": r"\d+",
    "e": r"\d+",
    "arm": r"[a-z_]+",
    "r": r"\d+",
    "notebook": r"\d{2}_[A-Za-z0-9_]+",
    "stage": r"\d{2}_[A-Za-z0-9_]+",
    "reader": r"reader-\d+",
    "dataset": r"[A-Za-z0-9][A-Za-z0-9._-]*",
    "R": r"\d+",
    "split": r"train|val|test",
    "key": r"[0-9a-f]{16}",
    "parameter": r"[A-Za-z_][A-Za-z0-9_]*",
    "mode": r"sequential|ray",
    "count": r"\d+",
    "setup": r".+",
    "file": r"[^/]+",
    "random": r"[^/]+",
    "dir": r".+",
    "plotted": r".+",
}
#: placeholders whose values come from the run ("class") or from the document ("name")
RUN_PLACEHOLDERS = {"class", "name"}
TABLE_SUFFIXES = {".parquet", ".csv", ".json"}

_PLACEHOLDER = re.compile(r"<([A-Za-z_]+)>")
_BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")
_CODE = re.compile(r"`([^`]+)`")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


class ContractError(ValueError):
    """The document does not have the shape this test reads."""


@dataclass
class Table:
    """The columns (``kind == "column"``) or keys (``"key"``) of the files of ``patterns``."""

    patterns: list[str]
    kind: str
    names: list[str]


@dataclass
class Contract:
    files: list[str] = field(default_factory=list)
    transient: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


# -- reading the document ---------------------------------------------------------------------
def expand(pattern: str) -> list[str]:
    """``a.{x,y}`` -> ``["a.x", "a.y"]`` (any number of brace groups)."""
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for alt in match.group(1).split(",") for p in expand(head + alt.strip() + tail)]


def _placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def _cells(line: str) -> list[str]:
    line = line.strip().removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip() for c in _CELL_SPLIT.split(line)]


def _code(cell: str) -> list[str]:
    return [c.replace("\\|", "|") for c in _CODE.findall(cell)]


def _tables(text: str):
    """(heading code spans, header cells, rows of cells) of every table outside code fences."""
    heading: list[str] = []
    block: list[str] = []
    fenced = False

    def flush():
        if len(block) >= 2:
            yield heading, _cells(block[0]), [_cells(row) for row in block[2:]]
        block.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```"):
            yield from flush()
            continue
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        yield from flush()
        if line.startswith("#"):
            heading = _code(line)
    yield from flush()


def parse_contract(text: str) -> Contract:
    """The files, transient files, column/key tables and figure names of ``text``."""
    contract = Contract()
    for heading, header, rows in _tables(text):
        kind = header[0].strip().lower()
        if kind not in ("path", "transient path", "column", "key", "figure"):
            continue
        names = []
        for row in rows:
            found = _code(row[0])
            if not found:
                raise ContractError(f"a row of a {kind!r} table has no name in backticks: {row}")
            names += found
        if kind in ("path", "transient path", "figure"):
            expanded = [p for name in names for p in expand(name)]
            {
                "path": contract.files,
                "transient path": contract.transient,
                "figure": contract.figures,
            }[kind].extend(expanded)
        else:
            if not heading:
                raise ContractError(
                    f"a {kind!r} table ({names[:3]}...) has no file named in "
                    "backticks in the heading above it"
                )
            contract.tables.append(Table([p for h in heading for p in expand(h)], kind, names))
    used = [
        *contract.files,
        *contract.transient,
        *contract.figures,
        *(n for t in contract.tables for n in t.names),
    ]
    unknown = set().union(*map(_placeholders, used)) - set(PLACEHOLDERS) - RUN_PLACEHOLDERS
    if unknown:
        raise ContractError(f"unknown placeholder(s) {sorted(unknown)}")
    documented = set(contract.files) | set(contract.transient)
    for table in contract.tables:
        for pattern in table.patterns:
            if pattern not in documented:
                raise ContractError(
                    f"the {table.kind}s of {pattern!r} are listed, but no "
                    "'path' table lists that file"
                )
    if not contract.files:
        raise ContractError("no 'path' table")
    return contract


def read_contract(path: Path = DOC) -> Contract:
    return parse_contract(path.read_text(encoding="utf-8"))


# -- checking a tree ----------------------------------------------------------------------------
def _regex(pattern: str, values: dict[str, str]) -> re.Pattern:
    parts = []
    last = 0
    for m in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[last : m.start()]))
        if m.group(1) not in values:
            raise ContractError(f"placeholder <{m.group(1)}> cannot be used in {pattern!r}")
        parts.append(f"(?:{values[m.group(1)]})")
        last = m.end()
    parts.append(re.escape(pattern[last:]))
    return re.compile("".join(parts))


def _columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def _key_problems(obj, patterns: list[list[re.Pattern]], prefix: tuple = ()) -> list[str]:
    """Keys of ``obj`` (and of its documented objects) that ``patterns`` do not list.

    An object's keys are checked when its own key path has listed children (the top level
    always); an object whose children are not listed is free-form (e.g. parameters by name).
    """
    if not isinstance(obj, dict):
        return []

    def matches(pattern, keys):
        return all(r.fullmatch(str(k)) for r, k in zip(pattern, keys))

    if prefix and not any(len(p) > len(prefix) and matches(p, prefix) for p in patterns):
        return []
    problems = []
    for key, value in obj.items():
        path = (*prefix, key)
        if not any(len(p) == len(path) and matches(p, path) for p in patterns):
            problems.append(".".join(map(str, path)))
            continue
        problems += _key_problems(value, patterns, path)
    return problems


def check_tree(home: Path, contract: Contract, *, classes) -> list[str]:
    """Every problem of the files under ``home`` against ``contract`` (empty: all documented).

    ``classes`` are the class names that ``<class>`` columns stand for.
    """
    values = dict(PLACEHOLDERS)
    values["name"] = (
        "|".join(f"(?:{_regex(f, PLACEHOLDERS).pattern})" for f in contract.figures) or r"(?!)"
    )
    path_values = {k: v for k, v in values.items() if k != "plotted"}
    column_values = dict(values, **{"class": "|".join(map(re.escape, classes)) or r"(?!)"})
    files = [_regex(p, path_values) for p in contract.files]
    transient = [_regex(p, path_values) for p in contract.transient]
    tables = [
        (
            [_regex(p, path_values) for p in t.patterns],
            t.kind,
            [_regex(n, column_values) for n in t.names]
            if t.kind == "column"
            else [[_regex(part, column_values) for part in n.split(".")] for n in t.names],
        )
        for t in contract.tables
    ]
    problems = []
    for path in sorted(home.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(home).as_posix()
        if any(r.fullmatch(rel) for r in transient):
            problems.append(f"{rel}: a transient file, left behind by a completed run")
            continue
        if not any(r.fullmatch(rel) for r in files):
            problems.append(f"{rel}: undocumented file")
            continue
        if path.suffix not in TABLE_SUFFIXES:
            continue
        owned = [
            (kind, names)
            for regexes, kind, names in tables
            if any(r.fullmatch(rel) for r in regexes)
        ]
        if not owned:
            problems.append(f"{rel}: no column or key table documents its contents")
            continue
        if path.suffix == ".json":
            patterns = [n for kind, names in owned if kind == "key" for n in names]
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                problems.append(f"{rel}: not valid JSON ({err})")
                continue
            problems += [f"{rel}: undocumented key {k!r}" for k in _key_problems(obj, patterns)]
        else:
            regexes = [n for kind, names in owned if kind == "column" for n in names]
            problems += [
                f"{rel}: undocumented column {c!r}"
                for c in _columns(path)
                if not any(r.fullmatch(c) for r in regexes)
            ]
    return problems


def run_classes(home: Path) -> list[str]:
    """Every class of the runs under ``home`` (``run.json`` ``data.classes``)."""
    classes: list[str] = []
    for record in sorted(home.glob("runs/*/run.json")):
        for c in json.loads(record.read_text(encoding="utf-8")).get("data", {}).get("classes", []):
            if c not in classes:
                classes.append(c)
    return classes


# -- the document itself ------------------------------------------------------------------------
def test_document_parses():
    contract = read_contract()
    assert len(contract.files) > 20 and contract.transient and contract.figures
    kinds = {t.kind for t in contract.tables}
    assert kinds == {"column", "key"}


def test_every_run_path_is_documented():
    """Each file ``RunPaths`` names (``paths.py``, where every path is built) is in the document."""
    contract = read_contract()
    home = Path("/home")
    rp = paths.RunPaths("run-1", home)
    samples = {"seed": 0, "method": "global_l1", "reader": "reader-1"}
    found = []
    for name in dir(paths.RunPaths):
        if name.startswith("_") or name in ("name", "home"):
            continue
        attr = getattr(type(rp), name)
        if isinstance(attr, property):
            value = getattr(rp, name)
        elif callable(attr):
            params = [p for p in attr.__code__.co_varnames[1 : attr.__code__.co_argcount]]
            if not all(p in samples for p in params):
                continue
            value = getattr(rp, name)(*(samples[p] for p in params))
        else:
            continue
        if isinstance(value, Path) and value.suffix:
            found.append(value.relative_to(home).as_posix())
    assert len(found) >= 15, found
    values = dict(PLACEHOLDERS, name=r"(?!)")
    patterns = [_regex(p, values) for p in contract.files + contract.transient]
    missing = [f for f in found if not any(r.fullmatch(f) for r in patterns)]
    assert not missing, f"files of RunPaths that docs/artifacts.md does not list: {missing}"


# -- the checker rejects what it should ------------------------------------------------------
TINY_DOC = """
# Tiny

| path | content |
| --- | --- |
| `runs/<run>/labels.parquet`, `runs/<run>/run.json` | tables |
| `runs/<run>/notes/<s>.{txt,csv}` | notes |

| transient path | content |
| --- | --- |
| `<dir>/.<file>.<random>.tmp` | a write in progress |

### `runs/<run>/labels.parquet`

| column | type | meaning |
| --- | --- | --- |
| `image_id` | str | the image |
| `<class>` | int8 | one per class |

### `runs/<run>/notes/<s>.csv`

| column | type | meaning |
| --- | --- | --- |
| `a\\|b` | str | a column whose name holds a pipe |

### `runs/<run>/run.json`

| key | type | meaning |
| --- | --- | --- |
| `run` | str | the run |
| `data` | object | data |
| `data.classes` | list | classes |
| `free` | object | free-form |
"""


def _write_tiny_run(home: Path) -> None:
    run = home / "runs" / "r1"
    (run / "notes").mkdir(parents=True)
    pd.DataFrame({"image_id": ["a"], "Mass": [1], "Edema": [0]}).to_parquet(
        run / "labels.parquet", index=False
    )
    (run / "run.json").write_text(
        json.dumps({"run": "r1", "data": {"classes": ["Mass", "Edema"]}, "free": {"anything": 1}})
    )
    (run / "notes" / "0.txt").write_text("hello")
    (run / "notes" / "1.csv").write_text("a|b\nx\n")


def test_checker_accepts_a_documented_tree(tmp_path):
    _write_tiny_run(tmp_path)
    contract = parse_contract(TINY_DOC)
    assert check_tree(tmp_path, contract, classes=run_classes(tmp_path)) == []


def test_checker_rejects_an_undocumented_file(tmp_path):
    _write_tiny_run(tmp_path)
    (tmp_path / "runs" / "r1" / "stray.txt").write_text("?")
    (tmp_path / "runs" / "r1" / "notes" / "2.md").write_text("?")
    (tmp_path / "runs" / "r1" / ".labels.parquet.x1y2.tmp").write_text("")
    problems = check_tree(tmp_path, parse_contract(TINY_DOC), classes=["Mass", "Edema"])
    assert problems == [
        "runs/r1/.labels.parquet.x1y2.tmp: a transient file, left behind by a completed run",
        "runs/r1/notes/2.md: undocumented file",
        "runs/r1/stray.txt: undocumented file",
    ]


def test_checker_rejects_an_undocumented_column_or_key(tmp_path):
    _write_tiny_run(tmp_path)
    run = tmp_path / "runs" / "r1"
    pd.DataFrame({"image_id": ["a"], "Mass": [1], "Edema": [0], "bogus": [0]}).to_parquet(
        run / "labels.parquet", index=False
    )
    (run / "notes" / "1.csv").write_text("a|b,c\nx,y\n")
    (run / "run.json").write_text(
        json.dumps(
            {"run": "r1", "data": {"classes": [], "extra": 1}, "more": 2, "free": {"x": {"y": 1}}}
        )
    )
    problems = check_tree(tmp_path, parse_contract(TINY_DOC), classes=["Mass"])
    assert problems == [
        "runs/r1/labels.parquet: undocumented column 'Edema'",  # not a class of the run
        "runs/r1/labels.parquet: undocumented column 'bogus'",
        "runs/r1/notes/1.csv: undocumented column 'c'",
        "runs/r1/run.json: undocumented key 'data.extra'",
        "runs/r1/run.json: undocumented key 'more'",
    ]


def test_checker_rejects_a_table_file_without_columns(tmp_path):
    _write_tiny_run(tmp_path)
    (tmp_path / "runs" / "r1" / "notes" / "1.csv").unlink()
    doc = TINY_DOC.replace(
        "| `runs/<run>/notes/<s>.{txt,csv}` | notes |",
        "| `runs/<run>/notes/<s>.{txt,csv}`, `runs/<run>/extra.csv` | notes |",
    )
    (tmp_path / "runs" / "r1" / "extra.csv").write_text("a\n1\n")
    problems = check_tree(tmp_path, parse_contract(doc), classes=["Mass", "Edema"])
    assert problems == ["runs/r1/extra.csv: no column or key table documents its contents"]


@pytest.mark.parametrize(
    "doc, message",
    [
        (TINY_DOC.replace("`<dir>/.<file>", "`<folder>/.<file>"), "unknown placeholder"),
        (TINY_DOC.replace("### `runs/<run>/run.json`", "### The record"), "no file named"),
        (
            TINY_DOC.replace("### `runs/<run>/run.json`", "### `runs/<run>/record.json`"),
            "no 'path' table lists",
        ),
    ],
)
def test_parser_rejects_a_malformed_document(doc, message):
    with pytest.raises(ContractError, match=message):
        parse_contract(doc)


def test_real_document_is_not_a_catch_all(tmp_path):
    """The real document rejects a stray file, a left-over partial, an unknown column and key."""
    run = tmp_path / "runs" / "r1"
    (run / "prune" / "global_l1" / "work").mkdir(parents=True)
    (run / "analysis" / "global_l1").mkdir(parents=True)
    (run / "notes.txt").write_text("?")
    (run / "prune" / "global_l1" / "work" / "seed-0.npy").write_bytes(b"")
    (run / "prune" / "global_l1" / "meta.json").write_text(
        json.dumps(
            {
                "method": "global_l1",
                "seeds": [0],
                "sparsities": [0.0],
                "classes": ["Mass"],
                "dtype": "float32",
            }
        )
    )
    pd.DataFrame({"class": ["Mass"], "train_count": [1], "first_20pct_drop": [0.5]}).to_parquet(
        run / "analysis" / "global_l1" / "class_summary.parquet", index=False
    )
    problems = check_tree(tmp_path, read_contract(), classes=["Mass"])
    assert problems == [
        "runs/r1/analysis/global_l1/class_summary.parquet: undocumented column 'first_20pct_drop'",
        "runs/r1/notes.txt: undocumented file",
        "runs/r1/prune/global_l1/meta.json: undocumented key 'dtype'",
        "runs/r1/prune/global_l1/work/seed-0.npy: a transient file, left behind by a completed run",
    ]
