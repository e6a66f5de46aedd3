"""Notebook 09: pruning finds the hard-to-learn training images, training attends them.

Jaiswal et al., *Attend Who is Weak* (WACV 2023, arXiv:2212.02675), for this project's
multi-label classifiers (docs/attend.md). Rooms, each with one job:

``htl``
    the hard-to-learn (HTL) images: adaptively, by pruning a copy of the model in training,
    and post hoc, the PIE definition on the training split of the trained population;
``weights``
    the arms' loss weights (HTL up-weighted, the random and class-balanced controls);
``arms``
    each arm as a run of its own beside the dense one, trained, swept and analysed like it;
``cam``
    class activation maps and their pointing game and IoU against the drawn findings;
``compare``
    paired statistics by seed: Wilcoxon signed-rank tests and bootstrap CIs;
``evaluate``
    notebook 09's tables from the artifacts;
``summaries``
    its figures and displays.
"""

from . import arms, cam, compare, evaluate, htl, summaries, weights
from .arms import arm_run, check_arms, check_options, check_seeds_of, prepare_arm, train_arm
from .weights import ARMS

__all__ = [
    "ARMS",
    "arm_run",
    "arms",
    "cam",
    "check_arms",
    "check_options",
    "check_seeds_of",
    "compare",
    "evaluate",
    "htl",
    "prepare_arm",
    "summaries",
    "train_arm",
    "weights",
]
