"""Per-organ DSC and NSD exactly as the FLARE 2024 Task 2/3 scorer computes them.

Reference: ``T2andT3_FLARE24_DSC_NSD_Eval.py`` + ``SurfaceDice.py`` of the organizers
(see ``shared/docs/flare_protocol.md``). For every organ id ``i`` of the modality:

- ground truth (GT) and prediction both without voxel ``== i``: DSC 1, NSD 1;
- exactly one of them without: DSC 0, NSD 0;
- aorta (5), IVC (6) and esophagus (10), MRI only: both masks are first cut to the GT's
  labelled slice range on array axis 2, ``[:, :, z_min:z_max]`` with the upper bound
  EXCLUSIVE (organizers' quirk: the top labelled slice is dropped). An organ labelled
  on a single slice therefore becomes empty after the cut: the organizers' DSC is then
  NaN (0/0) and their ``compute_surface_distances`` raises on the zero-size array, so
  there is no reference value; we report DSC = NaN and NSD = NaN (the summary skips
  NaN, like pandas' ``mean``);
- DSC < 0.2: NSD is not computed and set to 0;
- NSD uses the organ's tolerance in mm and the GT header's spacing;
- every value is rounded to 4 decimals with numpy's rounding (``round`` of a numpy
  float, as the organizers' script does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from inference.labels import ORGANS

from .surface import compute_surface_distances, dice_coefficient, surface_dice_at_tolerance

__all__ = [
    "Organ",
    "MRI_ORGANS",
    "PET_ORGANS",
    "SLICE_CUT_ORGAN_IDS",
    "NSD_MIN_DSC",
    "OrganScore",
    "organs_for",
    "score_organ",
    "score_case",
    "round4",
]


@dataclass(frozen=True)
class Organ:
    """One scored label: its id in the label map, a short name and the NSD tolerance in mm."""

    label: int
    name: str
    tolerance_mm: float


# the organ table (inference/labels.py): the organizers' short names and NSD tolerances
MRI_ORGANS: tuple[Organ, ...] = tuple(Organ(o.label, o.short, o.nsd_mm) for o in ORGANS)
# PET scheme (participants' scoring code): 4 is the LEFT KIDNEY, not the pancreas.
PET_ORGANS: tuple[Organ, ...] = tuple(sorted((Organ(o.pet, o.short, o.nsd_mm) for o in ORGANS if o.pet is not None),
                                             key=lambda o: o.label))

# Organs cut to the GT's labelled slice range (MRI label ids; none of them exists on PET).
SLICE_CUT_ORGAN_IDS: frozenset[int] = frozenset({5, 6, 10})
NSD_MIN_DSC = 0.2


def organs_for(modality: str, only_labels: Iterable[int] | None = None) -> tuple[Organ, ...]:
    """The organs scored for ``modality`` ('mri' or 'pet'), optionally restricted to ``only_labels``.

    Raises ValueError for an unknown modality or a label the modality does not score.
    """
    table = {"mri": MRI_ORGANS, "pet": PET_ORGANS}.get(modality.lower())
    if table is None:
        raise ValueError(f"unknown modality {modality!r} (use 'mri' or 'pet')")
    if only_labels is None:
        return table
    wanted = [int(x) for x in only_labels]
    known = {o.label: o for o in table}
    unknown = [x for x in wanted if x not in known]
    if unknown:
        raise ValueError(f"organ ids {unknown} are not scored for {modality} (valid: {sorted(known)})")
    return tuple(known[x] for x in sorted(set(wanted)))


def round4(value: float) -> float:
    """Round to 4 decimals like ``round(numpy.float64(x), 4)`` (numpy's scaled round-half-even)."""
    return float(np.round(np.float64(value), 4))


@dataclass(frozen=True)
class OrganScore:
    """DSC and NSD of one organ in one case, already rounded to 4 decimals (NaN possible, see module doc)."""

    label: int
    dsc: float
    nsd: float


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def score_organ(
    gt_mask: np.ndarray,
    pred_mask: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float,
    cut_to_gt_slices: bool,
) -> tuple[float, float]:
    """Unrounded (DSC, NSD) of one organ from two boolean masks of equal shape.

    ``cut_to_gt_slices`` applies the aorta/IVC/esophagus cut ``[:, :, z_min:z_max]``
    (upper bound exclusive) of the GT's labelled slices.
    """
    gt_any, pred_any = bool(gt_mask.any()), bool(pred_mask.any())
    if not gt_any and not pred_any:
        return 1.0, 1.0
    if gt_any != pred_any:
        return 0.0, 0.0
    if cut_to_gt_slices:
        z_index = np.nonzero(gt_mask.any(axis=(0, 1)))[0]
        z_lower, z_upper = int(z_index.min()), int(z_index.max())
        gt_mask, pred_mask = gt_mask[:, :, z_lower:z_upper], pred_mask[:, :, z_lower:z_upper]
    dsc = dice_coefficient(gt_mask, pred_mask)
    if dsc < NSD_MIN_DSC:  # NaN < 0.2 is False: the organizers then compute NSD of empty masks (NaN)
        return dsc, 0.0
    nsd = surface_dice_at_tolerance(compute_surface_distances(gt_mask, pred_mask, spacing_mm), tolerance_mm)
    return dsc, nsd


def score_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing_mm: Sequence[float],
    organs: Sequence[Organ],
    modality: str = "mri",
) -> list[OrganScore]:
    """Score every organ of ``organs`` on two integer label maps of equal shape (x, y, z order).

    ``spacing_mm`` is the GT header's voxel size; the prediction's geometry is not used.
    Each organ is evaluated on the joint bounding box of its GT and predicted voxels,
    which gives the same numbers as the whole array and is much faster. The slice-range
    cut is applied only for MRI ids 5, 6, 10 (``modality='mri'``).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: ground truth {gt.shape} vs prediction {pred.shape}")
    if gt.ndim != 3:
        raise ValueError(f"need 3-D label maps, got shape {gt.shape}")
    max_label = max((o.label for o in organs), default=0)
    gt_boxes = ndimage.find_objects(gt, max_label=max_label) if max_label else []
    pred_boxes = ndimage.find_objects(pred, max_label=max_label) if max_label else []
    scores = []
    for organ in organs:
        gt_box, pred_box = gt_boxes[organ.label - 1], pred_boxes[organ.label - 1]
        if gt_box is None and pred_box is None:
            dsc, nsd = 1.0, 1.0
        elif gt_box is None or pred_box is None:
            dsc, nsd = 0.0, 0.0
        else:
            box = _union_box(gt_box, pred_box)
            dsc, nsd = score_organ(
                gt[box] == organ.label,
                pred[box] == organ.label,
                spacing_mm,
                organ.tolerance_mm,
                cut_to_gt_slices=modality.lower() == "mri" and organ.label in SLICE_CUT_ORGAN_IDS,
            )
        scores.append(OrganScore(organ.label, round4(dsc), round4(nsd)))
    return scores
