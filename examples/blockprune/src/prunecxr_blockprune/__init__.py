"""Block-wise magnitude pruning, an example of a compression method from outside prunecxr.

Every Conv2d and Linear weight (the set the paper's methods prune) is cut, layer by layer,
into blocks of ``BLOCK`` consecutive weights along its last (input) dimension; blocks are
ranked across all layers by their mean ``|w|`` and the weakest are removed whole until at
least ``round(s·n)`` of the ``n`` weights are zero. Whole blocks are what sparse kernels for
``1×BLOCK`` patterns can skip.

The method is a :class:`prunecxr.compress.PruningMethod`: a *plan* gets the flat magnitudes
of the pruned set and the size of each layer, and returns ``sparsity → flat mask`` (True =
pruned). prunecxr's :class:`~prunecxr.compress.Pruner` writes the masks into the model,
level after level, from the dense weights. The ranking is a stable sort, so the same model
gives the same masks every time.
"""

import numpy as np

from prunecxr.compress import PruningMethod, n_to_prune

BLOCK = 4


class BlockPlan:
    def __init__(self, magnitudes, sizes, *, seed, device):
        self.n = magnitudes.size
        block_of = []  # for every weight, the global number of its block
        strengths = []
        start, first = 0, 0
        for size in sizes:
            layer = magnitudes[start : start + size]
            count = -(-size // BLOCK)  # the last block of a layer may be shorter
            index = np.arange(size) // BLOCK
            sums = np.bincount(index, weights=layer, minlength=count)
            strengths.append(sums / np.bincount(index, minlength=count))
            block_of.append(index + first)
            start, first = start + size, first + count
        self.block_of = np.concatenate(block_of)
        strength = np.concatenate(strengths)
        self.order = np.argsort(strength, kind="stable")  # weakest first, ties by position
        self.cumulative = np.cumsum(np.bincount(self.block_of)[self.order])

    def __call__(self, sparsity):
        k = n_to_prune(sparsity, self.n)
        pruned = np.zeros(self.order.size, dtype=bool)
        if k:
            blocks = int(np.searchsorted(self.cumulative, k)) + 1  # enough blocks for k weights
            pruned[self.order[:blocks]] = True
        return pruned[self.block_of]


method = PruningMethod(
    "blockwise_l1",
    BlockPlan,
    f"block-wise magnitude pruning: 1×{BLOCK} blocks of weights ranked by mean |w| across all layers "
    "(example package prunecxr-blockprune)",
)
