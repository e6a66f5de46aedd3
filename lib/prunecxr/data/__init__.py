"""Notebook 01: datasets, patient-level splits, the image cache, the phantom, and the
notebook's summaries and figures."""

from . import images, phantom
from .datasets import *  # noqa: F401,F403  (the stage's public names)
