"""Evaluation tools for flare-uda: the FLARE 2024 Task 2/3 scorer (DSC, NSD) and the organizers'
per-case resource measurement (time, GPU memory, AUC).

Command line: ``python -m eval score ...`` and ``python -m eval resources ...`` (see ``eval.__main__``).
Modules: ``surface`` (surfel-area surface distances, NSD), ``metrics`` (per-organ scoring rules),
``score`` (folders, CSV, summary), ``resources`` (run + sample), ``plots`` (PNG figures).
"""
from .metrics import MRI_ORGANS, PET_ORGANS, Organ, OrganScore, organs_for, score_case
from .surface import compute_surface_distances, dice_coefficient, surface_dice_at_tolerance

__all__ = [
    "MRI_ORGANS",
    "PET_ORGANS",
    "Organ",
    "OrganScore",
    "organs_for",
    "score_case",
    "compute_surface_distances",
    "dice_coefficient",
    "surface_dice_at_tolerance",
]
