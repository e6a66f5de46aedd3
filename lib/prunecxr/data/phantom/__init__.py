"""The NIH phantom: real ChestX-ray14 labels, synthetic chest images rendered from them.

The label table is the real one that the ``torchxrayvision`` wheel ships as
``data/Data_Entry_2017_v2020.csv.gz`` (112,120 images of 30,805 patients, 14 findings plus
No Finding). It is read from the installed wheel without importing ``torchxrayvision``
(whose import pulls in scikit-image) and without any download.

Pixels are synthetic: every image is an 8-bit grayscale frontal chest radiograph drawn from
a procedural anatomy (thorax, lungs, heart, mediastinum, diaphragm, ribs, clavicles, vessel
markings, stomach bubble, breast shadows) that varies per patient, posed and exposed
differently per image, with one clinically inspired signature per finding on top:

=====================  =====================================================================
finding                what is drawn (severity, size, contrast and position vary per image)
=====================  =====================================================================
Infiltration           patchy ill-defined opacities, focal (real box prior) or bibasal
Effusion               fluid filling the costophrenic angle up to a meniscus rising laterally
Atelectasis            a plate-like linear band (real box prior) with hemidiaphragm elevation
Nodule                 a small round well-defined opacity (real box prior)
Mass                   a large lobulated opacity (real box prior)
Consolidation          dense homogeneous lobar opacity bounded by a fissure
Pneumothorax           a lucent rim without lung markings and a thin visceral pleural line
Pleural Thickening     a dense band along the lateral chest wall and an apical cap
Cardiomegaly           an enlarged heart silhouette (width from the real boxes)
Emphysema              hyperlucent, over-inflated lungs, flat low diaphragm, sparse markings
Edema                  bilateral perihilar haze ("bat wing") with Kerley B lines
Fibrosis               a coarse peripheral, basal reticular pattern with volume loss
Pneumonia              a focal patchy airspace opacity (real box prior)
Hernia                 a retrocardiac soft-tissue mass with a gas cap and an air-fluid level
=====================  =====================================================================

Findings that look alike on real films look alike here too (infiltration, pneumonia and
consolidation; pneumothorax and pleural thickening share their geometry with opposite
sign; an AP view magnifies the heart like mild cardiomegaly). Locations and sizes of the
eight findings that NIH boxed come from the real boxes of ``data/BBox_List_2017.csv.gz``.

Every random number derives from a keyed hash of the image id (pose, exposure, noise,
finding appearance) or of the patient id (anatomy, vessel markings), so the same image id
renders the same pixels at a given resolution, in any batch and any order, and films of one
patient share their anatomy.

Each finding's difficulty is its own knob, its *strength*: the multiplier of that finding's
drawn intensity and anatomical change. The shipped strengths (package data,
:func:`prunecxr.data.reference.phantom_difficulty`) are calibrated so that the default
recipe's dense models reach CheXNet's published per-class AUROC (condition ``calibrated``), or
one common AUROC for every finding (condition ``equal``); ``python -m prunecxr
calibrate-phantom`` fits them again (:mod:`prunecxr.data.calibration`).

:func:`locate` records where each finding was drawn: the box of the pixels that change when
the finding is taken away from the image (``locations.parquet``, ``docs/artifacts.md``).

The label structure is real; the pixels are not. Nothing learned on them is evidence about
real chest X-rays, and every figure and table made from them says so
(:data:`prunecxr.config.PHANTOM_NOTICE`).
"""

from .difficulty import strengths
from .draw import HERNIA_SIZE, NOISE_LEVEL, RENDERER_VERSION, UNCALIBRATED_STRENGTH
from .labels import (
    BBOX_FILE,
    CLASSES,
    FINDINGS,
    META_COLUMNS,
    TABLE_FILE,
    WHEEL,
    bbox_priors,
    load_table,
    wheel_file,
)
from .locations import LOCATION_COLUMNS, LOCATION_MIN_CHANGE, LOCATION_RELATIVE, drawn_mask, locate
from .render import fingerprint, render

__all__ = [
    "BBOX_FILE",
    "CLASSES",
    "FINDINGS",
    "HERNIA_SIZE",
    "LOCATION_COLUMNS",
    "LOCATION_MIN_CHANGE",
    "LOCATION_RELATIVE",
    "META_COLUMNS",
    "NOISE_LEVEL",
    "RENDERER_VERSION",
    "TABLE_FILE",
    "UNCALIBRATED_STRENGTH",
    "WHEEL",
    "bbox_priors",
    "drawn_mask",
    "fingerprint",
    "load_table",
    "locate",
    "render",
    "strengths",
    "wheel_file",
]
