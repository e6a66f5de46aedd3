"""Training the population: recipe pieces, determinism, resuming, early stopping, records."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from prunecxr import models, paths
from prunecxr.train import core as T

MODES = ["sequential", "grouped"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def arrays():
    """Tiny learnable data: class c brightens quadrant c of a 16 px image."""
    rng = np.random.default_rng(0)
    n, c = 128, 4
    labels = (rng.random((n, c)) < 0.4).astype(np.uint8)
    images = rng.integers(0, 80, (n, 16, 16)).astype(np.uint8)
    for k in range(c):
        r, q = divmod(k, 2)
        images[labels[:, k] == 1, 8 * r:8 * r + 8, 8 * q:8 * q + 8] += 100
    return images[:96], labels[:96], images[96:], labels[96:]


def _config(**kw):
    base = dict(model="small_resnet", pretrained=False, max_epochs=3, patience=3, batch_size=32, lr=1e-3)
    base.update(kw)
    return T.TrainConfig(**base)


def _fit(arrays, run, *, seeds=2, population="sequential", **kw):
    tr_x, tr_y, va_x, va_y = arrays
    return T.fit_population(tr_x, tr_y, va_x, va_y, seeds=seeds, config=_config(**kw),
                            out=paths.run_paths(run), device="cpu", population=population, threads=1,
                            progress=False)


def _weights(run, seed):
    return torch.load(paths.run_paths(run).checkpoint(seed), weights_only=True)


def _same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _history(run, seed):
    return pd.read_csv(paths.run_paths(run).history(seed)).drop(columns="seconds")


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
    assert T.TrainConfig() == T.TrainConfig(model="resnet50", pretrained=True, max_epochs=60,
                                            patience=15, batch_size=256, lr=1e-4)  # the paper's
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        _config(model="vgg16")
    with pytest.raises(ValueError, match="patience must be a positive int, got 0"):
        _config(patience=0)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        _config(lr=float("nan"))
    with pytest.raises(ValueError, match="bn_eval_compat must be true or false"):
        _config(bn_eval_compat=1)


def test_mean_average_precision_by_hand():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.9, 0.5], [0.7, 0.2, 0.5], [0.1, 0.3, 0.5]])
    ap = T.per_class_average_precision(labels, scores)
    # class 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: rank 1; class 2: no positive
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2) and ap[1] == pytest.approx(1.0)
    assert math.isnan(ap[2])
    assert T.mean_average_precision(labels, scores) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert math.isnan(T.mean_average_precision(np.zeros((3, 2)), np.ones((3, 2))))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        T.per_class_average_precision(labels, scores[:, :2])


@pytest.mark.parametrize("angle", [0.0, 7.3, -15.0, 90.0])
@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_is_torchvisions_flip_then_rotation(flip, angle):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    img = torch.randint(0, 256, (1, 12, 20), dtype=torch.uint8)  # not square on purpose
    ref = TF.rotate(TF.horizontal_flip(img) if flip else img, angle, interpolation=InterpolationMode.NEAREST)
    got = T.augment(img, flip=torch.tensor([flip]), angle=torch.tensor([angle]))
    assert got.dtype == torch.uint8 and torch.equal(got, ref)


def test_augmentation_draws_come_from_the_generator_alone():
    a = T.draw_augmentation(64, torch.Generator().manual_seed(3))
    b = T.draw_augmentation(64, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    flip, angle = a
    assert flip.dtype == torch.bool and 0 < flip.sum() < 64
    assert angle.abs().max() <= T.MAX_ROTATION
    batch = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)  # [models, images, H, W]
    out = T.augment(batch, flip=flip[:6].view(2, 3), angle=angle[:6].view(2, 3))
    assert out.shape == batch.shape
    assert torch.equal(out[1, 2], T.augment(batch[1, 2:3], flip=flip[5:6], angle=angle[5:6])[0])
    with pytest.raises(ValueError, match="leading shape"):
        T.augment(batch, flip=flip[:6], angle=angle[:6])


def test_stacked_adam_is_torch_adam_per_model():
    torch.manual_seed(0)
    n, steps = 3, 6
    own = [torch.nn.Parameter(torch.randn(4, 5)) for _ in range(n)]
    refs = [torch.optim.Adam([p], lr=1e-2) for p in own]
    stacked = torch.nn.Parameter(torch.cat([p.detach() for p in own]))
    opt = T.StackedAdam([stacked], n, lr=1e-2)
    for step in range(steps):
        grads = [torch.randn(4, 5) for _ in range(n)]
        active = [k for k in range(n) if (step + k) % 3]  # every model skips some steps
        for k in active:
            own[k].grad = grads[k]
            refs[k].step()
        stacked.grad = torch.cat(grads)
        opt.step(active)
    for k in range(n):
        assert torch.allclose(stacked.detach()[4 * k:4 * k + 4], own[k].detach(), rtol=1e-6, atol=1e-7)
        # model k's part is torch.optim.Adam's state of that model, and loads back
        state = opt.model_state_dict(k)
        assert torch.allclose(state["state"][0]["exp_avg"], refs[k].state_dict()["state"][0]["exp_avg"])
        assert float(state["state"][0]["step"]) == float(refs[k].state_dict()["state"][0]["step"])
        fresh = torch.optim.Adam([torch.nn.Parameter(torch.zeros(4, 5))], lr=1e-2)
        fresh.load_state_dict(state)
        other = T.StackedAdam([torch.nn.Parameter(torch.zeros(4 * n, 5))], n, lr=1e-2)
        other.load_model_state_dict(k, state)
        assert torch.equal(other.exp_avg_sq[0][4 * k:4 * k + 4], opt.exp_avg_sq[0][4 * k:4 * k + 4])


def test_resolve_device():
    assert T.resolve_device("cpu") == torch.device("cpu")
    auto = T.resolve_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("mps", "cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            T.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu0'|unsupported device"):
        T.resolve_device("tpu0")


# -- the population ----------------------------------------------------------------------


@pytest.mark.parametrize("population", MODES)
def test_the_same_seed_gives_identical_weights(arrays, population):
    first = _fit(arrays, "a", population=population)
    second = _fit(arrays, "b", population=population)
    assert list(first["status"]) == ["trained", "trained"]
    for s in (0, 1):
        assert _same(_weights("a", s), _weights("b", s))
        assert _history("a", s).equals(_history("b", s))
    assert not _same(_weights("a", 0), _weights("a", 1))
    # records: docs/artifacts.md's history columns; no resume point left; checkpoints load safely
    rp = paths.run_paths("a")
    hist = pd.read_csv(rp.history(0))
    assert list(hist.columns) == T.HISTORY_COLUMNS and list(hist["epoch"]) == [1, 2, 3]
    assert np.isfinite(hist[["train_loss", "val_loss", "val_mean_ap"]].to_numpy()).all()
    assert not rp.train_state(0).exists()
    model = models.create_model("small_resnet", 4)
    model.load_state_dict(torch.load(rp.checkpoint(0), weights_only=True))
    # a final seed is skipped
    again = _fit(arrays, "a", population=population)
    assert list(again["status"]) == ["already trained", "already trained"]


def test_grouped_training_is_sequential_training_up_to_rounding(arrays):
    _fit(arrays, "seq", population="sequential", max_epochs=2)
    _fit(arrays, "grp", population="grouped", max_epochs=2)
    init = T._init_state(_config(), 4, 1)
    seq, grp = _weights("seq", 1), _weights("grp", 1)
    for key in seq:
        if seq[key].is_floating_point():
            moved = (seq[key] - init[key]).norm()
            assert (grp[key] - seq[key]).norm() <= 1e-2 * moved + 1e-6, key
        else:
            assert torch.equal(seq[key], grp[key]), key
    assert np.allclose(_history("seq", 1)["val_loss"], _history("grp", 1)["val_loss"], rtol=1e-4)


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, torch
    from prunecxr import paths
    from prunecxr.train import core as T

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def main():
        torch.set_num_threads({threads})
        data = np.load({data!r})
        kind, at = {kind!r}, {at}
        count = [0]
        if kind == "batch":  # in the middle of an epoch
            take = T._Images.take
            def counted(self, *args):
                count[0] += 1
                if count[0] == at:
                    die()
                return take(self, *args)
            T._Images.take = counted
        elif kind == "parent":  # the parent of worker processes, after `at` epochs were reported
            epoch = T._Report.epoch
            def counted(self, *args):
                count[0] += 1
                if count[0] == at:
                    die()
                return epoch(self, *args)
            T._Report.epoch = counted
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
                         config=T.TrainConfig(**{config!r}), out=paths.run_paths("killed"),
                         device="cpu", population={population!r}, threads=1, progress=False)

    if __name__ == "__main__":  # worker processes import this file again
        main()
""")


@pytest.mark.parametrize("population,kind,at", [
    ("sequential", "batch", 22),  # 4 batches an epoch (3 train, 1 val): seed 1, epoch 2
    ("grouped", "write", 4),  # seed 0's epoch 2 saved, seed 1's not: they resume apart
    # the parent dies, its workers must not write on; and processes train as one thread does
    ("parallel", "parent", 1),
])
def test_a_killed_run_resumes_to_the_uninterrupted_weights(arrays, tmp_path, population, kind, at):
    # the parent sees workers' epochs late: more epochs, so that it dies while they train
    epochs = 12 if kind == "parent" else 4
    cfg = dict(model="small_resnet", pretrained=False, max_epochs=epochs, patience=epochs, batch_size=32,
               lr=1e-3)
    tx, ty, vx, vy = arrays
    np.savez(tmp_path / "data.npz", tx=tx, ty=ty, vx=vx, vy=vy)
    script = tmp_path / "killer.py"
    script.write_text(_KILLER.format(threads=1, data=str(tmp_path / "data.npz"),
                                     kind=kind, at=at, config=cfg, population=population))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    rp = paths.run_paths("killed")
    if kind == "parent":  # no orphaned worker goes on writing
        plan = T.artifacts.read_json(rp.train_config)["plan"]
        assert plan["mode"] == "parallel" and plan["threads"] == 1 and plan["workers"] >= 1
        time.sleep(1.0)
        before = {f: f.stat().st_mtime_ns for f in rp.models.rglob("*") if f.is_file()}
        time.sleep(2.0)
        assert before == {f: f.stat().st_mtime_ns for f in rp.models.rglob("*") if f.is_file()}
    unfinished = [s for s in (0, 1) if rp.train_state(s).exists()]
    if kind == "parent":  # a worker may not have finished its first epoch yet
        assert unfinished and not any(rp.checkpoint(s).exists() for s in (0, 1))
    else:
        assert unfinished == ([1] if kind == "batch" else [0, 1])  # sequential: seed 0 is final
    state = torch.load(rp.train_state(unfinished[-1]), weights_only=True)  # it loads safely
    assert state["seed"] == unfinished[-1] and 1 <= state["epoch"] < epochs
    if kind == "write":
        assert list(rp.seed_dir(1).glob(".*.tmp"))  # the interrupted write left its temporary
        assert torch.load(rp.train_state(0), weights_only=True)["epoch"] == state["epoch"] + 1

    # "auto" keeps the recorded way (parallel resumes one thread sequentially: the same bits, faster here)
    resumed = _fit(arrays, "killed", population="sequential" if kind == "parent" else "auto",
                   max_epochs=epochs, patience=epochs)
    assert "resumed" in set(resumed["status"])
    # parallel trains each seed exactly as sequential with one thread does
    _fit(arrays, "whole", population="sequential" if population == "parallel" else population,
         max_epochs=epochs, patience=epochs)
    for s in (0, 1):
        assert _same(_weights("killed", s), _weights("whole", s)), f"seed {s}"
        assert _history("killed", s).equals(_history("whole", s))
        assert not rp.train_state(s).exists() and not list(rp.seed_dir(s).glob(".*.tmp"))
    assert paths.run_paths("killed").train_config.exists()


@pytest.mark.parametrize("population", MODES)
def test_early_stopping_keeps_the_lowest_validation_loss(arrays, monkeypatch, population):
    # seed 0 improves until epoch 7 and stops after 10; seed 1 is best at epoch 1 and stops
    # after 4, so in a group seed 0 trains epochs 5-10 beside a finished seed
    script = {
        0: [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.35, 0.32, 0.31, 0.1, 0.1],
        1: [0.5, 0.6, 0.7, 0.8] + [0.1] * 8,
    }
    seeds = [0, 1] if population == "grouped" else [0]

    def scripted(script):
        calls = [0]

        def fake_validate(net, val, n, *, batch_size, device):
            e = calls[0]
            calls[0] += 1
            return [script[seeds[k]][e] for k in range(n)], [0.5] * n

        return fake_validate

    monkeypatch.setattr(T, "_validate", scripted(script))
    _fit(arrays, "es", seeds=seeds, population=population, max_epochs=12, patience=3)
    hist = _history("es", 0)
    assert list(hist["epoch"]) == list(range(1, 11)) and hist["val_loss"].tolist() == script[0][:10]
    decreasing = {s: list(np.linspace(1, 0.1, 12)) for s in (0, 1)}
    monkeypatch.setattr(T, "_validate", scripted(decreasing))
    _fit(arrays, "es7", seeds=seeds, population=population, max_epochs=7, patience=3)
    assert _same(_weights("es", 0), _weights("es7", 0))  # the weights after epoch 7
    if population == "grouped":
        assert len(_history("es", 1)) == 4
        monkeypatch.setattr(T, "_validate", scripted(decreasing))
        _fit(arrays, "es1", seeds=seeds, population=population, max_epochs=1, patience=3)
        assert _same(_weights("es", 1), _weights("es1", 1))  # the weights after epoch 1


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
        T.fit_population(tr_x, tr_y, va_x, va_y * 2, seeds=1, config=_config(),
                         out=paths.run_paths("bad"), progress=False)
    with pytest.raises(ValueError, match="classes 4 vs 3"):
        T.fit_population(tr_x, tr_y, va_x, va_y[:, :3], seeds=1, config=_config(),
                         out=paths.run_paths("bad"), progress=False)
    with pytest.raises(ValueError, match="uint8"):
        T.fit_population(tr_x.astype(np.float32), tr_y, va_x, va_y, seeds=1, config=_config(),
                         out=paths.run_paths("bad"), progress=False)
    with pytest.raises(ValueError, match="unknown population mode 'threads'"):
        _fit(arrays, "bad", population="threads")
    with pytest.raises(ValueError, match="distinct"):
        _fit(arrays, "bad", seeds=[1, 1])


def test_a_diverging_seed_stops_with_its_name_and_epoch(arrays, monkeypatch):
    validate = T._validate

    def nan_loss(*args, **kwargs):
        loss, ap = validate(*args, **kwargs)
        return [math.nan] * len(loss), ap

    monkeypatch.setattr(T, "_validate", nan_loss)
    with pytest.raises(FloatingPointError, match=r"seed 0 diverged in epoch 1: .*Lower lr"):
        _fit(arrays, "nan", seeds=1)
    assert not paths.run_paths("nan").checkpoint(0).exists()


def test_helper_processes_reopen_arrays_instead_of_receiving_them(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    whole = np.load(path, mmap_mode="r")
    labels = np.eye(2, dtype=np.uint8)
    handles = T._array_handles([whole, whole[1:], labels], tmp_path)
    assert [h[0] for h in handles] == ["memmap", "npy", "npy"]  # the cache file is mapped again
    for handle, array in zip(handles, [whole, whole[1:], labels]):
        np.testing.assert_array_equal(T._open_array(handle), array)


@pytest.mark.skipif(T._usable_cores() < 2, reason="parallel training needs two cores")
@pytest.mark.parametrize("guarded", [False, True])
def test_parallel_training_from_a_script(arrays, tmp_path, guarded):
    """Spawned helpers import the script again. Without a main guard they die, and the run
    must say why rather than wait for them for ever (as it once did). With one, the run
    ends cleanly: its helpers exit on their own (they were once killed with the thread that
    started them, which left a semaphore for the resource tracker to complain about)."""
    tx, ty, vx, vy = arrays
    np.savez(tmp_path / "data.npz", tx=tx[:32], ty=ty[:32], vx=vx, vy=vy)
    script = tmp_path / "script.py"
    body = textwrap.dedent(f"""
        data = np.load({str(tmp_path / "data.npz")!r})
        T.fit_population(data["tx"], data["ty"], data["vx"], data["vy"], seeds=2,
                         config=T.TrainConfig(model="small_resnet", pretrained=False, max_epochs=1,
                                              patience=1, batch_size=32, lr=1e-3),
                         out=paths.run_paths(f"script-{{os.getpid()}}"), device="cpu",
                         population="parallel",
                         progress=False)
        print("trained")
    """)
    header = "import os\nimport numpy as np\nfrom prunecxr import paths, train as T\n"
    if guarded:
        body = 'if __name__ == "__main__":\n' + textwrap.indent(body, "    ")
    script.write_text(header + body)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    if guarded:
        assert proc.returncode == 0 and proc.stdout.strip() == "trained", proc.stderr
        assert "leaked" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 1
        assert "if __name__ == '__main__':" in proc.stderr.splitlines()[-1]


def test_missing_pretrained_weights_stop_training_before_it_starts(arrays, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(models.PretrainedWeightsMissing, match="resnet18"):
        _fit(arrays, "pre", seeds=1, model="resnet18", pretrained=True)
    assert not paths.run_paths("pre").checkpoint(0).exists()


# -- the run-level interface -------------------------------------------------------------


def test_a_run_trains_loads_predicts_and_plots(monkeypatch):
    from prunecxr.data import datasets as data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.prepare_run("tiny", dataset="nih-phantom", resolution=16, max_patients=60)
    summary = T.train_population("tiny", seeds=2, model="small_resnet", pretrained=False, max_epochs=2,
                                 patience=2, batch_size=64, lr=1e-3, device="cpu", progress=False)
    assert list(summary["seed"]) == [0, 1] and (summary["epochs"] == 2).all()
    record = paths.run_paths("tiny").train_config
    plan = T.artifacts.read_json(record)["plan"]
    # "auto" measured the ways and picked one (parallel where 2 idle cores beat 2 threads)
    assert plan["mode"] in T.POPULATION_MODES[1:] and plan["calibration"]["speedup"] > 0
    assert plan["threads"] in (1, torch.get_num_threads(), os.cpu_count())  # measured as well
    assert "Trained" in T.plan_text("tiny")
    assert T.trained_seeds("tiny") == [0, 1]

    model = T.load_model("tiny", 1)
    assert not model.training
    test = data.open_split("tiny", "test")
    model.train()
    probs = T.predict(model, test.images, batch_size=16, device="cpu")
    assert model.training  # restored
    assert probs.shape == (len(test), len(test.classes)) and probs.dtype == np.float32
    assert ((probs > 0) & (probs < 1)).all()
    with pytest.raises(ValueError, match="uint8"):
        T.predict(model, test.images.astype(np.float32), batch_size=16, device="cpu")
    with pytest.raises(FileNotFoundError, match="seed 7 of run 'tiny' is not trained"):
        T.load_model("tiny", 7)

    hist = T.read_histories("tiny")
    assert list(hist.columns) == ["seed", *T.HISTORY_COLUMNS] and len(hist) == 4
    ap = T.test_average_precision("tiny", batch_size=32, device="cpu")
    assert set(ap.columns) == {"seed", "class", "ap", "n_pos", "train_count"}
    assert len(ap) == 2 * len(test.classes)
    top = T.summarize_test_ap(ap)
    assert 0 < top["mean_ap"] < 1 and top["rarest"]["train_count"] <= top["commonest"]["train_count"]
    assert len(T.learning_curves_figure(hist).data) == 2 * 2 * 2
    assert len(T.class_ap_figure(ap).data) == len(test.classes)
