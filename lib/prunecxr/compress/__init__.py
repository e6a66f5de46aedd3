"""Notebook 03: compression methods, the sweep over seeds and levels, the prediction store,
and the importer of the authors' released predictions."""

from . import importer
from .prune import *  # noqa: F401,F403  (the stage's public names)
