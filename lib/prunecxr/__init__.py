"""prunecxr: reproduce 'How Does Pruning Impact Long-Tailed Multi-label Medical Image
Classifiers?' (Holste et al., MICCAI 2023) as notebooks over a thin helper library.

The notebooks under ``notebooks/`` call these modules; stages hand results to each other
through the run directory (``runs/<run>/``, see the README).
"""

from .config import finish_stage, load_profile, start_stage
from .paths import run_paths

__all__ = ["finish_stage", "load_profile", "run_paths", "start_stage"]
__version__ = "0.1.0"
