"""Profiles inherit from ``default``; the run record keeps what succeeded apart from what failed."""

from __future__ import annotations

import pytest

from prunecxr import artifacts, config, paths, runlock, stages
from test_runner import write_notebook


def _profiles(tmp_path, text: str):
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return path


def test_profiles_inherit_from_default(tmp_path):
    path = _profiles(
        tmp_path, '[default]\nrun = "default"\nn = 1\nm = "a"\n\n[small]\nrun = "small"\nn = 2\n'
    )
    assert config.profiles(path) == {
        "default": {"run": "default", "n": 1, "m": "a"},
        "small": {"run": "small", "n": 2, "m": "a"},
    }
    assert config.profile_overrides(path)["small"] == {"run": "small", "n": 2}


def test_a_profile_key_without_a_default_is_refused(tmp_path):
    path = _profiles(tmp_path, '[default]\nrun = "default"\n\n[other]\nrun = "o"\nn_seed = 3\n')
    with pytest.raises(
        ValueError, match=r"profile \[other\] sets \['n_seed'\], which \[default\] does not name"
    ):
        config.profiles(path)


def test_profiles_need_a_default(tmp_path):
    with pytest.raises(ValueError, match=r"has no \[default\] profile"):
        config.profiles(_profiles(tmp_path, '[smoke]\nrun = "s"\n'))
    with pytest.raises(ValueError, match="is not valid TOML"):
        config.profiles(_profiles(tmp_path, "[default\n"))


def test_shipped_profiles_name_only_what_differs():
    own = config.profile_overrides()
    default = own["default"]
    for name, values in own.items():
        if name != "default":
            same = sorted(k for k, v in values.items() if default.get(k) == v)
            assert not same, f"profile {name!r} repeats default values: {same}"
    assert set(config.profiles()["smoke"]) == set(default)


@pytest.fixture
def stage_folder(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    write_notebook(
        folder / "01_data.ipynb", 'run: str = "r"  # the run\nresolution: int = 64  # px\n'
    )
    write_notebook(
        folder / "02_train.ipynb", 'run: str = "r"  # the run\nn_seeds: int = 10  # seeds\n'
    )
    monkeypatch.setenv(paths.NOTEBOOKS_ENV, str(folder))
    return folder


def test_start_stage_records_the_declared_parameters_from_the_namespace(stage_folder):
    namespace = {"run": "r", "resolution": 32, "unrelated": object()}
    rp = config.start_stage("01_data", namespace)
    record = artifacts.read_run("r")
    assert record["running"]["01_data"]["parameters"] == {"resolution": 32}
    assert record["parameters"] == {}  # not yet: only a finished stage's parameters count
    config.finish_stage("01_data", run="r")
    config.start_stage("02_train", {"run": "r", "n_seeds": 2})
    record = artifacts.read_run("r")
    assert record["parameters"] == {"resolution": 32}
    assert record["stages"]["01_data"]["finished"] >= record["stages"]["01_data"]["started"]
    assert record["running"] == {"02_train": record["running"]["02_train"]}
    assert {"package_version", "git_commit", "created", "updated"} <= set(record)
    assert rp == paths.run_paths("r")
    config.finish_stage("02_train", run="r")


def test_start_stage_checks_names_and_types(stage_folder):
    with pytest.raises(
        stages.ParameterError, match=r"notebook 01_data declares \['resolution'\].*not defined"
    ):
        config.start_stage("01_data", {"run": "r"})
    with pytest.raises(
        stages.ParameterError, match="parameter 'resolution' from notebook 01_data is '64'"
    ):
        config.start_stage("01_data", {"run": "r", "resolution": "64"})


def test_later_stage_needs_the_run(stage_folder):
    with pytest.raises(FileNotFoundError, match="run notebook 01_data for run 'missing' first"):
        config.start_stage("02_train", {"run": "missing", "n_seeds": 1})


def test_a_failed_stage_is_kept_apart(stage_folder):
    config.start_stage("01_data", {"run": "r", "resolution": 32})
    config.finish_stage("01_data", run="r")
    config.start_stage("01_data", {"run": "r", "resolution": -1})
    config.fail_stage("01_data", run="r", error="ValueError: resolution must be positive")
    record = artifacts.read_run("r")
    assert record["parameters"] == {"resolution": 32}
    assert record["failed"]["01_data"]["parameters"] == {"resolution": -1}
    assert record["failed"]["01_data"]["error"] == "ValueError: resolution must be positive"
    assert "running" not in record
    runlock.release("r")


def test_data_record_decides_what_the_run_is(stage_folder):
    config.start_stage("01_data", {"run": "r", "resolution": 32})
    assert not config.is_synthetic("r") and config.run_dataset("r") == "unknown"
    config.record_data("r", {"dataset": "nih-phantom", "synthetic": True})
    assert config.is_synthetic("r") and config.run_dataset("r") == "nih-phantom"
    with pytest.raises(ValueError, match="names its 'dataset' and whether it is 'synthetic'"):
        config.record_data("r", {"dataset": "csv"})
    config.finish_stage("01_data", run="r")


def test_stage_parameters_are_those_the_running_stage_recorded(started_stage):
    with pytest.raises(FileNotFoundError, match="run notebook 01_data"):
        config.stage_parameters("02_train", run="sp")
    config.init_run("sp", profile=None)
    with pytest.raises(RuntimeError, match=r"no running 02_train: start the stage first"):
        config.stage_parameters("02_train", run="sp")
    params = started_stage("02_train", "sp", n_seeds=7, lr=0.5)
    assert params["n_seeds"] == 7 and params["lr"] == 0.5 and "run" not in params
    assert params == config.read_run("sp")["running"]["02_train"]["parameters"]
