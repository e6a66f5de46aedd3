"""The analyses of notebooks 03-06, one module each, all reading the run through
:mod:`prunecxr.artifacts` (no torch):

- :mod:`.overall` (notebook 03): mean AP per sparsity, Welch's t-tests, the first significant
  drop, the dense weights' magnitudes, Fig. 1;
- :mod:`.forgetting` (notebook 04): Eq. 1's forgettability curves, the class summary, Figs. 2-3;
- :mod:`.cooccurrence` (notebook 05): FCD, |Δ log frequency| and IoU per class pair, Eq. 2, Fig. 4;
- :mod:`.pies` (notebook 06): pruning-identified exemplars, Fig. 5 and the gallery;

and the inference beside them (``docs/statistics.md``):

- :mod:`.paired` (notebook 03): Fig. 1's paired and sign-flip tests, Holm and BH, the first
  significant drop under seed resampling;
- :mod:`.uncertainty` (notebook 04): bootstrap intervals over seeds, classes and patients,
  the classes a model did not learn, Fig. 3's intervals;
- :mod:`.dyadic` (notebook 05): Mantel, QAP and Freedman–Lane tests and robust SEs for the class
  pairs of Fig. 4 and Eq. 2, with their intervals;
- :mod:`.pie_intervals` (notebook 06): patient-clustered intervals of the PIE ratios, the PIE set's
  stability over seeds.

:func:`figure_method` (which method the paper's figures show) is shared by notebooks 04-06.
"""

from . import cooccurrence, dyadic, forgetting, overall, paired, pie_intervals, pies, uncertainty
from .forgetting import figure_method

__all__ = [
    "cooccurrence",
    "dyadic",
    "figure_method",
    "forgetting",
    "overall",
    "paired",
    "pie_intervals",
    "pies",
    "uncertainty",
]
