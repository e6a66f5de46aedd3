"""Feeding a split to the model: uint8 images and 0/1 labels as device tensors, by index."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .. import runtime

__all__ = ["DeviceSplit", "check_split"]


def check_split(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    """Refuse a split that is not uint8 images ``[N, H, W]`` with 0/1 labels ``[N, C]``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{what} images must be a uint8 array [N, H, W], got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{what} labels must be [N, C] with N = {images.shape[0]}, got {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 1):
        raise ValueError(
            f"{what} labels must be 0/1, found values in [{labels.min()}, {labels.max()}]"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{what} split is empty")


class DeviceSplit:
    """A split's uint8 images and 0/1 labels, served as device tensors by index.

    The images live on the device when they fit (on the CPU a quarter of the RAM shared by
    ``processes`` copies, on a GPU half its free memory); otherwise every batch is gathered
    from the (memory-mapped) array and copied over, through pinned memory on CUDA. Either
    way a batch holds the same numbers.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, device: torch.device, *, processes: int = 1
    ):
        self.n, self.h, self.w = images.shape
        self.device = device
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32), device=device)
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            resident = images.nbytes <= free // 2
        else:
            resident = images.nbytes * max(processes, 1) <= runtime.memory_bytes() // 4
        if resident:
            self.images = torch.from_numpy(np.array(images, copy=True)).to(device)
            self.array = None
        else:
            self.images = None
            self.array = images

    def __len__(self) -> int:
        return self.n

    def take(
        self, idx: torch.Tensor, dev_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``[len(idx), H, W]`` and float labels ``[len(idx), C]`` on the device.

        ``idx`` is a CPU index tensor; ``dev_idx``, if given, the same on the device.
        """
        if dev_idx is None:
            dev_idx = idx.to(self.device, non_blocking=True)
        if self.images is not None:
            return self.images.index_select(0, dev_idx), self.labels.index_select(0, dev_idx)
        batch = torch.from_numpy(np.take(self.array, idx.numpy(), axis=0))
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True), self.labels.index_select(0, dev_idx)

    def ordered(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in order, in batches: ``(images, labels)`` device tensors."""
        idx = torch.arange(self.n)
        dev_idx = idx.to(self.device)
        for start in range(0, self.n, batch_size):
            sl = slice(start, min(start + batch_size, self.n))
            yield self.take(idx[sl], dev_idx[sl])
