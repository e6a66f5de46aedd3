"""The package's structure, read from its syntax trees: arrows point down, rooms keep their
privates.

- No import cycle between the package's modules (a package's ``__init__`` counts as the
  package: ``from prunecxr import data`` is an arrow to ``prunecxr.data``).
- No module calls or reads another module's ``_private`` name (``other._name`` or
  ``from .other import _name``); a name a second room needs is public in the right room.
- The leaves (``paths``, ``artifacts``, ``published``, ``levels``, ``runtime``, ``stages``, ``fmt``,
  ``stats``, ``metrics``) import nothing of the package but other leaves.

Each rule has a test on a small fabricated package, so the checks provably fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import prunecxr

PACKAGE_DIR = Path(prunecxr.__file__).resolve().parent
LEAVES = {
    "paths",
    "artifacts",
    "published",
    "levels",
    "runtime",
    "runlock",
    "stages",
    "fmt",
    "stats",
    "metrics",
}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><target> import ...``."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


class ModuleInfo:
    def __init__(self, name: str, path: Path, is_package: bool, tree: ast.Module):
        self.name, self.path, self.is_package, self.tree = name, path, is_package, tree
        self.imports: set[str] = set()  # modules of the package this one imports
        self.aliases: dict[str, str] = {}  # local name -> module of the package
        self.private_uses: list[str] = []  # "line: module._name"


def scan(root: Path, package: str) -> dict[str, ModuleInfo]:
    """Every module of the package under ``root``, with its imports of the package and the
    private names of other modules it uses."""
    infos: dict[str, ModuleInfo] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root, package)
        infos[name] = ModuleInfo(
            name, path, path.name == "__init__.py", ast.parse(path.read_text(), str(path))
        )
    known = set(infos)

    for info in infos.values():
        for node in ast.walk(info.tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _resolve(info.name, info.is_package, node.level, node.module)
                elif node.module and (
                    node.module == package or node.module.startswith(package + ".")
                ):
                    base = node.module
                else:
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in known:  # from . import data  -> the module prunecxr.data
                        info.imports.add(full)
                        info.aliases[alias.asname or alias.name] = full
                    elif base in known:
                        info.imports.add(base)
                        if (
                            alias.name.startswith("_")
                            and not alias.name.startswith("__")
                            and base != info.name
                        ):
                            info.private_uses.append(
                                f"{node.lineno}: from {base} import {alias.name}"
                            )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.name != package:
                        info.imports.add(alias.name)
                        if alias.asname:
                            info.aliases[alias.asname] = alias.name
        for node in ast.walk(info.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in info.aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and info.aliases[node.value.id] != info.name
            ):
                info.private_uses.append(
                    f"{node.lineno}: {info.aliases[node.value.id]}.{node.attr}"
                )
    for info in infos.values():  # a package's own submodules are not arrows out of it
        info.imports.discard(info.name)
    return infos


def find_cycles(infos: dict[str, ModuleInfo]) -> list[list[str]]:
    """The import cycles (strongly connected components of more than one module, or a
    module importing itself), each as a sorted list of module names.

    A package ``__init__`` that imports its own submodules is not a cycle with them: a
    submodule importing a sibling (``from . import sibling``) is an arrow to the sibling,
    not to the package.
    """
    graph = {name: {m for m in info.imports if m in infos} for name, info in infos.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


# -- the package ---------------------------------------------------------------------------
INFOS = scan(PACKAGE_DIR, "prunecxr")


def test_scan_reads_the_package():
    assert {"prunecxr.artifacts", "prunecxr.config", "prunecxr.runner"} <= set(INFOS)
    assert "prunecxr.paths" in INFOS["prunecxr.artifacts"].imports


def test_no_import_cycles():
    cycles = find_cycles(INFOS)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_uses_another_modules_private_names():
    uses = {name: info.private_uses for name, info in INFOS.items() if info.private_uses}
    assert not uses, "private names used across modules:\n" + "\n".join(
        f"{name} ({INFOS[name].path.name}) line {use}"
        for name, found in uses.items()
        for use in found
    )


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_leaves(leaf):
    info = INFOS[f"prunecxr.{leaf}"]
    others = sorted(m for m in info.imports if m.removeprefix("prunecxr.") not in LEAVES)
    assert not others, f"leaf {leaf} imports {others}"


# -- the checks can fail -------------------------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, ModuleInfo]:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return scan(root, "pkg")


def test_a_cycle_is_found(tmp_path):
    infos = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "sub/__init__.py": "from .c import f\n",
            "sub/c.py": "from .. import a\ndef f(): pass\n",
            "b.py": "from .sub import c\n",
        },
    )
    assert find_cycles(infos) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_a_package_reexporting_its_submodules_is_no_cycle(tmp_path):
    infos = _package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from .c import f\nfrom . import d\n",
            "sub/c.py": "def f(): pass\n",
            "sub/d.py": "from . import c\n",
        },
    )
    assert find_cycles(infos) == []


def test_a_private_use_is_found(tmp_path):
    infos = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def _helper(): pass\nX = 1\n",
            "b.py": "from . import a\nfrom .a import _helper\ny = a._helper() + a.X\n",
            "c.py": "def _own(): pass\nz = _own()\n",
        },
    )
    assert sorted(infos["pkg.b"].private_uses) == [
        "2: from pkg.a import _helper",
        "3: pkg.a._helper",
    ]
    assert infos["pkg.c"].private_uses == []
