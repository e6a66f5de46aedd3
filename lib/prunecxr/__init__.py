"""prunecxr: reproduce 'How Does Pruning Impact Long-Tailed Multi-label Medical Image
Classifiers?' (Holste et al., MICCAI 2023) as notebooks over a thin helper library.

The notebooks under ``notebooks/`` call these modules; stages hand results to each other
through the run directory (``runs/<run>/``, see the README). ``prunecxr.analyze(probs,
labels, levels, classes)`` runs the analyses on arrays in memory (:mod:`prunecxr.api`,
``docs/extending.md``).
"""

from .config import finish_stage, load_profile, start_stage
from .paths import run_paths

__all__ = ["finish_stage", "load_profile", "run_paths", "start_stage"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Import a submodule on first use, so notebooks can write ``px.figures`` after
    ``import prunecxr as px`` without importing plotly, torch, ... up front (PEP 562)."""
    import importlib

    if name in ("analyze", "Result"):  # the analyses on arrays (prunecxr.api)
        from . import api

        return getattr(api, name)
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
