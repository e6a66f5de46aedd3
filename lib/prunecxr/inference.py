"""The one way to load a trained model and predict with it.

Training's test AP (notebook 02), the pruning sweep (notebook 03) and everything after them
evaluate through :func:`load_model` and :func:`predict`, so the dense AP of a seed is the
same number wherever it is shown: the sweep's sparsity-0 probabilities equal those of
notebook 02 bit for bit on one machine with one thread count.

Checkpoints are plain ``state_dict`` files that load with ``torch.load(...,
weights_only=True)`` (:func:`load_checkpoint`): loading never executes code from a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from . import artifacts, models, paths, runtime


# -- checkpoints ---------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file: the checkpoint is complete or absent.

    Saved through a file handle: given a path, ``torch.save`` names the archive's inner
    folder after the (random) temporary file, so equal weights would give unequal bytes.
    """
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; a damaged file names itself."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"cannot load {path}: {err}") from err
    artifacts.note_read(path)
    return state


# -- models --------------------------------------------------------------------------------
def load_model(run: str, seed: int, *, device: str | torch.device = "cpu") -> nn.Module:
    """Seed ``seed``'s selected model of run ``run``, in eval mode on ``device``.

    The architecture and number of classes come from the run's training record
    (``models/train.json``); the weights from ``models/seed-<seed>/model.pt``, loaded with
    ``torch.load(..., weights_only=True)``. ImageNet weights are never needed here.
    """
    ckpt = paths.run_paths(run).checkpoint(seed)
    if not ckpt.exists():
        raise FileNotFoundError(
            f"{ckpt} does not exist: seed {seed} of run {run!r} is not trained "
            f"(trained seeds: {artifacts.trained_seeds(run)}); run notebook 02_train"
        )
    record = artifacts.read_train_record(run)
    name = record["config"]["model"]
    model = models.create_model(name, int(record["num_classes"]), pretrained=False)
    try:
        model.load_state_dict(load_checkpoint(ckpt))
    except RuntimeError as err:
        raise ValueError(f"{ckpt} does not fit model {name!r}: {err}") from None
    return model.to(runtime.resolve_device(device)).eval()


def model_loader(run: str, device: str | torch.device) -> Callable[[int], nn.Module]:
    """``seed → dense model of run on device`` (eval mode)."""
    dev = runtime.resolve_device(device)

    def load(seed: int) -> nn.Module:
        return load_model(run, seed, device=dev)

    return load


# -- prediction ----------------------------------------------------------------------------
def _as_tensor(images: Any) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"images must be a uint8 array [N, H, W], got {images.dtype} {images.shape}"
            )
        return torch.from_numpy(np.array(images))  # a writable copy (the cache is memory-mapped)
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"images must be a numpy array or a torch tensor, got {type(images).__name__}"
        )
    preprocessed = images.dtype == torch.float32 and images.ndim == 4 and images.shape[1] == 3
    if not preprocessed and not (images.dtype == torch.uint8 and images.ndim == 3):
        raise ValueError(
            "images must be uint8 [N, H, W] or preprocessed float32 [N, 3, H, W], got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    return images


def preprocessed(images: torch.Tensor, *, budget_bytes: int | None = None) -> torch.Tensor:
    """``images`` (uint8 ``[N, H, W]``) preprocessed once for repeated prediction, if it fits.

    A sweep evaluates the same images hundreds of times (every seed at every sparsity), so
    it preprocesses them once, float32 ``[N, 3, H, W]`` on their device, where that fits
    ``budget_bytes`` (by default an eighth of the RAM on a CPU, a quarter of the free memory
    of a GPU); otherwise it returns the uint8 images and :func:`predict` preprocesses each
    batch. Either way the model sees the same numbers.
    """
    images = _as_tensor(images)
    if images.dtype != torch.uint8:
        return images
    if budget_bytes is None:
        if images.device.type == "cuda":
            budget_bytes = torch.cuda.mem_get_info(images.device)[0] // 4
        else:
            budget_bytes = runtime.memory_bytes() // 8
    if images.numel() * 3 * 4 > budget_bytes:
        return images
    out = torch.empty(
        (images.shape[0], 3, *images.shape[1:]), dtype=torch.float32, device=images.device
    )
    for start in range(0, images.shape[0], 1024):
        out[start : start + 1024] = models.preprocess(images[start : start + 1024])
    return out


def predict(
    model: nn.Module, images: Any, *, batch_size: int, device: str | torch.device
) -> np.ndarray:
    """Sigmoid probabilities of ``model``, float32 ``[N, C]``.

    Parameters
    ----------
    model : a classifier of the registry; evaluated in eval mode on ``device`` (its
        train/eval mode is restored afterwards).
    images : uint8 ``[N, H, W]`` (numpy, possibly memory-mapped, or a tensor), each batch of
        which goes through :func:`prunecxr.models.preprocess`; or the float32
        ``[N, 3, H, W]`` of :func:`preprocessed`.
    batch_size : images per forward pass.
    device : device name or ``torch.device`` (``"auto"`` allowed).

    The forward pass runs in float32 without autocast, as the authors evaluated their pruned
    models; the outputs stay on the device until the end, so the loop never waits on a host
    copy.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    x_all = _as_tensor(images)
    n = x_all.shape[0]
    if n == 0:
        raise ValueError("no images to predict")
    dev = runtime.resolve_device(device)
    if dev.type == "cpu":
        runtime.keep_freed_memory()
    uint8 = x_all.dtype == torch.uint8
    was_training = model.training
    model.to(dev).eval()
    out = None
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                x = x_all[start : start + batch_size].to(dev, non_blocking=True)
                logits = model(models.preprocess(x) if uint8 else x)
                if out is None:
                    out = torch.empty((n, logits.shape[1]), dtype=torch.float32, device=dev)
                out[start : start + logits.shape[0]] = torch.sigmoid(logits.float())
    finally:
        model.train(was_training)
    return out.cpu().numpy()
