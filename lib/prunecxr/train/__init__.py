"""Notebook 02: the population of dense models."""

from .core import *  # noqa: F401,F403  (the stage's public names)
