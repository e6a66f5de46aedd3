"""Notebook 03: compression methods, the sweep over seeds and sparsities, its scores, and the
importer of the authors' released predictions.

* :mod:`~prunecxr.compress.methods` — the method registry (:data:`METHODS`), :class:`Pruner`,
  :func:`create_pruner`, :func:`prune_model`;
* :mod:`~prunecxr.compress.sweep` — :func:`run_sweep`: every trained seed × sparsity →
  ``prune/<method>/probs.npy`` (resumable per seed);
* :mod:`~prunecxr.compress.evaluate` — AP and AUROC → ``prune/<method>/metrics.parquet``;
* :mod:`~prunecxr.compress.importer` — the authors' released predictions into the same store.

Fig. 1's statistics read these files without torch: :mod:`prunecxr.analysis.overall`.
"""

from . import evaluate, importer, methods, sweep
from .evaluate import compute_metrics, write_all_metrics, write_method_metrics
from .importer import check_import_methods, import_predictions
from .methods import (
    METHODS,
    Pruner,
    PruningMethod,
    check_method,
    check_sparsities,
    check_sparsity,
    create_pruner,
    derived_seed,
    layer_quotas,
    magnitude_thresholds,
    n_to_prune,
    prunable_parameters,
    prune_model,
    pruned_magnitudes,
    pruned_set_sparsity,
)
from .sweep import dense_magnitudes, run_sweep, store_summary, sweep_method

__all__ = [
    "METHODS",
    "Pruner",
    "PruningMethod",
    "check_import_methods",
    "check_method",
    "check_sparsities",
    "check_sparsity",
    "compute_metrics",
    "create_pruner",
    "dense_magnitudes",
    "derived_seed",
    "evaluate",
    "import_predictions",
    "importer",
    "layer_quotas",
    "magnitude_thresholds",
    "methods",
    "n_to_prune",
    "prunable_parameters",
    "prune_model",
    "pruned_magnitudes",
    "pruned_set_sparsity",
    "run_sweep",
    "store_summary",
    "sweep",
    "sweep_method",
    "write_all_metrics",
    "write_method_metrics",
]
