"""The analyses of notebooks 03-06, one module each, all reading the run through
:mod:`prunecxr.artifacts` (no torch):

- :mod:`.overall` (notebook 03): mean AP per sparsity, Welch's t-tests, the first significant
  drop, the dense weights' magnitudes, Fig. 1;
- :mod:`.forgetting` (notebook 04): Eq. 1's forgettability curves, the class summary, Figs. 2-3;
- :mod:`.cooccurrence` (notebook 05): FCD, |Δ log frequency| and IoU per class pair, Eq. 2, Fig. 4;
- :mod:`.pies` (notebook 06): pruning-identified exemplars, Fig. 5 and the gallery.

:func:`figure_method` (which method the paper's figures show) is shared by notebooks 04-06.
"""

from . import cooccurrence, forgetting, overall, pies
from .forgetting import figure_method

__all__ = ["cooccurrence", "figure_method", "forgetting", "overall", "pies"]
