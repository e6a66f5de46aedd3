"""The analyses of notebooks 04-06, one module each, all reading the run through
:mod:`prunecxr.artifacts` (no torch):

- :mod:`.forgetting` (notebook 04): Eq. 1's forgettability curves, the class summary, Figs. 2-3;
- :mod:`.cooccurrence` (notebook 05): FCD, |Δ log frequency| and IoU per class pair, Eq. 2, Fig. 4;
- :mod:`.pies` (notebook 06): pruning-identified exemplars, Fig. 5 and the gallery.

:func:`figure_method` (which method the paper's figures show) is shared by the three notebooks.
"""

# The lead adds ``overall`` (Fig. 1's statistics, notebook 03) to this import when merging.
from . import cooccurrence, forgetting, pies
from .forgetting import figure_method

__all__ = ["cooccurrence", "figure_method", "forgetting", "pies"]
