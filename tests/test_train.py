"""Training the population: recipe pieces, determinism across schedules, resuming, early
stopping, records."""

import math
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from prunecxr import artifacts, inference, models, paths, runtime
from prunecxr import train as T
from prunecxr.metrics import ranking_metrics
from prunecxr.train import checkpoints, loop

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _config(**kw):
    base = dict(
        model="small_resnet", pretrained=False, max_epochs=3, patience=3, batch_size=32, lr=1e-3
    )
    base.update(kw)
    return T.TrainConfig(**base)


def _fit(arrays, run, *, seeds=2, population="sequential", threads=1, device="cpu", **kw):
    tr_x, tr_y, va_x, va_y = arrays
    return T.fit_population(
        tr_x,
        tr_y,
        va_x,
        va_y,
        seeds=seeds,
        config=_config(**kw),
        run=run,
        device=device,
        population=population,
        threads=threads,
        progress=False,
    )


def _weights(run, seed):
    return torch.load(paths.run_paths(run).checkpoint(seed), weights_only=True)


def _same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _history(run, seed):
    return artifacts.read_history(run, seed).drop(columns="seconds")


# -- recipe pieces ---------------------------------------------------------------------


def test_early_stopping_on_a_scripted_loss_sequence():
    stop = T.EarlyStopping(patience=3)
    losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, float("nan"), 0.7]
    improved = [stop.update(e, loss) for e, loss in enumerate(losses, start=1)]
    assert improved == [True, True, False, False, True, False, False, False]
    assert (stop.best_epoch, stop.best_loss, stop.bad_epochs) == (5, 0.7, 3)  # ties do not improve
    assert stop.should_stop
    again = T.EarlyStopping(patience=3)
    again.load_state_dict(stop.state_dict())
    assert again == stop


def test_the_config_refuses_bad_values():
    assert T.TrainConfig() == T.TrainConfig(
        model="resnet50", pretrained=True, max_epochs=60, patience=15, batch_size=256, lr=1e-4
    )  # the paper's
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        _config(model="vgg16")
    with pytest.raises(ValueError, match="patience must be a positive int, got 0"):
        _config(patience=0)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        _config(lr=float("nan"))
    with pytest.raises(ValueError, match="bn_eval_compat must be true or false"):
        _config(bn_eval_compat=1)


@pytest.mark.parametrize("angle", [0.0, 7.3, -15.0, 90.0])
@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_is_torchvisions_flip_then_rotation(flip, angle):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    img = torch.randint(0, 256, (1, 12, 20), dtype=torch.uint8)  # not square on purpose
    ref = TF.rotate(
        TF.horizontal_flip(img) if flip else img, angle, interpolation=InterpolationMode.NEAREST
    )
    got = T.augment(img, flip=torch.tensor([flip]), angle=torch.tensor([angle]))
    assert got.dtype == torch.uint8 and torch.equal(got, ref)


def test_augmentation_draws_come_from_the_generator_alone():
    a = T.draw_augmentation(64, torch.Generator().manual_seed(3))
    b = T.draw_augmentation(64, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    flip, angle = a
    assert flip.dtype == torch.bool and 0 < flip.sum() < 64
    assert angle.abs().max() <= T.MAX_ROTATION
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)  # any leading shape
    out = T.augment(batch, flip=flip[:6].view(2, 3), angle=angle[:6].view(2, 3))
    assert out.shape == batch.shape
    assert torch.equal(out[1, 2], T.augment(batch[1, 2:3], flip=flip[5:6], angle=angle[5:6])[0])
    with pytest.raises(ValueError, match="leading shape"):
        T.augment(batch, flip=flip[:6], angle=angle[:6])


# -- the population ----------------------------------------------------------------------


def test_the_same_seed_gives_identical_weights(arrays):
    first = _fit(arrays, "a")
    _fit(arrays, "b")
    assert list(first["status"]) == ["trained", "trained"]
    for s in (0, 1):
        assert _same(_weights("a", s), _weights("b", s))
        assert _history("a", s).equals(_history("b", s))
    assert not _same(_weights("a", 0), _weights("a", 1))
    # records: docs/artifacts.md's history columns; no resume point left; checkpoints load safely
    rp = paths.run_paths("a")
    hist = pd.read_csv(rp.history(0))
    assert list(hist.columns) == list(artifacts.HISTORY_COLUMNS) and list(hist["epoch"]) == [
        1,
        2,
        3,
    ]
    assert np.isfinite(hist[["train_loss", "val_loss", "val_mean_ap"]].to_numpy()).all()
    assert not rp.train_state(0).exists()
    model = models.create_model("small_resnet", 4)
    model.load_state_dict(torch.load(rp.checkpoint(0), weights_only=True))
    # a final seed is skipped, in either mode (Ray is not even started: nothing is pending)
    again = _fit(arrays, "a", population="ray", device="cuda:7")
    assert list(again["status"]) == ["already trained", "already trained"]


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, torch
    from prunecxr import train as T
    from prunecxr.train import feed

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def main():
        torch.set_num_threads({threads})
        data = np.load({data!r})
        kind, at = {kind!r}, {at}
        count = [0]
        if kind == "batch":  # in the middle of an epoch
            take = feed.DeviceSplit.take
            def counted(self, *args):
                count[0] += 1
                if count[0] == at:
                    die()
                return take(self, *args)
            feed.DeviceSplit.take = counted
        elif kind == "write":  # a resume point written, not yet renamed into place
            replace = os.replace
            def counted(src, dst):
                if str(dst).endswith("last.pt"):
                    count[0] += 1
                    if count[0] == at:
                        die()
                return replace(src, dst)
            os.replace = counted
        T.fit_population(data["tx"], data["ty"], data["vx"], data["vy"], seeds=2,
                         config=T.TrainConfig(**{config!r}), run="killed", device="cpu",
                         population="sequential", threads=1, progress=False)

    main()
""")


@pytest.mark.parametrize(
    "kind,at",
    [
        ("batch", 22),  # 4 batches an epoch (3 train, 1 val): seed 1, epoch 2
        ("write", 2),  # seed 0's epoch 2 written, not renamed: epoch 1 stays its resume point
    ],
)
def test_a_killed_run_resumes_to_the_uninterrupted_weights(arrays, tmp_path, kind, at):
    """(A killed Ray worker, and a killed driver of Ray tasks: tests/test_ray.py.)"""
    epochs = 4
    cfg = dict(
        model="small_resnet",
        pretrained=False,
        max_epochs=epochs,
        patience=epochs,
        batch_size=32,
        lr=1e-3,
        schedule="onecycle",
    )  # the rate is a function of the step: resumed on its curve
    tx, ty, vx, vy = arrays
    np.savez(tmp_path / "data.npz", tx=tx, ty=ty, vx=vx, vy=vy)
    script = tmp_path / "killer.py"
    script.write_text(
        _KILLER.format(threads=1, data=str(tmp_path / "data.npz"), kind=kind, at=at, config=cfg)
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    rp = paths.run_paths("killed")
    execution = artifacts.read_train_record("killed")["execution"]
    assert execution["population"] == "sequential" and execution["threads"] == 1
    unfinished = [s for s in (0, 1) if rp.train_state(s).exists()]
    assert unfinished == ([1] if kind == "batch" else [0])  # seed 0 is final
    state = torch.load(rp.train_state(unfinished[-1]), weights_only=True)  # it loads safely
    assert state["seed"] == unfinished[-1] and 1 <= state["epoch"] < epochs
    if kind == "write":
        assert state["epoch"] == 1  # the interrupted write of epoch 2 left its temporary
        assert list(rp.seed_dir(0).glob(".*.tmp"))

    resumed = _fit(arrays, "killed", max_epochs=epochs, patience=epochs, schedule="onecycle")
    assert "resumed" in set(resumed["status"])
    _fit(
        arrays,
        "whole",
        population="sequential",
        max_epochs=epochs,
        patience=epochs,
        schedule="onecycle",
    )
    for s in (0, 1):
        assert _same(_weights("killed", s), _weights("whole", s)), f"seed {s}"
        assert _history("killed", s).equals(_history("whole", s))
        assert not rp.train_state(s).exists() and not list(rp.seed_dir(s).glob(".*.tmp"))


def test_early_stopping_keeps_the_lowest_validation_loss(arrays, monkeypatch):
    def scripted(losses):
        calls = [0]

        def fake_validate(net, val, *, batch_size, device, precision):
            calls[0] += 1
            return losses[calls[0] - 1], 0.5

        return fake_validate

    # improves until epoch 7, then stops after 3 epochs without improvement
    script = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.35, 0.32, 0.31, 0.1, 0.1]
    monkeypatch.setattr(loop, "validate", scripted(script))
    _fit(arrays, "es", seeds=1, max_epochs=12, patience=3)
    hist = _history("es", 0)
    assert list(hist["epoch"]) == list(range(1, 11)) and hist["val_loss"].tolist() == script[:10]
    monkeypatch.setattr(loop, "validate", scripted(list(np.linspace(1, 0.1, 12))))
    _fit(arrays, "es7", seeds=1, max_epochs=7, patience=3)
    assert _same(_weights("es", 0), _weights("es7", 0))  # the weights after epoch 7


def test_bn_eval_compat_freezes_batchnorm_after_the_first_epoch(arrays):
    _fit(arrays, "one", seeds=1, max_epochs=1)
    _fit(arrays, "compat", seeds=1, max_epochs=3, bn_eval_compat=True)
    _fit(arrays, "normal", seeds=1, max_epochs=3)
    one, compat, normal = _weights("one", 0), _weights("compat", 0), _weights("normal", 0)
    steps = math.ceil(96 / 32)
    assert int(compat["bn1.num_batches_tracked"]) == steps
    assert int(normal["bn1.num_batches_tracked"]) == 3 * steps
    assert torch.equal(compat["bn1.running_mean"], one["bn1.running_mean"])
    assert not torch.equal(normal["bn1.running_mean"], one["bn1.running_mean"])
    assert not torch.equal(compat["conv1.weight"], one["conv1.weight"])  # still training


def test_a_population_keeps_one_configuration(arrays):
    _fit(arrays, "cfg", seeds=1, max_epochs=1)
    with pytest.raises(ValueError, match=r"lr=0\.001 \(now 0\.002\)"):
        _fit(arrays, "cfg", seeds=2, max_epochs=1, lr=2e-3)
    tr_x, tr_y, va_x, va_y = arrays
    with pytest.raises(ValueError, match=r"val labels must be 0/1, found values in \[0, 2\]"):
        T.fit_population(
            tr_x, tr_y, va_x, va_y * 2, seeds=1, config=_config(), run="bad", progress=False
        )
    with pytest.raises(ValueError, match="classes 4 vs 3"):
        T.fit_population(
            tr_x, tr_y, va_x, va_y[:, :3], seeds=1, config=_config(), run="bad", progress=False
        )
    with pytest.raises(ValueError, match="uint8"):
        T.fit_population(
            tr_x.astype(np.float32),
            tr_y,
            va_x,
            va_y,
            seeds=1,
            config=_config(),
            run="bad",
            progress=False,
        )
    for removed in ("auto", "grouped", "threads", "parallel"):
        with pytest.raises(ValueError, match=f"unknown population mode '{removed}'"):
            _fit(arrays, "bad", population=removed)
    with pytest.raises(ValueError, match="distinct"):
        _fit(arrays, "bad", seeds=[1, 1])
    with pytest.raises(ValueError, match=r"threads must be an int >= 0"):
        _fit(arrays, "bad", threads=-1)


def test_threads_zero_means_every_usable_core(arrays):
    _fit(arrays, "all", seeds=1, max_epochs=1, threads=0)
    assert artifacts.read_train_record("all")["execution"] == {
        "population": "sequential",
        "threads": runtime.usable_cores(),
        "workers": 1,
        "device": "cpu",
        "precision": "bf16" if runtime.cpu_has_bf16() else "fp32",
    }
    with pytest.raises(
        ValueError, match=r"gpus_per_model must be a fraction in \(0, 1\] .* got 1\.5"
    ):
        T.fit_population(
            *arrays, seeds=1, config=_config(), run="gpu", population="ray", gpus_per_model=1.5
        )


def test_sequential_training_never_imports_ray(arrays, tmp_path):
    np.savez(tmp_path / "data.npz", tx=arrays[0], ty=arrays[1], vx=arrays[2], vy=arrays[3])
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from prunecxr import compress, train as T
        data = np.load({str(tmp_path / "data.npz")!r})
        T.fit_population(data["tx"], data["ty"], data["vx"], data["vy"], seeds=1, run="plain",
                         config=T.TrainConfig(model="small_resnet", pretrained=False, max_epochs=1,
                                              patience=1, batch_size=32, lr=1e-3),
                         device="cpu", threads=1, progress=False)
        print("ray" in sys.modules)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


def test_a_population_continues_only_with_its_thread_count(arrays):
    """The thread count changes the rounding: a started population refuses another one."""
    _fit(arrays, "thr", seeds=1, max_epochs=1, threads=1)
    with pytest.raises(
        ValueError, match=r"trained with threads=1 .*asks for threads=2.*set threads = 1"
    ):
        _fit(arrays, "thr", seeds=2, max_epochs=1, threads=2)
    assert not paths.run_paths("thr").seed_dir(1).exists()
    # nothing left to train: no refusal, the record stays as it was
    assert list(_fit(arrays, "thr", seeds=1, max_epochs=1, threads=2)["status"]) == [
        "already trained"
    ]
    assert artifacts.read_train_record("thr")["execution"]["threads"] == 1
    # a record without the execution (an older prunecxr) cannot vouch for its seeds
    record = artifacts.read_train_record("thr")
    del record["execution"]
    artifacts.write_json(paths.run_paths("thr").train_config, record)
    with pytest.raises(ValueError, match="does not record the device and thread count"):
        _fit(arrays, "thr", seeds=2, max_epochs=1, threads=1)


def test_onecycle_rises_to_lr_then_falls_to_nearly_zero():
    from prunecxr.train import recipe

    cfg = _config(lr=4e-3, schedule="onecycle")
    total = 400
    rates = [recipe.learning_rate(cfg, k, total) for k in range(total)]
    peak = int(np.argmax(rates))
    assert peak == 100 and rates[peak] == pytest.approx(4e-3)  # a quarter of the steps
    assert rates[0] == pytest.approx(4e-3 / 25) and rates[-1] == pytest.approx(4e-3 * 1e-4)
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1]))
    assert all(a > b for a, b in zip(rates[peak:-1], rates[peak + 1 :]))
    assert {recipe.learning_rate(_config(lr=4e-3), k, total) for k in (0, 200, 399)} == {4e-3}
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        _config(schedule="cosine")


def test_precision_auto_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    from prunecxr.train import recipe

    cpu = torch.device("cpu")
    assert (
        recipe.resolve_precision("fp32", cpu) == "fp32"
        and recipe.resolve_precision("bf16", cpu) == "bf16"
    )
    for native in (True, False):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda native=native: native)
        assert recipe.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        _config(precision="fp16")


def test_cpu_flags_decide_native_bf16(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    real = runtime.Path

    for flags, expected in (
        ("fpu sse avx512f avx512_bf16", True),
        ("fpu amx_bf16 amx_tile", True),
        ("fpu sse avx2 avx512f", False),
    ):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(
            runtime, "Path", lambda p, info=info: info if p == "/proc/cpuinfo" else real(p)
        )
        runtime.cpu_has_bf16.cache_clear()
        assert runtime.cpu_has_bf16() is expected, flags
    runtime.cpu_has_bf16.cache_clear()


def test_a_population_continues_only_in_its_precision(arrays):
    """bf16 and float32 round differently: a started population refuses the other one."""
    _fit(arrays, "prec", seeds=1, max_epochs=1, precision="fp32")
    assert artifacts.read_train_record("prec")["execution"]["precision"] == "fp32"
    with pytest.raises(ValueError, match=r"trained with precision='fp32' \(now 'bf16'\)"):
        _fit(arrays, "prec", seeds=2, max_epochs=1, precision="bf16")
    # "auto" resolves per machine: a population started where it meant fp32 refuses bf16 here
    _fit(arrays, "prec-auto", seeds=1, max_epochs=1, precision="auto")
    record = artifacts.read_train_record("prec-auto")
    here = record["execution"]["precision"]
    other = "fp32" if here == "bf16" else "bf16"
    record["execution"]["precision"] = other
    artifacts.write_json(paths.run_paths("prec-auto").train_config, record)
    with pytest.raises(
        ValueError,
        match=rf"trained in {other}, this call would train in {here}.*precision = '{other}'",
    ):
        _fit(arrays, "prec-auto", seeds=2, max_epochs=1, precision="auto")
    _fit(arrays, "prec-bf16", seeds=1, max_epochs=1, precision="bf16")
    assert not _same(_weights("prec", 0), _weights("prec-bf16", 0))  # the precision is real


def test_a_diverging_seed_stops_with_its_name_and_epoch(arrays, monkeypatch):
    validate = loop.validate

    def nan_loss(*args, **kwargs):
        return math.nan, validate(*args, **kwargs)[1]

    monkeypatch.setattr(loop, "validate", nan_loss)
    with pytest.raises(FloatingPointError, match=r"seed 0 diverged in epoch 1: .*Lower lr"):
        _fit(arrays, "nan", seeds=1)
    assert not paths.run_paths("nan").checkpoint(0).exists()


def test_a_resume_point_holds_the_recipe_and_refuses_another(arrays):
    rp = paths.run_paths("state")
    meta = checkpoints.train_meta(_config(), 4, (16, 16))
    rec, state, opt = checkpoints.start_seed(3, rp, meta, _config())
    assert rec.epoch == 0 and opt is None and rec.best_state is None
    assert _same(state, checkpoints.initial_state(_config(), 4, 3))
    rec.epoch, rec.history = (
        1,
        [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_mean_ap": 0.5, "seconds": 0.1}],
    )
    checkpoints.save_progress(rp, rec, state, {"state": {}, "param_groups": []}, meta)
    again, state2, _ = checkpoints.start_seed(3, rp, meta, _config())
    assert again.epoch == 1 and _same(state, state2)
    assert torch.equal(again.generator.get_state(), rec.generator.get_state())
    with pytest.raises(ValueError, match=r"lr=0\.001 \(now 0\.01\)"):
        checkpoints.start_seed(
            3, rp, checkpoints.train_meta(_config(lr=1e-2), 4, (16, 16)), _config(lr=1e-2)
        )
    with pytest.raises(RuntimeError, match="never finite"):
        checkpoints.finalize(rp, rec)


def test_missing_pretrained_weights_stop_training_before_it_starts(arrays, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(models.PretrainedWeightsMissing, match="resnet18"):
        _fit(arrays, "pre", seeds=1, model="resnet18", pretrained=True)
    assert not paths.run_paths("pre").checkpoint(0).exists()


# -- the run-level interface -------------------------------------------------------------


def test_a_run_trains_summarizes_and_plots():
    from prunecxr import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.prepare_run("tiny", dataset="nih-phantom", resolution=16, max_patients=60)
    summary = T.train_population(
        "tiny",
        seeds=2,
        model="small_resnet",
        pretrained=False,
        max_epochs=2,
        patience=2,
        batch_size=64,
        lr=1e-3,
        device="cpu",
        threads=1,
        progress=False,
    )
    assert list(summary["seed"]) == [0, 1] and (summary["epochs"] == 2).all()
    record = artifacts.read_train_record("tiny")
    assert record["execution"] == {
        "population": "sequential",
        "threads": 1,
        "workers": 1,
        "device": "cpu",
        "precision": "bf16" if runtime.cpu_has_bf16() else "fp32",
    }
    assert record["classes"] == list(data.open_split("tiny", "test").classes)
    assert T.plan_text("tiny") == "Trained one seed after another on cpu, 1 thread per model."
    assert artifacts.trained_seeds("tiny") == [0, 1]

    hist = T.read_histories("tiny")
    assert list(hist.columns) == ["seed", *artifacts.HISTORY_COLUMNS] and len(hist) == 4
    ap = T.test_average_precision("tiny", batch_size=32, device="cpu", threads=1)
    test = data.open_split("tiny", "test")
    assert set(ap.columns) == {"seed", "class", "ap", "n_pos", "train_count"}
    assert len(ap) == 2 * len(test.classes)
    # dense test AP is inference.predict's, as the sweep computes it, bit for bit
    probs = inference.predict(
        inference.load_model("tiny", 1), test.images, batch_size=32, device="cpu"
    )
    want = ranking_metrics(np.asarray(test.labels), probs)[0]
    np.testing.assert_array_equal(ap[ap["seed"] == 1]["ap"].to_numpy(), want)
    top = T.summarize_test_ap(ap)
    assert (
        0 < top["mean_ap"] < 1 and top["rarest"]["train_count"] <= top["commonest"]["train_count"]
    )
    assert "mean test AP" in T.headline_text(top)
    fig, plotted = T.learning_curves_figure(hist)
    assert len(fig.data) == 2 * 2 * 2
    assert list(plotted.columns) == ["seed", "epoch", "val_loss", "val_mean_ap"]
    assert len(T.class_ap_figure(ap).data) == len(test.classes)


def test_run_stage_trains_with_the_recorded_parameters(started_stage, monkeypatch):
    """Notebook 02 passes the run name; every parameter it declares reaches training."""
    seen = {}
    monkeypatch.setattr(
        T.population, "train_population", lambda run, **kw: seen.update(kw, run=run) or "table"
    )
    params = started_stage(
        "02_train",
        "rs",
        n_seeds=3,
        max_epochs=2,
        lr=0.01,
        schedule="constant",
        threads=1,
        population="sequential",
        gpus_per_model=0.5,
    )
    assert T.run_stage("rs") == "table"
    assert seen.pop("run") == "rs" and seen.pop("seeds") == 3 and seen.pop("progress") is True
    assert seen == {k: v for k, v in params.items() if k != "n_seeds"}  # the others by name
