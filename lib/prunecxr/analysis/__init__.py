"""Notebooks 04-06: forgettability (Eq. 1, Figs. 2-3), co-occurrence (FCD, IoU, Eq. 2,
Fig. 4) and pruning-identified exemplars (Fig. 5)."""

from . import cooccurrence, forgetting, pies
