"""The notebooks as stored in git: thin, parameterised, without outputs.

* the notebooks 01_data … 10_controlled exist;
* they are stored without outputs or execution counts;
* their first code cell is tagged ``parameters`` and holds ``name: type = literal  # comment``
  lines only, declaring ``run``; their defaults are the ``default`` profile's values;
* no notebook defines a function or a class (that belongs in lib);
* every key of every profile is declared by some notebook, with a value of its type.
"""

import ast
import re

import nbformat
import pytest

from prunecxr import config, paths, runner, stages

EXPECTED = [
    "01_data",
    "02_train",
    "03_prune",
    "04_class_forgetting",
    "05_cooccurrence",
    "06_pies",
    "07_reader_study",
    "08_compression",
    "09_attend",
    "10_controlled",
]
NOTEBOOKS_DIR = paths.notebooks_dir()
PRESENT = sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
#: IPython syntax that is not Python: magics, shell escapes, help
_IPYTHON_LINE = re.compile(r"^\s*(%|!|\?)|\?\s*$")


def _read(name):
    return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


def _code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _python(source):
    """A cell's source with IPython-only lines blanked, so that ast can read it."""
    return "\n".join("" if _IPYTHON_LINE.search(line) else line for line in source.splitlines())


@pytest.mark.parametrize("name", EXPECTED)
def test_the_notebooks_exist(name):
    assert (NOTEBOOKS_DIR / f"{name}.ipynb").exists(), f"notebooks/{name}.ipynb is missing"


def test_no_unexpected_numbered_notebooks():
    assert set(PRESENT) <= set(EXPECTED), f"unexpected notebooks: {set(PRESENT) - set(EXPECTED)}"


@pytest.mark.parametrize("name", PRESENT)
def test_stored_without_outputs(name):
    nb = _read(name)
    for i, cell in _code_cells(nb):
        assert not cell.get("outputs"), f"{name} cell {i} has outputs: clear them before commit"
        assert cell.get("execution_count") is None, f"{name} cell {i} has an execution count"
    assert "papermill" not in nb.metadata, f"{name} is an executed copy (papermill metadata)"
    nbformat.validate(nb)


@pytest.mark.parametrize("name", PRESENT)
def test_parameters_cell_is_first_tagged_and_literal(name):
    nb = _read(name)
    code = _code_cells(nb)
    assert code, f"{name} has no code cell"
    index, cell = code[0]
    assert "parameters" in cell.metadata.get("tags", []), (
        f"{name}: the first code cell (cell {index}) must be tagged 'parameters'"
    )
    tree = ast.parse(cell.source)
    assert tree.body, f"{name}: the parameters cell is empty"
    for stmt in tree.body:
        assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name), (
            f"{name}: parameters-cell line {stmt.lineno} is not `name: type = literal`"
        )
        assert stmt.value is not None, f"{name}: {stmt.target.id} has no value"
        ast.literal_eval(stmt.value)  # raises ValueError on anything but a literal
    params = stages.read_notebook(NOTEBOOKS_DIR / f"{name}.ipynb").parameters
    assert "run" in params, f"{name} does not declare run"
    for p in params.values():
        assert p.help, f"{name}: parameter {p.name} has no `# comment` saying what it is"
        p.check(p.default, source=f"{name}'s own default")  # the default has its declared type


@pytest.mark.parametrize("name", PRESENT)
def test_no_function_or_class_definitions(name):
    nb = _read(name)
    for i, cell in _code_cells(nb):
        tree = ast.parse(_python(cell.source))
        for node in ast.walk(tree):
            assert not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
            ), f"{name} cell {i} defines {getattr(node, 'name', 'a lambda')}: move it to lib"


@pytest.mark.parametrize("name", PRESENT)
def test_defaults_equal_the_default_profile(name):
    default = config.load_profile("default")
    params = stages.read_notebook(NOTEBOOKS_DIR / f"{name}.ipynb").parameters
    differ = {
        k: (p.default, default[k])
        for k, p in params.items()
        if k in default and p.default != default[k]
    }
    assert not differ, (
        f"{name}: defaults differ from profile 'default' (notebook, profile): {differ}"
    )
    missing = sorted(set(params) - set(default))
    assert not missing, f"{name} declares {missing}, which profile 'default' lacks"


@pytest.mark.parametrize("profile", sorted(config.profiles()))
def test_every_profile_key_is_declared_with_its_type(profile):
    """What `python -m prunecxr run --profile P` checks first, over all notebooks."""
    notebooks = stages.discover_notebooks(NOTEBOOKS_DIR)
    declared = {k for nb in notebooks for k in nb.parameters}
    values = config.load_profile(profile)
    stages.select_notebooks(values.pop(config.NOTEBOOKS_KEY), notebooks)  # the runner's own key
    if set(PRESENT) == set(EXPECTED):
        assert not set(values) - declared, f"undeclared keys: {sorted(set(values) - declared)}"
    else:  # until every notebook lands, check the keys the present ones declare
        values = {k: v for k, v in values.items() if k in declared}
    run, resolved = runner.resolve_parameters(
        values, (), selected=notebooks, notebooks=notebooks, profile=profile
    )
    assert run == values["run"] and set(resolved) == set(values)
