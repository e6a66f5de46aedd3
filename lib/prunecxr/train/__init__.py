"""Notebook 02: the population of dense models.

Rooms, each with one job:

``recipe``
    :class:`TrainConfig` (the paper's recipe), :class:`EarlyStopping`, the augmentation, and
    the arithmetic per device;
``feed``
    a split's images and labels served as device tensors;
``checkpoints``
    the per-seed files (``last.pt``, ``model.pt``, ``history.csv``) and ``models/train.json``,
    with the checks that let a population resume only as it was started;
``loop``
    training one seed: epochs, validation, early stopping;
``population``
    :func:`train_population` and :func:`fit_population`: the seeds one after another
    (``population="sequential"``, the default) or as Ray tasks (``"ray"``), with the same
    weights either way;
``ray_tasks``
    the seeds as Ray tasks (the cluster itself is :mod:`prunecxr.cluster`);
``progress``
    the progress bars;
``summaries``
    notebook 02's tables, sentences and figures.

Loading a trained model and predicting is :mod:`prunecxr.inference`; devices, cores and
threads are :mod:`prunecxr.runtime`.
"""

from .population import POPULATION_MODES, check_seeds, fit_population, run_stage, train_population
from .recipe import MAX_ROTATION, EarlyStopping, TrainConfig, augment, draw_augmentation
from .summaries import (
    class_ap_figure,
    headline_text,
    learning_curves_figure,
    plan_text,
    read_histories,
    summarize_test_ap,
    test_average_precision,
)

__all__ = [
    "MAX_ROTATION",
    "POPULATION_MODES",
    "EarlyStopping",
    "TrainConfig",
    "augment",
    "check_seeds",
    "class_ap_figure",
    "draw_augmentation",
    "fit_population",
    "headline_text",
    "learning_curves_figure",
    "plan_text",
    "read_histories",
    "run_stage",
    "summarize_test_ap",
    "test_average_precision",
    "train_population",
]
