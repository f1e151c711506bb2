"""Evaluation tools for flare-uda: the FLARE 2024 Task 2/3 scorer (DSC, NSD) and the organizers'
per-case resource measurement (time, GPU memory, AUC).

Command line: ``python -m eval score ...`` and ``python -m eval resources ...`` (see ``eval.__main__``).
Modules: ``surface`` (surfel-area surface distances, NSD), ``metrics`` (per-organ scoring rules),
``score`` (folders, CSV, summary), ``resources`` (run + sample), ``plots`` (PNG figures).
"""
from __future__ import annotations

from importlib import import_module

# name -> submodule; loaded on first use, so that `import eval.dice` (numpy only) pulls in no scipy
_EXPORTS = {"MRI_ORGANS": "metrics", "PET_ORGANS": "metrics", "Organ": "metrics", "OrganScore": "metrics",
            "organs_for": "metrics", "score_case": "metrics", "compute_surface_distances": "surface",
            "surface_dice_at_tolerance": "surface", "dice_coefficient": "dice", "dice_per_label": "dice"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
