"""The live progress line (prunecxr.console) and the events it follows (prunecxr.events)."""

import io
import json

import pytest

from prunecxr import console, events
from prunecxr.train.progress import Report, seed_label


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def progress_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(events.PROGRESS_ENV, str(path))
    return path


def test_emit_appends_json_lines_that_read_back(progress_file):
    events.emit("train", done=0.5, total=3, unit="seed", detail="seed 0 epoch 2/4")
    events.emit("train", done=1, total=3, unit="seed")
    got, offset = events.read_events(progress_file)
    assert [(e.task, e.done, e.total, e.unit) for e in got] == [
        ("train", 0.5, 3, "seed"),
        ("train", 1, 3, "seed"),
    ]
    assert got[0].detail == "seed 0 epoch 2/4" and got[1].fraction == pytest.approx(1 / 3)
    assert offset == progress_file.stat().st_size
    # a line still being written waits for its newline; junk lines are skipped
    with open(progress_file, "a") as fh:
        fh.write(
            "not json\n" + json.dumps({"t": 1, "task": "x", "done": 1, "total": 2, "unit": "u"})
        )
    more, offset2 = events.read_events(progress_file, offset)
    assert more == [] and offset2 == offset + len("not json\n")
    with pytest.raises(ValueError, match="done 4 is not within"):
        events.emit("train", done=4, total=3, unit="seed")


def test_emit_without_a_runner_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(events.PROGRESS_ENV, raising=False)
    events.emit("train", done=1, total=3, unit="seed")
    assert list(tmp_path.iterdir()) == []
    assert events.read_events(tmp_path / "absent.jsonl") == ([], 0)


def test_log_mode_prints_a_line_every_interval_with_the_time_left(progress_file):
    clock, out = Clock(), io.StringIO()
    live = console.LiveProgress(
        "[2/8] 02_train", progress_file, mode="auto", stream=out, clock=clock
    )
    assert live.mode == "log"  # a StringIO is not a terminal
    events.emit("train", done=0, total=4, unit="seed", detail="seed 0 epoch 1/2")
    live.poll()
    for t, done in [(5, 0.5), (11, 1), (15, 1.5), (21, 2)]:
        clock.t = 1000 + t
        events.emit("train", done=done, total=4, unit="seed", detail=f"seed {int(done)} epoch 1/2")
        live.poll()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at 11 s and at 21 s, nothing in between
    assert lines[0].startswith(
        "[2/8] 02_train · train: 1/4 seeds (seed 1 epoch 1/2) · 0:11 elapsed"
    )
    assert "about" in lines[1] and lines[1].endswith("left")


def test_estimate_of_the_time_left_follows_the_task_rate(tmp_path):
    clock = Clock(0.0)
    live = console.LiveProgress("x", tmp_path / "none", mode="off", clock=clock)
    live.first = events.Event(t=10, task="sweep a", done=2, total=12, unit="model")
    live.first_at = 10.0
    live.last = events.Event(t=30, task="sweep a", done=6, total=12, unit="model")
    assert live.seconds_left(30) == pytest.approx(30.0)  # 4 models in 20 s, 6 left
    assert live.seconds_left(40) == pytest.approx(45.0)  # slower than it was: 4 in 30 s
    live.last = live.first
    assert live.seconds_left(40) is None  # no progress yet, no estimate
    assert console.format_duration(3725) == "1:02:05" and console.format_duration(65.4) == "1:05"


def test_a_new_task_restarts_the_estimate(progress_file):
    clock = Clock()
    live = console.LiveProgress("x", progress_file, mode="off", clock=clock)
    events.emit("sweep a", done=6, total=6, unit="model")
    events.emit("sweep b", done=0, total=6, unit="model")
    live.poll()
    assert live.first.task == "sweep b" and live.last.task == "sweep b"
    # the same task started again from 0 (notebook 09 trains one population per arm):
    # the rate of the first run no longer applies
    for k in range(4):
        events.emit("train", done=k, total=3, unit="seed")
    live.poll()
    clock.t += 100
    events.emit("train", done=0, total=3, unit="seed")
    live.poll()
    assert live.first.done == 0 and live.first_at == clock.t
    clock.t += 10
    events.emit("train", done=1, total=3, unit="seed")
    live.poll()
    assert live.seconds_left(clock.t) == pytest.approx(20.0)  # 1 seed in 10 s, 2 left


def test_line_mode_redraws_in_place_and_clears(progress_file, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the line is cut at the terminal's width
    out = Tty()
    live = console.LiveProgress(
        "[3/8] 03_prune", progress_file, mode="auto", stream=out, clock=Clock()
    )
    assert live.mode == "line"
    events.emit(
        "sweep global_l1", done=3, total=18, unit="model", detail="seed 0 (1/3), sparsity 0.5 (4/6)"
    )
    live.poll()
    live.poll()
    text = out.getvalue()
    assert text.count("\r") == 2 and "\n" not in text
    assert "sweep global_l1: 3/18 models (seed 0 (1/3), sparsity 0.5 (4/6))" in text
    live.clear()
    assert out.getvalue().endswith("\r") and live.drawn == 0


def test_off_mode_prints_nothing(progress_file):
    clock, out = Clock(), Tty()
    with console.LiveProgress("x", progress_file, mode="off", stream=out, clock=clock) as live:
        for t in range(0, 60, 5):
            clock.t = 1000 + t
            events.emit("train", done=t / 60, total=1, unit="seed")
            live.poll()
    assert out.getvalue() == ""
    with pytest.raises(ValueError, match="unknown progress mode 'loud'"):
        console.resolve_mode("loud", out)


def test_training_report_emits_seed_and_epoch_progress(progress_file):
    report = Report(False, total=2, done=0, max_epochs=2)
    report.start(seed_label(0), 0)
    report.epoch(seed_label(0), 0.5, 0.4, 0.3)
    report.final(0, 0.4, 2)  # the last epoch: final, then epoch, then stop
    report.epoch(seed_label(0), 0.4, 0.4, 0.3)
    report.stop(seed_label(0))
    report.start(seed_label(1), 1)  # resumed after one epoch
    report.close()
    got, _ = events.read_events(progress_file)
    assert {e.task for e in got} == {"train"} and {e.total for e in got} == {2}
    assert [e.done for e in got] == [0, 0, 0.5, 1, 1.5, 1]
    assert got[2].detail == "seed 0 epoch 2/2" and got[4].detail == "seed 1 epoch 2/2"
