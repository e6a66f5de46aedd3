"""The machine: devices, CPU cores and threads, memory, and glibc's ``malloc``.

A leaf of the package (imports nothing of it; torch is imported inside the functions that
need it, so importing this module stays cheap). Every stage asks here; nothing else probes
the machine.

Threads. The intra-op thread count of a CPU model changes the floating-point rounding of
its reductions, so it is part of what makes two trainings bit-identical. It is never chosen
by timing: it is a parameter (``threads`` of notebook 02), where 0 means
:func:`usable_cores`, and it is recorded in ``models/train.json``.

Memory. Keep freed memory for the next step: glibc's ``malloc`` tuned for loops of tensor work.

A training or evaluation step on the CPU allocates and frees the same few-megabyte tensors
over and over. By default glibc hands such memory back to the kernel (a block above its
``mmap`` threshold is mapped on its own and unmapped when freed; free memory at the top of
the heap beyond the trim threshold is returned), and every later step takes page faults to
get it back. On the 2-core machine this project was built on, the (then) default profile's
small ResNet took tens of thousands of page faults a second, a tenth of its time spent in
the kernel. With the thresholds below a warmed-up step takes none; training steps ran up
to 1.3x faster (with 2 threads; about even with one) and the pruning sweep's forward passes
1.3-1.5x (``benchmarks/bench_allocator.py``). It is what PyTorch's CPU performance guides
get by preloading jemalloc or tcmalloc, done with glibc's own ``mallopt``.

The cost: up to :data:`TRIM_THRESHOLD` bytes of freed heap stay with the process instead
of going back to the system. Blocks of :data:`MMAP_THRESHOLD` and more (glibc's largest
setting) are still mapped on their own, so a big model's huge activations are not kept.

:func:`keep_freed_memory` is called where CPU tensor work starts (training, its helper
processes, the pruning sweep, prediction). It changes nothing where ``malloc`` is not
glibc's, where the environment already tunes ``malloc`` (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``glibc.malloc`` tunables in
``GLIBC_TUNABLES``: those win), or where ``PRUNECXR_MALLOC=system`` asks for glibc's
defaults.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


# -- devices -------------------------------------------------------------------------------
def resolve_device(name: Any = "auto"):
    """The ``torch.device`` to use: ``"auto"`` is CUDA if available, then Apple MPS, then the CPU.

    Any other name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) is taken as given, and
    refused with a clear message when that device is not available.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"device must be 'auto' or a torch device name, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA devices exist"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r} asked for, but Apple MPS is not available here")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda[:i]' or 'mps'")
    return device


# -- cores and threads ---------------------------------------------------------------------
#: CPU flags (Linux ``/proc/cpuinfo``) of native bf16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX; read from ``/proc/cpuinfo``).

    False where the flags cannot be read (not Linux): bf16 is then left to an explicit choice.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(f in flags for f in BF16_FLAGS)
    return False


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; the CPU count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: Any, *, name: str = "threads") -> int:
    """A thread-count parameter: a positive int, or 0 for :func:`usable_cores`."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"{name} must be an int >= 0 (0 = all usable cores), got {threads!r}")
    return threads or usable_cores()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set the environment variables ``values`` for the block, then restore each one as it was
    (removed again where it was unset)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave as is), then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- memory --------------------------------------------------------------------------------
def memory_bytes() -> int:
    """The machine's physical memory in bytes (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


#: the environment variable that, set to ``system``, leaves glibc's defaults alone
MALLOC_ENV = "PRUNECXR_MALLOC"
#: blocks at least this big are mapped on their own (glibc's largest allowed value, 32 MiB)
MMAP_THRESHOLD = 32 << 20
#: free memory at the heap's top is returned to the system beyond this much (512 MiB)
TRIM_THRESHOLD = 512 << 20

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_USER_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's ``mmap`` and trim thresholds for this process, once.

    Returns whether the thresholds are now this module's (``False``: not glibc, tuned by
    the environment, or opted out with ``PRUNECXR_MALLOC=system``). Later calls return the
    first call's answer and do nothing else.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    choice = os.environ.get(MALLOC_ENV, "")
    if choice not in ("", "tuned", "system"):
        raise ValueError(
            f"{MALLOC_ENV}={choice!r}: set it to 'system' (glibc's defaults) or 'tuned', or unset it"
        )
    if choice == "system":
        return False
    if any(k in os.environ for k in _USER_KNOBS) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover - a Linux without glibc's libc.so.6
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also stops glibc from
    # raising it (and the trim threshold) on its own as blocks are freed
    return (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
