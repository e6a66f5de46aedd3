"""The dataset registry: what each dataset is, declaratively (notebook 01).

A dataset is a small :class:`DatasetSpec` (name, classes in canonical order, label files,
image path column, image root) in :data:`DATASETS`; :func:`prunecxr.data.create_dataset`
binds one to a data root and options. Four are registered:

``nih-cxr-lt``
    NIH ChestX-ray14 images with the NIH-CXR-LT labels of the paper (20 classes).
``mimic-cxr-lt``
    MIMIC-CXR-JPG 2.0.0 images with the MIMIC-CXR-LT labels of the paper (19 classes).
``csv``
    any multi-label table a user brings: an image path column, 0/1 class columns (named or
    inferred), an optional patient id column and an optional split column.
``nih-phantom``
    the embedded default: the real NIH ChestX-ray14 label table shipped in the
    ``torchxrayvision`` wheel with synthetic images (:mod:`prunecxr.data.phantom`).

Where the real data goes is in ``data_access.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import SPLITS
from . import phantom

#: What to do with a label other than 0/1. ``error``: refuse it; ``zero``: blank (NaN) and
#: uncertain (-1) become 0; ``one``: blank becomes 0 and uncertain (-1) becomes 1 (U-Ones).
#: Any other value (2, 0.5, "yes") is always an error.
UNCERTAIN_POLICIES = ("error", "zero", "one")

NIH_CXR_LT_CLASSES = (
    "No Finding",
    "Infiltration",
    "Effusion",
    "Atelectasis",
    "Nodule",
    "Mass",
    "Consolidation",
    "Pneumothorax",
    "Pleural Thickening",
    "Cardiomegaly",
    "Emphysema",
    "Edema",
    "Fibrosis",
    "Subcutaneous Emphysema",
    "Pneumonia",
    "Tortuous Aorta",
    "Calcification of the Aorta",
    "Pneumoperitoneum",
    "Hernia",
    "Pneumomediastinum",
)
MIMIC_CXR_LT_CLASSES = (
    "Support Devices",
    "Lung Opacity",
    "Cardiomegaly",
    "Pleural Effusion",
    "Atelectasis",
    "Pneumonia",
    "Edema",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Consolidation",
    "Pneumothorax",
    "Fracture",
    "Calcification of the Aorta",
    "Tortuous Aorta",
    "Subcutaneous Emphysema",
    "Lung Lesion",
    "Pneumomediastinum",
    "Pneumoperitoneum",
    "Pleural Other",
)

#: csv: the label table when the parameter labels_csv is empty (relative to data_root)
DEFAULT_LABELS_CSV = "labels.csv"
#: csv: column names tried, in order, when the user names none
IMAGE_COLUMN_CANDIDATES = ("path", "image_path", "image", "filename", "file", "image_id", "id")
PATIENT_COLUMN_CANDIDATES = ("patient_id", "subject_id", "subj_id", "patient")
SPLIT_COLUMN_CANDIDATES = ("split",)
#: the options only dataset ``csv`` takes
CSV_OPTIONS = ("labels_csv", "image_column", "class_columns", "patient_column", "split_column")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset, declaratively.

    Attributes
    ----------
    name : registry key, also the sub-folder of the data root that holds it.
    classes : class names in canonical order (empty: the user's or the inferred ones).
    label_files : one label file per split, in :data:`SPLITS` order, relative to the
        dataset folder (empty: one user table, split by a column or by patients).
    image_column : the label files' column of image paths, relative to ``image_root``.
    image_root : folder of the images, relative to the dataset folder.
    patient_columns : columns that hold the patient id, tried in order.
    patient_pattern : regex on the image path whose first group is the patient id, used
        when no patient column is present.
    synthetic : pixels are rendered, not read (the phantom).
    description : one line for listings.
    """

    name: str
    classes: tuple[str, ...]
    label_files: tuple[str, ...]
    image_column: str
    image_root: str
    patient_columns: tuple[str, ...] = ()
    patient_pattern: str | None = None
    synthetic: bool = False
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    "nih-cxr-lt": DatasetSpec(
        name="nih-cxr-lt",
        classes=NIH_CXR_LT_CLASSES,
        label_files=tuple(f"miccai2023_nih-cxr-lt_labels_{s}.csv" for s in SPLITS),
        image_column="id",
        image_root="images",
        patient_columns=("subj_id",),
        patient_pattern=r"^(?:.*/)?(\d+)_\d+\.\w+$",
        description="NIH ChestX-ray14 images, NIH-CXR-LT labels (20 classes)",
    ),
    "mimic-cxr-lt": DatasetSpec(
        name="mimic-cxr-lt",
        classes=MIMIC_CXR_LT_CLASSES,
        label_files=tuple(f"miccai2023_mimic-cxr-lt_labels_{s}.csv" for s in SPLITS),
        image_column="path",
        image_root="mimic-cxr-jpg",
        patient_columns=("subject_id",),
        patient_pattern=r"(?:^|/)p(\d+)/s\d+/",
        description="MIMIC-CXR-JPG 2.0.0 images, MIMIC-CXR-LT labels (19 classes)",
    ),
    "csv": DatasetSpec(
        name="csv",
        classes=(),
        label_files=(),
        image_column="",
        image_root="",
        patient_columns=PATIENT_COLUMN_CANDIDATES,
        description="your own multi-label table (option labels_csv) and images",
    ),
    "nih-phantom": DatasetSpec(
        name="nih-phantom",
        classes=phantom.CLASSES,
        label_files=("<torchxrayvision wheel>/data/Data_Entry_2017_v2020.csv.gz",),
        image_column="image_id",
        image_root="",
        synthetic=True,
        description="real NIH ChestX-ray14 labels (15 classes), synthetic phantom images",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; a clear error for an unknown name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def check_uncertain(uncertain: str) -> str:
    """Validate the ``uncertain`` parameter (one of :data:`UNCERTAIN_POLICIES`)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(
            f"unknown uncertain={uncertain!r}; choose one of {list(UNCERTAIN_POLICIES)}"
        )
    return uncertain
