"""Notebooks 03 and 08: compression methods, the sweep over seeds and levels, its scores, and
the importer of the authors' released predictions.

* :mod:`~prunecxr.compress.compressor` — what a method is (:class:`CompressionMethod`, a
  compressor: dense model and level → compressed model) and the training images it may read
  (:class:`CalibrationSet`);
* :mod:`~prunecxr.compress.methods` — the method registry (:data:`METHODS`), the paper's
  pruning methods, :class:`Pruner`, :func:`create_pruner`, :func:`prune_model`,
  :func:`create_compressor`, :func:`compress_model`;
* :mod:`~prunecxr.compress.quantize` — ``weight_quant`` (bits);
* :mod:`~prunecxr.compress.structured` — ``channel_l1`` and ``channel_l1_global``
  (Torch-Pruning, channel fraction);
* :mod:`~prunecxr.compress.recovery` — after any method: BatchNorm re-estimation
  (``recover="bn"``) or fine-tuning with the compression kept (``recover="finetune"``);
* :mod:`~prunecxr.compress.sweep` — :func:`run_sweep`: every trained seed × level →
  ``prune/<method>/probs.npy`` (resumable per seed);
* :mod:`~prunecxr.compress.deploy` — the deployment table (measured size, MACs, latency,
  mean and tail AP) and the trade-off figure (notebook 08);
* :mod:`~prunecxr.compress.evaluate` — AP and AUROC → ``prune/<method>/metrics.parquet``;
* :mod:`~prunecxr.compress.importer` — the authors' released predictions into the same store;
* :mod:`~prunecxr.compress.interchange` — anyone's predictions (the interchange layout of
  ``docs/extending.md``) into the same store.

Fig. 1's statistics read these files without torch: :mod:`prunecxr.analysis.overall`.
"""

from . import (
    compressor,
    deploy,
    evaluate,
    importer,
    interchange,
    methods,
    quantize,
    recovery,
    structured,
    sweep,
)
from .compressor import CalibrationSet, CompressionMethod, UnsupportedModel
from .deploy import deployment_table, tradeoff_figure
from .evaluate import compute_metrics, write_all_metrics, write_method_metrics
from .importer import check_import_methods, import_predictions
from .methods import (
    METHODS,
    ORIGINS,
    Pruner,
    PruningMethod,
    available_methods,
    check_method,
    check_sparsities,
    check_sparsity,
    compress_model,
    create_compressor,
    create_pruner,
    layer_quotas,
    load_method,
    magnitude_thresholds,
    n_to_prune,
    prunable_parameters,
    prune_model,
    pruned_magnitudes,
    pruned_set_sparsity,
    random_mask_seed,
    register_method,
    store_name,
)
from .recovery import Recovery
from .sweep import (
    calibration_set,
    dense_magnitudes,
    run_compression_stage,
    run_prune_stage,
    run_sweep,
    store_summary,
    sweep_method,
)

__all__ = [
    "METHODS",
    "ORIGINS",
    "available_methods",
    "interchange",
    "load_method",
    "register_method",
    "store_name",
    "CalibrationSet",
    "CompressionMethod",
    "Pruner",
    "PruningMethod",
    "Recovery",
    "UnsupportedModel",
    "calibration_set",
    "check_import_methods",
    "check_method",
    "compress_model",
    "compressor",
    "create_compressor",
    "check_sparsities",
    "check_sparsity",
    "compute_metrics",
    "create_pruner",
    "deploy",
    "deployment_table",
    "dense_magnitudes",
    "random_mask_seed",
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
    "quantize",
    "recovery",
    "run_compression_stage",
    "run_prune_stage",
    "run_sweep",
    "store_summary",
    "structured",
    "sweep",
    "sweep_method",
    "tradeoff_figure",
    "write_all_metrics",
    "write_method_metrics",
]
