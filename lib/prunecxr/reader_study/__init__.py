"""Notebook 07: blinded reader packets, the analysis of their answers, Fig. 6."""

from .core import *  # noqa: F401,F403  (the stage's public names)
