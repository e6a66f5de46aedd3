"""Notebook 01: datasets, patient-level splits, the image cache, the phantom, and the
notebook's tables and figures.

Rooms, one job each:

========================  =====================================================================
``specs``                 the dataset registry (:data:`DATASETS`, :func:`dataset_spec`)
``tables``                reading and validating label tables (errors name file, line, column)
``splits``                patient-level splits and subsamples
``keys``                  keyed hashes of ids behind every choice the stage makes
``datasets``              datasets bound to a data root; :func:`prepare_run`, :func:`open_split`
``images``                decoding image files; where a split's pixels come from
``cache``                 the image cache (one memory-mapped uint8 array per split)
``phantom``               the NIH phantom: real labels, rendered images, drawn locations
``reference``             the paper's and CheXNet's published data, the phantom's difficulty
``layout``                :func:`check_layout` (``python -m prunecxr check-data``)
``summaries``             notebook 01's tables and figures
========================  =====================================================================

The names below are those that notebooks and other packages use.
"""

from ..artifacts import SPLITS, class_names, read_labels
from .datasets import Split, create_dataset, open_split, prepare_run
from .layout import check_layout, check_with_warnings, format_layout_report
from .specs import DATASETS, dataset_spec
from .summaries import (
    cache_report,
    class_counts_figure,
    class_iou_table,
    difficulty_caption,
    difficulty_table,
    examples_figure,
    iou_figure,
    labels_per_image_figure,
    locations_figure,
    patients_figure,
    split_summary,
)
from .tables import EmptyClassWarning

__all__ = [
    "DATASETS",
    "SPLITS",
    "EmptyClassWarning",
    "Split",
    "cache_report",
    "check_layout",
    "check_with_warnings",
    "class_counts_figure",
    "class_names",
    "create_dataset",
    "dataset_spec",
    "class_iou_table",
    "difficulty_caption",
    "difficulty_table",
    "examples_figure",
    "format_layout_report",
    "iou_figure",
    "labels_per_image_figure",
    "locations_figure",
    "open_split",
    "patients_figure",
    "prepare_run",
    "read_labels",
    "split_summary",
]
