"""The paper's published values and constants: a leaf of the package (imports nothing of it).

Holste et al., *How Does Pruning Impact Long-Tailed Multi-label Medical Image Classifiers?*,
MICCAI 2023, LNCS 14224, doi:10.1007/978-3-031-43904-9_64 (arXiv:2308.09180).

:data:`PUBLISHED` is data: each value the paper reports for the analyses of notebooks 03-06,
with the dataset it was measured on and where in the paper it appears. Nothing here is drawn
into a figure; :mod:`prunecxr.paper` computes "this run" for each row from a run's artifacts.
The reader study's published results are ``reader_study/published.toml`` (notebook 07).
"""

from __future__ import annotations

import pandas as pd

#: The method of the paper's figures: one-shot global unstructured L1 magnitude pruning.
PAPER_METHOD = "global_l1"
#: The paper's sparsities: 0, 0.05, ..., 0.95 (0 is the dense model).
PAPER_SPARSITIES = tuple(round(0.05 * k, 2) for k in range(20))
#: Two sparsities closer than this are the same level (float round-off in files and parameters).
SPARSITY_ATOL = 1e-9
#: The paper's significance level for the first significant drop in mean AP (Fig. 1).
PAPER_ALPHA = 0.001
#: Magnitude below which the paper counts "over half" of the dense weights (Fig. 1, right).
SMALL_WEIGHT = 0.01
#: The sparsity whose relative AP change Fig. 3 (right) shows.
EXTREME_SPARSITY = 0.95
#: The relative AP drop that defines a class's first drop (Fig. 3, left).
DROP_THRESHOLD = 0.2
#: PIEs: the pruned model compared with the dense one, and the share of test images called PIEs.
PIE_SPARSITY = 0.9
PIE_FRACTION = 0.05
#: The rarest classes whose PIE ratios the paper quotes ("3-15x", Fig. 5).
N_RAREST = 5

NIH, MIMIC = "NIH-CXR-LT", "MIMIC-CXR-LT"

#: The paper's dataset each run dataset is compared with, and a caveat when not identical.
DATASET_MATCH = {
    "nih-cxr-lt": (NIH, ""),
    "mimic-cxr-lt": (MIMIC, ""),
    "nih-phantom": (
        NIH,
        "phantom run: synthetic pixels, and the 15 NIH ChestX-ray14 labels, not NIH-CXR-LT's 20 classes",
    ),
}

#: How each kind of value is formatted (a function name of prunecxr.fmt).
KINDS = {
    "sparsity": "pct",
    "share": "pct",
    "corr": "num",
    "coef": "num",
    "p": "pvalue",
    "ratio": "ratio",
}

_ROWS = [
    # key, quantity, kind, dataset, value, source
    (
        "first_significant_drop",
        "First sparsity with a significant drop in mean AP",
        "sparsity",
        NIH,
        0.65,
        "Results, overall effect of pruning; Fig. 1",
    ),
    (
        "first_significant_drop",
        "First sparsity with a significant drop in mean AP",
        "sparsity",
        MIMIC,
        0.60,
        "Results, overall effect of pruning; Fig. 1",
    ),
    (
        "share_weights_below_001",
        "Share of the dense models' weights with |w| < 0.01 (the regime)",
        "share",
        NIH,
        0.5,
        'Fig. 1 (right) and text: "over half of all learned weights", a lower bound',
    ),
    (
        "rho_freq_first_drop",
        "Spearman ρ: log training frequency vs first sparsity with a 20% AP drop",
        "corr",
        NIH,
        0.61,
        "Fig. 3 and text",
    ),
    (
        "rho_freq_first_drop",
        "Spearman ρ: log training frequency vs first sparsity with a 20% AP drop",
        "corr",
        MIMIC,
        0.93,
        "Fig. 3 and text",
    ),
    (
        "r_freq_first_drop",
        "Pearson r: log training frequency vs first sparsity with a 20% AP drop",
        "corr",
        NIH,
        0.64,
        "Fig. 3 (annotation)",
    ),
    (
        "r_freq_first_drop",
        "Pearson r: log training frequency vs first sparsity with a 20% AP drop",
        "corr",
        MIMIC,
        0.82,
        "Fig. 3 (annotation)",
    ),
    (
        "rho_freq_change_095",
        "Spearman ρ: log training frequency vs relative AP change at 95% sparsity",
        "corr",
        NIH,
        0.75,
        "Fig. 3 and text",
    ),
    (
        "rho_freq_change_095",
        "Spearman ρ: log training frequency vs relative AP change at 95% sparsity",
        "corr",
        MIMIC,
        0.75,
        "Fig. 3 and text",
    ),
    (
        "r_freq_change_095",
        "Pearson r: log training frequency vs relative AP change at 95% sparsity",
        "corr",
        NIH,
        0.80,
        "Fig. 3 (annotation)",
    ),
    (
        "r_freq_change_095",
        "Pearson r: log training frequency vs relative AP change at 95% sparsity",
        "corr",
        MIMIC,
        0.76,
        "Fig. 3 (annotation)",
    ),
    (
        "rho_fcd_freq_diff",
        "Spearman ρ: FCD vs |Δ log frequency|",
        "corr",
        NIH,
        0.64,
        "Fig. 4 and text",
    ),
    (
        "r_fcd_freq_diff",
        "Pearson r: FCD vs |Δ log frequency|",
        "corr",
        NIH,
        0.71,
        "Fig. 4 (annotation)",
    ),
    ("rho_fcd_iou", "Spearman ρ: FCD vs IoU", "corr", NIH, -0.47, "Fig. 4 and text"),
    ("r_fcd_iou_quarter", "Pearson r: FCD vs IoU^¼", "corr", NIH, -0.43, "Fig. 4 (annotation)"),
    ("eq2_intercept", "Eq. 2 intercept", "coef", NIH, 0.27, "Eq. 2"),
    ("eq2_abs_log_freq_diff", "Eq. 2 coefficient of |Δ log F|", "coef", NIH, 0.21, "Eq. 2"),
    ("eq2_iou_quarter", "Eq. 2 coefficient of IoU^¼", "coef", NIH, -0.05, "Eq. 2"),
    ("eq2_interaction", "Eq. 2 coefficient of |Δ log F| × IoU^¼", "coef", NIH, -0.31, "Eq. 2"),
    ("eq2_interaction_p", "Eq. 2 interaction p-value", "p", NIH, 0.005, "Eq. 2 and text"),
    (
        "pie_rarest_ratio_min",
        "PIE:non-PIE prevalence ratio, five rarest classes: smallest",
        "ratio",
        NIH,
        3.0,
        'Fig. 5 and text ("3–15×")',
    ),
    (
        "pie_rarest_ratio_max",
        "PIE:non-PIE prevalence ratio, five rarest classes: largest",
        "ratio",
        NIH,
        15.0,
        'Fig. 5 and text ("3–15×")',
    ),
    (
        "pie_4plus_ratio",
        "PIE:non-PIE ratio of images with 4+ findings",
        "ratio",
        NIH,
        3.2,
        "Fig. 5 and text",
    ),
]

#: The published values, one row per (quantity, dataset): ``key``, ``quantity``, ``kind``,
#: ``dataset``, ``value``, ``source`` (where in the paper).
PUBLISHED = pd.DataFrame(_ROWS, columns=["key", "quantity", "kind", "dataset", "value", "source"])

#: The settings behind the published values (Methods), noted where a run differs.
PAPER_SETTINGS = {
    "drop_threshold": DROP_THRESHOLD,
    "fcd_definition": "euclidean",
    "cooccurrence": "counts",
    "dense_sparsity": 0.0,
    "pie_sparsity": PIE_SPARSITY,
    "pie_fraction": PIE_FRACTION,
}

#: The class pairs the paper's Fig. 4 names (NIH-CXR-LT class names).
FIG4_PAIRS = (
    ("Emphysema", "Subcutaneous Emphysema"),
    ("Emphysema", "Pneumomediastinum"),
    ("Infiltration", "Hernia"),
)
