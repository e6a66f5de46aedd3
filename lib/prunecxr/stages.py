"""The notebooks as stages: each one's ``parameters`` cell, parsed and type-checked.

Parameters are declared by each notebook in its first code cell, tagged ``parameters``, as
literals with a type and a comment::

    run: str = "default"  # names runs/<run>/, figures/<run>/ and reports/<run>/
    n_seeds: int = 10  # models in the population

That cell is the only place a notebook names a parameter before using it: the runner passes
each notebook exactly the parameters it declares (:mod:`prunecxr.runner`), and
:func:`prunecxr.config.start_stage` records them from the notebook's namespace.
"""

from __future__ import annotations

import ast
import io as _io
import json
import os
import re
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths

#: notebooks are files ``NN_name.ipynb`` in the notebooks folder, run in the order of NN
NOTEBOOK_FILE = re.compile(r"^(\d{2})_[A-Za-z0-9_]+\.ipynb$")
PARAMETERS_TAG = "parameters"
#: the one parameter every notebook declares and the runner always passes
RUN_PARAMETER = "run"


class ParameterError(ValueError):
    """A profile key or override that the notebooks do not declare, or of the wrong type."""


class NotebookError(ValueError):
    """A notebook that the runner cannot use (no ``parameters`` cell, a non-literal, ...)."""


# ---------------------------------------------------------------------------------------------
# Declared parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One assignment of a notebook's ``parameters`` cell.

    Attributes
    ----------
    name : str
    annotation : str or None
        The declared type as written (``"int"``, ``"list[str]"``), None when unannotated.
    default : Any
        The literal value.
    help : str
        The trailing comment, without ``#``.
    """

    name: str
    annotation: str | None
    default: Any
    help: str = ""

    def check(self, value: Any, *, source: str) -> Any:
        """``value`` converted to the declared type (an int for a float is widened).

        Raises
        ------
        ParameterError
            Naming the parameter, ``source`` (where the value came from) and the type.
        """
        ok, converted = conform(value, self._type_node(), self.default)
        if not ok:
            raise ParameterError(
                f"parameter {self.name!r} from {source} is {value!r} "
                f"({type(value).__name__}); it is declared as {self.type_name}"
            )
        return converted

    @property
    def type_name(self) -> str:
        return self.annotation or f"{type(self.default).__name__} (the type of its default)"

    def _type_node(self) -> ast.expr | None:
        if self.annotation is None:
            return None
        return ast.parse(self.annotation, mode="eval").body


@dataclass(frozen=True)
class Notebook:
    """A notebook of the pipeline and the parameters it declares."""

    name: str
    path: Path
    parameters: dict[str, Parameter] = field(default_factory=dict)
    parameters_cell: int = 0

    @property
    def number(self) -> int:
        return int(self.name[:2])


def _literal(node: ast.expr, *, notebook: str, name: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise NotebookError(
            f"{notebook}: parameter {name!r} is not a literal ({ast.unparse(node)}); the "
            "parameters cell holds literals only (papermill inserts overrides after it, so a "
            "derived value would keep its old value) — derive it in the next cell"
        ) from None


def _comments(source: str) -> dict[int, str]:
    """Line number → trailing comment text of a cell's source."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(_io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def parse_parameters_cell(source: str, *, notebook: str = "notebook") -> dict[str, Parameter]:
    """The parameters declared in the source of a ``parameters`` cell.

    Every statement must assign a literal to one name, optionally annotated with a type:
    ``n_seeds: int = 10  # models in the population``.

    Raises
    ------
    NotebookError
        On a syntax error, a statement that is not such an assignment, or a non-literal.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise NotebookError(f"{notebook}: the parameters cell does not parse: {err}") from None
    comments = _comments(source)
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            name, annotation, value = stmt.target.id, ast.unparse(stmt.annotation), stmt.value
        elif (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            name, annotation, value = stmt.targets[0].id, None, stmt.value
        else:
            raise NotebookError(
                f"{notebook}: line {stmt.lineno} of the parameters cell is not "
                f"`name: type = literal` ({ast.unparse(stmt)[:80]!r})"
            )
        if name in params:
            raise NotebookError(f"{notebook}: parameter {name!r} is declared twice")
        default = _literal(value, notebook=notebook, name=name)
        params[name] = Parameter(name, annotation, default, comments.get(stmt.lineno, ""))
    return params


@dataclass(frozen=True)
class Cell:
    """One cell of a notebook file: its type, source (one string) and metadata."""

    cell_type: str
    source: str
    metadata: dict


def read_cells(path: str | os.PathLike) -> list[Cell]:
    """The cells of a notebook file (nbformat 4), read as the JSON it is.

    Not ``nbformat.read``: importing nbformat imports jsonschema, whose optional format checkers
    (rfc3987-syntax builds a grammar when imported) took 2.5 of the 4 seconds of ``import
    prunecxr`` here, paid by every notebook's kernel; the notebooks only need their cells'
    sources and tags. papermill, in the runner, still reads and validates them with nbformat.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            nb = json.load(fh)
    except json.JSONDecodeError as err:
        raise NotebookError(f"{path}: not a notebook (invalid JSON: {err})") from None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4:
        raise NotebookError(f"{path}: not a notebook of format 4 (nbformat {nb.get('nbformat')!r})")
    cells = []
    for cell in nb.get("cells", []):
        source = cell.get("source", "")
        cells.append(
            Cell(
                cell_type=cell.get("cell_type", ""),
                source="".join(source) if isinstance(source, list) else source,
                metadata=cell.get("metadata") or {},
            )
        )
    return cells


def read_notebook(path: str | os.PathLike) -> Notebook:
    """A notebook and its declared parameters (the first code cell, tagged ``parameters``).

    Raises
    ------
    NotebookError
        When the first code cell is missing, not tagged ``parameters``, or not literal-only.
    """
    path = Path(path)
    name = path.stem
    for index, cell in enumerate(read_cells(path)):
        if cell.cell_type != "code":
            continue
        if PARAMETERS_TAG not in cell.metadata.get("tags", []):
            raise NotebookError(
                f"{name}: the first code cell (cell {index}) is not tagged {PARAMETERS_TAG!r}; "
                "tag it in JupyterLab (property inspector → cell tags)"
            )
        params = parse_parameters_cell(cell.source, notebook=name)
        if RUN_PARAMETER not in params:
            raise NotebookError(
                f"{name}: the parameters cell does not declare {RUN_PARAMETER!r} "
                f'(`run: str = "default"  # the run to read and write`)'
            )
        return Notebook(name=name, path=path, parameters=params, parameters_cell=index)
    raise NotebookError(f"{name}: no code cell, so no {PARAMETERS_TAG!r} cell")


def discover_notebooks(notebooks_dir: str | os.PathLike | None = None) -> list[Notebook]:
    """The pipeline's notebooks (``NN_name.ipynb``), in order."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.notebooks_dir()
    files = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_FILE.match(p.name))
    if not files:
        raise FileNotFoundError(f"no notebooks named NN_name.ipynb in {folder}")
    numbers = [p.name[:2] for p in files]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    if dupes:
        raise NotebookError(f"several notebooks share the number(s) {dupes} in {folder}")
    return [read_notebook(p) for p in files]


def select_notebooks(spec: str | None, notebooks: Sequence[Notebook]) -> list[Notebook]:
    """The notebooks named by ``spec``, in pipeline order.

    ``spec`` is None or ``"all"`` (every notebook), a number (``"03"``), a range
    (``"03-05"``, inclusive), a name (``"01_data"``) or a comma-separated list of these.
    """
    if spec is None or spec.strip().lower() in {"", "all"}:
        return list(notebooks)
    by_number = {nb.number: nb for nb in notebooks}
    by_name = {nb.name: nb for nb in notebooks}
    available = ", ".join(nb.name for nb in notebooks)
    chosen: set[str] = set()

    def number(token: str) -> int:
        token = token.strip()
        if token in by_name:
            return by_name[token].number
        if token.isdigit() and int(token) in by_number:
            return int(token)
        raise ValueError(f"--notebooks {spec!r}: no notebook {token!r}; available: {available}")

    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part and part not in by_name:
            lo, _, hi = part.partition("-")
            a, b = number(lo), number(hi)
            if a > b:
                raise ValueError(f"--notebooks {spec!r}: range {part!r} runs backwards")
            chosen |= {nb.name for nb in notebooks if a <= nb.number <= b}
        else:
            chosen.add(by_number[number(part)].name)
    return [nb for nb in notebooks if nb.name in chosen]


# ---------------------------------------------------------------------------------------------
# Types and overrides
# ---------------------------------------------------------------------------------------------

_SCALARS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}


def conform(value: Any, node: ast.expr | None, default: Any) -> tuple[bool, Any]:
    """(matches, converted value) of ``value`` against a type annotation's AST."""
    if node is None:  # unannotated: the default's type decides
        if default is None:
            return True, value
        name = type(default).__name__
        node = ast.Name(id=name) if name in _SCALARS or name in {"list", "dict"} else None
        if node is None:
            return isinstance(value, type(default)), value
    if isinstance(node, ast.Constant) and node.value is None:
        return value is None, value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | Y
        for side in (node.left, node.right):
            ok, out = conform(value, side, default)
            if ok:
                return ok, out
        return False, value
    if isinstance(node, ast.Name):
        if node.id in _SCALARS:
            ok = _SCALARS[node.id](value)
            return ok, (float(value) if ok and node.id == "float" else value)
        if node.id == "list":
            return isinstance(value, (list, tuple)), list(value) if isinstance(
                value, tuple
            ) else value
        if node.id == "dict":
            return isinstance(value, dict), value
        if node.id in {"Any", "object"}:
            return True, value
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        outer, inner = node.value.id, node.slice
        if outer == "Optional":
            return conform(value, ast.BinOp(inner, ast.BitOr(), ast.Constant(None)), default)
        if outer in {"list", "List", "Sequence"}:
            if not isinstance(value, (list, tuple)):
                return False, value
            items = []
            for item in value:
                ok, out = conform(item, inner, None)
                if not ok:
                    return False, value
                items.append(out)
            return True, items
        if outer in {"dict", "Dict", "Mapping"} and isinstance(inner, ast.Tuple):
            if not isinstance(value, dict):
                return False, value
            k_node, v_node = inner.elts
            out = {}
            for k, v in value.items():
                ok_k, k2 = conform(k, k_node, None)
                ok_v, v2 = conform(v, v_node, None)
                if not (ok_k and ok_v):
                    return False, value
                out[k2] = v2
            return True, out
    # an annotation this checker does not know: fall back to the default's type
    if default is not None and node is not None:
        return conform(value, None, default)
    return True, value
