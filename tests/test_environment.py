"""environment.yml (for conda users) and pyproject.toml pin the same packages."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml  # PyYAML: a dependency of jupyter-events, hence of jupyterlab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


@pytest.fixture(scope="module")
def env():
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def _split(deps):
    conda = [d for d in deps if isinstance(d, str)]
    pip = [d for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one `- pip:` list"
    return conda, pip[0]["pip"]


def _pins(reqs):
    out = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", req.strip())
        assert m, f"{req!r} is not pinned as name==version"
        out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_python_is_3_11_like_pyproject(env, pyproject):
    conda, _ = _split(env["dependencies"])
    assert "python=3.11" in conda
    assert pyproject["project"]["requires-python"].startswith(">=3.11")
    assert "pip" in conda


def test_pip_pins_equal_pyproject_runtime_and_test(env, pyproject):
    _, pip = _split(env["dependencies"])
    pip_pins = _pins([r for r in pip if not r.startswith("-e")])
    project = pyproject["project"]
    expected = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    missing = {k: v for k, v in expected.items() if pip_pins.get(k) != v}
    extra = {k: v for k, v in pip_pins.items() if k not in expected}
    assert not missing, f"environment.yml lacks or mis-pins (pyproject pin shown): {missing}"
    assert not extra, f"environment.yml pins packages pyproject.toml does not: {extra}"


def test_installs_the_package_itself(env):
    _, pip = _split(env["dependencies"])
    assert "-e ." in pip


def test_no_platform_build_strings(env):
    """Hand-written, not a raw `conda env export`: no `name=version=build`, no prefix."""
    conda, _ = _split(env["dependencies"])
    for spec in conda:
        assert spec.count("=") <= 1, f"{spec!r} carries a build string"
        assert not re.search(r"=(py|h)[0-9a-f_]+", spec), f"{spec!r} carries a build string"
    assert "prefix" not in env
    assert env.get("channels"), "name a channel (conda-forge)"
