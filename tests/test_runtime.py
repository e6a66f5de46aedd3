"""prunecxr.runtime: devices, threads, and glibc's malloc kept from returning a step's memory."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from prunecxr import runtime

LIB = str(Path(runtime.__file__).resolve().parents[1])
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# training steps of a small model: the median page faults of a step after two warm-up steps (the
# median, since a one-time allocation, such as a library's lazily built cache, can land in any step)
STEPS = """
import json, resource, sys, torch
import torch.nn.functional as F
from prunecxr import models, runtime
tuned = runtime.keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
net = models.create_model("small_resnet", 5)
x = models.preprocess(torch.randint(0, 256, (64, 64, 64), dtype=torch.uint8))
y = torch.randint(0, 2, (64, 5)).float()
def step():
    net.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(net(x), y).backward()
step(); step()
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": sorted(faults)[len(faults) // 2]}))
"""


def _run(code: str, **env) -> str:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in (runtime.MALLOC_ENV, "GLIBC_TUNABLES") and not k.startswith("MALLOC_")
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": LIB, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout.strip().splitlines()[-1]


def _run_steps(**env) -> dict:
    return json.loads(_run(STEPS, **env))


@pytest.mark.skipif(not GLIBC, reason="tunes glibc's malloc only")
def test_tuned_steps_stop_faulting_memory_back_in():
    default = _run_steps(**{runtime.MALLOC_ENV: "system"})
    tuned = _run_steps()
    assert not default["tuned"] and tuned["tuned"]
    # glibc's defaults unmap and re-fault a step's activations every step (thousands of
    # faults); tuned, the memory of the warm-up steps is reused
    assert default["faults"] > 200
    assert tuned["faults"] < default["faults"] / 10


@pytest.mark.skipif(not GLIBC, reason="tunes glibc's malloc only")
def test_environment_settings_win():
    code = "from prunecxr import runtime; print(runtime.keep_freed_memory())"
    assert _run(code) == "True"
    assert _run(code, MALLOC_TRIM_THRESHOLD_="1000000") == "False"
    assert _run(code, GLIBC_TUNABLES="glibc.malloc.trim_threshold=1000000") == "False"


def test_opt_out_and_bad_value(monkeypatch):
    monkeypatch.setenv(runtime.MALLOC_ENV, "system")
    assert runtime._apply() is False
    monkeypatch.setenv(runtime.MALLOC_ENV, "jemalloc")
    with pytest.raises(ValueError, match="PRUNECXR_MALLOC='jemalloc'"):
        runtime._apply()


def test_applies_once(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "_applied", None)
    monkeypatch.setattr(runtime, "_apply", lambda: calls.append(1) or True)
    assert runtime.keep_freed_memory() and runtime.keep_freed_memory()
    assert calls == [1]


def test_resolve_device():
    import torch

    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = runtime.resolve_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("mps", "cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu0'|unsupported device"):
        runtime.resolve_device("tpu0")
    with pytest.raises(ValueError, match="device must be 'auto'"):
        runtime.resolve_device("")


def test_threads_zero_means_every_usable_core():
    import torch

    assert runtime.check_threads(0) == runtime.usable_cores() >= 1
    assert runtime.check_threads(3) == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"threads must be an int >= 0"):
            runtime.check_threads(bad)
    before = torch.get_num_threads()
    with runtime.num_threads(1):
        assert torch.get_num_threads() == 1
    with runtime.num_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
