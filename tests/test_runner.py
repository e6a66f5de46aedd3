"""The runner: declared parameters, overrides, selection, failure, resumption, the CLI."""

import json
from pathlib import Path

import nbformat
import pytest

from prunecxr import __main__ as cli
from prunecxr import artifacts, config, paths, runner, stages
from prunecxr.runner import NotebookFailed
from prunecxr.stages import NotebookError, ParameterError


def write_notebook(path, parameters: str, cells=(), *, tag=True, markdown="# A stage"):
    """A notebook with a markdown cell, a parameters cell and code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell(parameters)
    if tag:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), params]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# A stage that skips finished work, like the real ones: it counts its executions and the
# times it really worked in files under the run directory, and fails while a flag file
# naming it exists.
STAGE = """\
from pathlib import Path
from prunecxr import config
rp = config.start_stage(STAGE, globals())
marker = rp.root / f"{STAGE}.done"
log = rp.root / f"{STAGE}.log"
log.write_text(log.read_text() + "executed\\n" if log.exists() else "executed\\n")
if not marker.exists():
    if flag and Path(flag).exists() and STAGE in Path(flag).read_text():
        raise RuntimeError(f"{STAGE}: deliberate failure while {Path(flag).name} exists")
    (rp.root / f"{STAGE}.work").write_text(
        ((rp.root / f"{STAGE}.work").read_text() if (rp.root / f"{STAGE}.work").exists() else "")
        + "worked\\n")
    marker.write_text("done")
config.finish_stage(STAGE, run=run)
"""


def stage_notebook(folder, name, *, extra_params=""):
    params = (
        'run: str = "fake"  # the run\n'
        "size: int = 2  # a number every stage declares\n"
        'flag: str = ""  # fail while this file exists and names the stage\n' + extra_params
    )
    return write_notebook(Path(folder) / f"{name}.ipynb", params, [f"STAGE = {name!r}", STAGE])


@pytest.fixture
def fake_pipeline(tmp_path):
    folder = tmp_path / "notebooks"
    stage_notebook(folder, "01_first")
    stage_notebook(
        folder, "02_second", extra_params="only_two: float = 0.5  # used by 02 alone; 0 = off\n"
    )
    stage_notebook(folder, "03_third")
    return folder


PROFILE = {"run": "fake", "size": 2, "flag": "", "only_two": 0.5}


# ---------------------------------------------------------------------------------------------
# Parameters cells
# ---------------------------------------------------------------------------------------------


def test_parse_parameters_cell_reads_types_defaults_and_comments():
    params = stages.parse_parameters_cell(
        'run: str = "default"  # the run\n'
        "n_seeds: int = 10  # models\n"
        "methods: list[str] = ['global_l1', 'random']  # methods\n"
        "lr = 1e-3\n"
    )
    assert list(params) == ["run", "n_seeds", "methods", "lr"]
    assert params["n_seeds"].annotation == "int" and params["n_seeds"].default == 10
    assert params["n_seeds"].help == "models"
    assert params["methods"].default == ["global_l1", "random"]
    assert params["lr"].annotation is None and params["lr"].default == 1e-3


@pytest.mark.parametrize(
    "source, match",
    [
        ("n: int = 2 * 5", "'n' is not a literal"),
        ("import os", "not `name: type = literal`"),
        ("def f():\n    pass", "not `name: type = literal`"),
        ("a = b = 1", "not `name: type = literal`"),
        ("n: int = 1\nn: int = 2", "'n' is declared twice"),
        ("n: int = (", "does not parse"),
    ],
)
def test_parse_parameters_cell_refuses_non_literals(source, match):
    with pytest.raises(NotebookError, match=match):
        stages.parse_parameters_cell(source, notebook="09_x")


def test_read_notebook_needs_a_tagged_first_code_cell_that_declares_run(tmp_path):
    untagged = write_notebook(tmp_path / "01_a.ipynb", 'run: str = "x"', tag=False)
    with pytest.raises(NotebookError, match=r"01_a: the first code cell .* not tagged"):
        stages.read_notebook(untagged)
    no_run = write_notebook(tmp_path / "02_b.ipynb", "n: int = 1")
    with pytest.raises(NotebookError, match="02_b: .* does not declare 'run'"):
        stages.read_notebook(no_run)
    nb = stages.read_notebook(write_notebook(tmp_path / "03_c.ipynb", 'run: str = "x"'))
    assert nb.name == "03_c" and nb.number == 3 and nb.parameters_cell == 1


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def five(tmp_path):
    for name in ["01_data", "02_train", "03_prune", "04_forgetting", "05_cooccurrence"]:
        write_notebook(tmp_path / f"{name}.ipynb", 'run: str = "x"  # run')
    (tmp_path / "scratch.ipynb").write_text("{}")  # not NN_name: ignored
    return stages.discover_notebooks(tmp_path)


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, ["01", "02", "03", "04", "05"]),
        ("all", ["01", "02", "03", "04", "05"]),
        ("03", ["03"]),
        ("3", ["03"]),
        ("03-05", ["03", "04", "05"]),
        ("01_data,04", ["01", "04"]),
        ("04,01", ["01", "04"]),  # always pipeline order
        ("02-03,05", ["02", "03", "05"]),
    ],
)
def test_select_notebooks(five, spec, expected):
    assert [nb.name[:2] for nb in stages.select_notebooks(spec, five)] == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("08", "no notebook '08'"),
        ("03_prun", "no notebook '03_prun'"),
        ("05-03", "runs backwards"),
    ],
)
def test_select_notebooks_refuses_unknown(five, spec, match):
    with pytest.raises(ValueError, match=match):
        stages.select_notebooks(spec, five)


# ---------------------------------------------------------------------------------------------
# Overrides and the resolved parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", 3),
        ("1e-3", 1e-3),
        ("-0.5", -0.5),
        ("true", True),
        ("False", False),
        ("['global_l1']", ["global_l1"]),
        ('["a", "b"]', ["a", "b"]),
        ("[0.0,0.5]", [0.0, 0.5]),
        ("nih-cxr-lt", "nih-cxr-lt"),
        ("/data/nih", "/data/nih"),
        ("'quoted'", "quoted"),
    ],
)
def test_parse_value(text, value):
    assert runner.parse_value(text) == value
    assert type(runner.parse_value(text)) is type(value)


@pytest.fixture
def declared(tmp_path):
    write_notebook(
        tmp_path / "01_data.ipynb",
        'run: str = "default"  # run\n'
        'dataset: str = "nih-phantom"  # data\n'
        'data_root: str = ""  # folder\n',
    )
    write_notebook(
        tmp_path / "02_train.ipynb",
        'run: str = "default"  # run\n'
        "n_seeds: int = 10  # models\n"
        "lr: float = 0.001  # learning rate\n"
        "pretrained: bool = False  # ImageNet\n",
    )
    write_notebook(
        tmp_path / "03_prune.ipynb",
        'run: str = "default"  # run\n'
        "methods: list[str] = ['global_l1']  # methods\n"
        "sparsities: list[float] = [0.0, 0.5]  # fractions\n"
        "n_seeds: int = 10  # models\n",
    )
    return stages.discover_notebooks(tmp_path)


BASE = {
    "run": "default",
    "dataset": "nih-phantom",
    "data_root": "",
    "n_seeds": 10,
    "lr": 0.001,
    "pretrained": False,
    "methods": ["global_l1"],
    "sparsities": [0.0, 0.5],
}


def resolve(declared, overrides=(), spec=None, profile=BASE, run=None):
    return runner.resolve_parameters(
        profile,
        overrides,
        selected=stages.select_notebooks(spec, declared),
        notebooks=declared,
        profile="test",
        run=run,
    )


def test_resolve_applies_typed_overrides(declared):
    run, params = resolve(
        declared,
        [
            "n_seeds=3",
            "methods=['global_l1','random']",
            "dataset=nih-cxr-lt",
            "lr=1",
            "pretrained=true",
            "data_root=1999",
            "sparsities=[0,0.9]",
        ],
    )
    assert run == "default"
    assert params["n_seeds"] == 3
    assert params["methods"] == ["global_l1", "random"]
    assert params["dataset"] == "nih-cxr-lt"
    assert params["lr"] == 1.0 and isinstance(params["lr"], float)
    assert params["pretrained"] is True
    assert params["data_root"] == "1999"  # a str parameter keeps the text
    assert params["sparsities"] == [0.0, 0.9] and all(
        isinstance(s, float) for s in params["sparsities"]
    )


def test_list_of_bare_words_survives_a_shell_that_ate_the_quotes(declared):
    _, params = resolve(declared, ["methods=[global_l1,random]", "sparsities=[0,0.5]"])
    assert params["methods"] == ["global_l1", "random"]
    assert params["sparsities"] == [0.0, 0.5]


def test_make_reproduce_maps_onto_the_cli():
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("no make")
    root = paths.project_root()
    out = subprocess.run(
        [
            "make",
            "-n",
            "reproduce",
            "PROFILE=smoke",
            "RUN=r1",
            "PARAMS=n_seeds=3 methods=['global_l1']",
            "NOTEBOOKS=03-05",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = " ".join(out.replace("\\\n", " ").split())
    assert (
        "-m prunecxr run --profile smoke --run r1 --notebooks 03-05 "
        '-p "n_seeds=3" -p "methods=[\'global_l1\']"'
    ) in command


def test_unknown_override_names_the_key_and_the_notebooks(declared):
    with pytest.raises(
        ParameterError,
        match=r"unknown parameter 'n_seed'.*"
        r"selected: 01_data, 02_train, 03_prune.*did you mean 'n_seeds'",
    ):
        resolve(declared, ["n_seed=3"])


def test_override_of_an_unselected_notebook_is_refused(declared):
    with pytest.raises(
        ParameterError,
        match=r"unknown parameter 'dataset'.*selected: 03_prune"
        r".*declared by 01_data, which is not selected",
    ):
        resolve(declared, ["dataset=nih-cxr-lt"], spec="03")


@pytest.mark.parametrize(
    "override, match",
    [
        ("n_seeds=3.5", r"n_seeds=3.5 does not match the type int that notebook 02_train"),
        ("n_seeds=many", r"n_seeds=many does not match the type int"),
        ("pretrained=1", r"pretrained=1 does not match the type bool"),
        ("methods=global_l1", r"methods=global_l1 does not match the type list\[str\]"),
        ("sparsities=['a']", r"does not match the type list\[float\]"),
    ],
)
def test_override_of_the_wrong_type_is_refused(declared, override, match):
    with pytest.raises(ParameterError, match=match):
        resolve(declared, [override])


def test_bad_override_syntax_and_repeats(declared):
    with pytest.raises(ParameterError, match="not key=value"):
        resolve(declared, ["n_seeds"])
    with pytest.raises(ParameterError, match="given twice: n_seeds"):
        resolve(declared, ["n_seeds=1", "n_seeds=2"])


def test_profile_keys_must_be_declared_and_typed(declared):
    with pytest.raises(ParameterError, match=r"unknown parameter 'epochs' \(profile 'test'\)"):
        resolve(declared, profile=BASE | {"epochs": 3})
    with pytest.raises(ParameterError, match=r"n_seeds.*profile 'test' \(02_train\).*int"):
        resolve(declared, profile=BASE | {"n_seeds": "ten"})


def test_run_name_from_flag_or_override(declared):
    assert resolve(declared, run="mine")[0] == "mine"
    assert resolve(declared, ["run=other"])[0] == "other"
    assert resolve(declared, ["run=same"], run="same")[1]["run"] == "same"
    with pytest.raises(ParameterError, match="contradicts"):
        resolve(declared, ["run=other"], run="mine")
    with pytest.raises(ValueError, match="invalid run name"):
        resolve(declared, run="../escape")


def test_each_notebook_gets_only_what_it_declares(declared):
    _, params = resolve(declared)
    by_name = {nb.name: nb for nb in declared}
    assert runner.notebook_parameters(by_name["01_data"], params) == {
        "run": "default",
        "dataset": "nih-phantom",
        "data_root": "",
    }
    assert set(runner.notebook_parameters(by_name["03_prune"], params)) == {
        "run",
        "methods",
        "sparsities",
        "n_seeds",
    }


def test_unknown_parameter_refused_before_anything_runs(fake_pipeline, prunecxr_home):
    with pytest.raises(ParameterError, match=r"'sizes'.*01_first, 02_second, 03_third"):
        runner.run_notebooks(
            profile="t",
            notebooks_dir=fake_pipeline,
            profile_values=PROFILE,
            overrides=["sizes=3"],
            report=False,
        )
    assert not (prunecxr_home / "runs").exists()
    assert not (prunecxr_home / "reports").exists()


def test_real_profiles_resolve_against_a_notebook_set_that_declares_them(tmp_path):
    """Every profile's values have one type per key (what the notebooks will declare)."""
    table = config.profiles()
    assert {"default", "smoke", "nih-cxr-lt", "mimic-cxr-lt"} <= set(table)
    for key in table["default"]:
        kinds = {type(values[key]).__name__ for values in table.values() if key in values}
        assert len(kinds) == 1 or kinds == {"int", "float"}, f"{key}: {kinds}"
    for name, values in table.items():  # a profile has its own run, or adds notebooks to default's
        assert values["run"] == name or (
            values["run"] == "default" and not values["notebooks"].startswith("01")
        ), name


# ---------------------------------------------------------------------------------------------
# Execution: failure and resumption
# ---------------------------------------------------------------------------------------------


def _count(path):
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_failure_stops_the_run_and_a_second_run_completes_without_redoing(
    fake_pipeline, prunecxr_home, tmp_path
):
    flag = tmp_path / "fail"
    flag.write_text("02_second")
    profile = PROFILE | {"flag": str(flag)}
    rp = paths.run_paths("fake")
    lines = []
    with pytest.raises(NotebookFailed) as info:
        runner.run_notebooks(
            profile="t",
            notebooks_dir=fake_pipeline,
            profile_values=profile,
            report=False,
            echo=lines.append,
        )
    err = info.value
    assert err.notebook == "02_second"
    assert err.cell_index == 3  # markdown, parameters, STAGE = ..., the stage's code
    assert err.ename == "RuntimeError" and "deliberate failure" in err.evalue
    text = err.describe()
    assert "notebook 02_second failed in cell 3" in text
    assert "RuntimeError: 02_second: deliberate failure" in text
    assert "raise RuntimeError" in text  # the traceback tail shows the failing line
    reports = rp.reports
    assert (reports / "02_second.failed.ipynb").exists()
    assert not (reports / "02_second.ipynb").exists()
    assert not (reports / "03_third.ipynb").exists()  # the run stopped at 02
    assert not list(reports.glob(".*running*"))  # no half-written notebook left behind
    assert _count(rp.root / "01_first.log") == 1 and _count(rp.root / "01_first.work") == 1
    assert not (rp.root / "03_third.log").exists()
    timings = artifacts.read_timings("fake")
    assert timings["02_second"]["status"] == "failed"
    assert timings["01_first"]["status"] == "ok"

    flag.unlink()  # the cause is fixed; the same command again
    result = runner.run_notebooks(
        profile="t",
        notebooks_dir=fake_pipeline,
        profile_values=profile,
        report=False,
        echo=lines.append,
    )
    assert [nb.status for nb in result.notebooks] == ["ok", "ok", "ok"]
    for stage in ["01_first", "02_second", "03_third"]:
        assert _count(rp.root / f"{stage}.work") == 1, f"{stage} redid finished work"
        assert (reports / f"{stage}.ipynb").exists() and (reports / f"{stage}.html").exists()
    assert _count(rp.root / "01_first.log") == 2  # executed again, skipped its work
    assert not (reports / "02_second.failed.ipynb").exists()
    record = config.read_run("fake")
    assert record["profile"] == "t"
    assert record["parameters"]["size"] == 2 and record["parameters"]["flag"] == str(flag)
    assert all(record["stages"][s]["finished"] for s in ["01_first", "02_second", "03_third"])
    timings = artifacts.read_timings("fake")
    assert {k: v["status"] for k, v in timings.items()} == dict.fromkeys(
        ["01_first", "02_second", "03_third"], "ok"
    )
    assert all(v["seconds"] > 0 for v in timings.values())
    assert timings["02_second"]["parameters"] == {
        "run": "fake",
        "size": 2,
        "flag": str(flag),
        "only_two": 0.5,
    }
    assert any("03_third finished" in line for line in lines)


@pytest.mark.slow
def test_overrides_reach_the_notebook_and_run_json(fake_pipeline, prunecxr_home, caplog):
    caplog.set_level("INFO")
    result = runner.run_notebooks(
        profile="t",
        notebooks_dir=fake_pipeline,
        notebooks="02",
        profile_values=PROFILE,
        overrides=["size=5", "only_two=2"],
        run="other",
        report=False,
        echo=lambda s: None,
    )
    assert result.run == "other" and result.parameters["only_two"] == 2.0
    executed = nbformat.read(paths.run_paths("other").reports / "02_second.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "size = 5" in injected[0].source and 'run = "other"' in injected[0].source
    assert config.read_run("other")["stages"]["02_second"]["parameters"]["size"] == 5
    # papermill's own parser misreads the '=' in 02's comment; its warnings are dropped
    assert "unknown parameter" not in caplog.text and "Unable to parse" not in caplog.text


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_maps_options_onto_run_notebooks(monkeypatch, capsys):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return runner.RunResult("r1", kwargs["profile"], {}, [])

    monkeypatch.setattr(runner, "run_notebooks", fake)
    code = cli.main(
        [
            "run",
            "--profile",
            "smoke",
            "--run",
            "r1",
            "--notebooks",
            "03-05",
            "-p",
            "n_seeds=3",
            "-p",
            "methods=['global_l1']",
            "--no-report",
        ]
    )
    assert code == 0
    assert seen["profile"] == "smoke" and seen["run"] == "r1" and seen["notebooks"] == "03-05"
    assert seen["overrides"] == ["n_seeds=3", "methods=['global_l1']"]
    assert seen["report"] is False
    assert "done: run 'r1'" in capsys.readouterr().out
    assert seen["progress"] == "auto" and seen["log_output"] is False  # the live line by default
    for flags in (["--quiet"], ["-q"], ["-v"]):
        assert cli.main(["run", *flags]) == 0
        assert seen["progress"] == "off" and seen["log_output"] is (flags == ["-v"])
    with pytest.raises(SystemExit):
        cli.main(["run", "-q", "-v"])


def test_cli_reports_a_failed_notebook_and_exits_1(monkeypatch, capsys):
    def fake(**kwargs):
        raise NotebookFailed(
            "04_forgetting",
            cell_index=7,
            execution_count=5,
            ename="KeyError",
            evalue="'ap'",
            traceback=["\x1b[31mKeyError\x1b[0m"],
            source="df['ap']",
        )

    monkeypatch.setattr(runner, "run_notebooks", fake)
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert "notebook 04_forgetting failed in cell 7 (In [5]): KeyError: 'ap'" in err
    assert "df['ap']" in err and "\x1b" not in err
    assert "run the same command again" in err


def test_cli_usage_errors_exit_2(monkeypatch, capsys):
    def fake(**kwargs):
        raise ParameterError("unknown parameter 'n_seed' (override n_seed=3)")

    monkeypatch.setattr(runner, "run_notebooks", fake)
    assert cli.main(["run", "-p", "n_seed=3"]) == 2
    assert "unknown parameter 'n_seed'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_cli_profiles_lists_every_profile_and_key(capsys):
    assert cli.main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name, values in config.profiles().items():
        assert name in out.splitlines()[0]
        for key in values:
            assert any(line.startswith(key + " ") for line in out.splitlines()), key
    assert json.dumps(config.load_profile("smoke")["methods"]) in out


def test_cli_report_needs_an_existing_run(capsys):
    assert cli.main(["report", "--run", "nothing-here"]) == 2
    assert "nothing-here" in capsys.readouterr().err


@pytest.mark.slow
def test_the_live_line_follows_the_events_a_stage_emits(
    tmp_path, prunecxr_home, monkeypatch, capfd
):
    """Not a terminal: a line every interval, from the kernel's own events, and no kernel
    transport warning; the progress file is gone afterwards. The kernel's sockets are files
    in a folder of this execution's own, removed after it (two kernels started at the same
    moment cannot take the same ones)."""
    from prunecxr import console

    monkeypatch.setattr(console, "LOG_INTERVAL", 0.4)
    emitting = (
        "import time\nfrom prunecxr import events\n"
        "for i in range(8):\n"
        "    events.emit('sweep m', done=i, total=8, unit='model', detail=f'level {i}')\n"
        "    time.sleep(0.25)\n"
    )
    where = tmp_path / "ip.txt"
    sockets = (
        "import json\nfrom ipykernel.connect import get_connection_info\n"
        f"open({str(where)!r}, 'w').write(json.loads(get_connection_info())['ip'])\n"
    )
    nb = stages.read_notebook(
        write_notebook(
            tmp_path / "nb" / "01_emit.ipynb",
            'run: str = "p"  # run\nsize: int = 1  # unused',
            [emitting, sockets],
        )
    )
    out = []

    class Stream:
        def write(self, text):
            out.append(text)

        def flush(self):
            pass

    runner.execute_notebook(
        nb,
        run="p",
        parameters={"run": "p"},
        progress="log",
        label="[1/1] 01_emit",
        stream=Stream(),
        export_html=False,
    )
    lines = "".join(out).splitlines()
    assert len(lines) >= 2, lines
    assert all(line.startswith("[1/1] 01_emit · ") for line in lines)
    assert any("sweep m: " in line and "/8 models (level " in line for line in lines), lines
    assert not list(paths.run_paths("p").reports.glob(".*progress*"))
    assert "without encryption" not in capfd.readouterr().err
    ip = Path(where.read_text())
    assert ip.is_absolute() and ip.parent.name.startswith("prunecxr-kernel-"), ip
    assert not ip.parent.exists() and not list((tmp_path / "nb").glob("kernel-ipc*"))
