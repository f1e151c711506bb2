"""Label maps as pure data: organ sets, numbering, and the measurements both filter stages use.

Every function takes numpy label maps (any integer dtype, FLARE numbering) and returns plain numbers or arrays;
nothing here reads files. Numbering: FLARE (1 liver, 2 right kidney, 3 spleen, 4 pancreas, 5 aorta, 6 IVC,
7 right adrenal, 8 left adrenal, 9 gallbladder, 10 esophagus, 11 stomach, 12 duodenum, 13 left kidney).
The PET scheme (1 liver, 2 right kidney, 3 spleen, 4 left kidney) is converted at the file boundary
(`flare_from_pet`) so that everything inside the self-training code is FLARE-numbered.
"""
from __future__ import annotations

import math

import numpy as np

from inference.labels import DATASET_ORGANS, FLARE_KEYS, PET_FROM_MRI
from inference.postprocess import relabel
from inference.roi import foreground_box

ORGAN_NAMES = FLARE_KEYS
# Target set -> the organs its pseudo-labels carry (FLARE numbering). PET labels carry liver, kidneys, spleen.
ORGAN_SETS: dict[str, tuple[int, ...]] = {
    "mri": DATASET_ORGANS["flare_mri"],
    "pet": tuple(sorted(DATASET_ORGANS["flare_pet"])),  # (1, 2, 3, 13)
    # BTCV-trained models on thick-slice abdominal MRI: BTCV's organs (no duodenum) without the adrenal glands
    # (thinner than a 6-9 mm slice) and the gallbladder (absent after cholecystectomy, collapsed after a meal)
    "mri_large": (1, 2, 3, 4, 5, 6, 10, 11, 13),
}
FLARE_FROM_PET = {pet: flare for flare, pet in PET_FROM_MRI.items()}  # 1->1, 2->2, 3->3, 4->13


def organ_set(name: str) -> tuple[int, ...]:
    try:
        return ORGAN_SETS[name]
    except KeyError:
        raise ValueError(f"unknown target set {name!r} (known: {', '.join(ORGAN_SETS)})") from None


def flare_from_pet(labels: np.ndarray) -> np.ndarray:
    """PET numbering {0..4} -> FLARE numbering {0, 1, 2, 3, 13} (uint8). Values above 4 are an error."""
    if labels.size and int(labels.max()) > 4:
        raise ValueError(f"PET label map holds label {int(labels.max())} (PET numbering is 0..4)")
    return relabel(labels, FLARE_FROM_PET)


def restrict(labels: np.ndarray, organs) -> np.ndarray:
    """Copy of `labels` (uint8) with every label not in `organs` set to background."""
    return relabel(labels, {int(o): int(o) for o in organs})


def voxel_counts(labels: np.ndarray) -> np.ndarray:
    """Voxels per label value 0..255 (int64 array of length 256)."""
    return np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=256)


def missing_organs(labels: np.ndarray, organs, min_voxels: int = 1) -> list[int]:
    """Organs of `organs` with fewer than `min_voxels` voxels in `labels` (the class-number rule fails if any)."""
    counts = voxel_counts(labels)
    return [int(o) for o in organs if counts[int(o)] < min_voxels]


def box_voxels(mask: np.ndarray) -> int:
    """Voxels in the axis-aligned bounding box of `mask` (inclusive extents); 0 for an empty mask."""
    box = foreground_box(mask)
    return 0 if box is None else math.prod(box.shape)


def relative_volumes(labels: np.ndarray, organs) -> dict[int, float]:
    """R_c = voxels of organ c / voxels of the bounding box of all `organs` together, for each organ of `organs`.

    A ratio of voxel counts on one grid, so it does not depend on the voxel spacing. Organs absent from `labels`
    get 0.0; when none of `organs` is present every R_c is 0.0.
    """
    organs = [int(o) for o in organs]
    box = box_voxels(np.isin(labels, organs))
    counts = voxel_counts(labels)
    return {o: (float(counts[o]) / box if box else 0.0) for o in organs}


def majority_vote(predictions: list[np.ndarray], organs, no_majority_label: int = 0) -> np.ndarray:
    """Voxel-wise consensus of N label maps: voxel -> organ c where MORE than N/2 maps say c.

    Labels outside `organs` count as background votes. A voxel where no organ of `organs` and not background
    has a strict majority gets `no_majority_label` (0 = background; e.g. nnU-Net's ignore label). Background
    wins where more than N/2 maps say background. At most one label can hold a strict majority, so the result
    is unique.
    """
    if not predictions:
        raise ValueError("majority vote needs at least one prediction")
    shape = predictions[0].shape
    for p in predictions[1:]:
        if p.shape != shape:
            raise ValueError(f"predictions differ in shape: {shape} vs {p.shape}")
    n = len(predictions)
    out = np.full(shape, no_majority_label, dtype=np.uint8)
    organs = [int(o) for o in organs]
    for label in [0] + organs:  # labels outside `organs` vote for background
        votes = np.zeros(shape, dtype=np.uint16)
        for p in predictions:
            votes += np.isin(p, organs, invert=True) if label == 0 else p == label
        out[2 * votes.astype(np.int32) > n] = label
    return out
