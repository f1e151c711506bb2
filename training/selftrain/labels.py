"""Label maps as pure data: organ sets, numbering, and the measurements both filter stages use.

Every function takes numpy label maps (any integer dtype, FLARE numbering) and returns plain numbers or arrays;
nothing here reads files. Numbering: FLARE (1 liver, 2 right kidney, 3 spleen, 4 pancreas, 5 aorta, 6 IVC,
7 right adrenal, 8 left adrenal, 9 gallbladder, 10 esophagus, 11 stomach, 12 duodenum, 13 left kidney).
The PET scheme (1 liver, 2 right kidney, 3 spleen, 4 left kidney) is converted at the file boundary
(`flare_from_pet`) so that everything inside the self-training code is FLARE-numbered.
"""
from __future__ import annotations

import numpy as np

from eval.dice import dice_per_label
from inference.labels import DATASET_ORGANS, FLARE_KEYS, PET_FROM_MRI

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
    lut = np.zeros(256, dtype=np.uint8)
    for pet, flare in FLARE_FROM_PET.items():
        lut[pet] = flare
    return lut[labels]


def restrict(labels: np.ndarray, organs) -> np.ndarray:
    """Copy of `labels` (uint8) with every label not in `organs` set to background."""
    keep = np.zeros(256, dtype=np.uint8)
    for o in organs:
        keep[int(o)] = int(o)
    return keep[labels]


def voxel_counts(labels: np.ndarray) -> np.ndarray:
    """Voxels per label value 0..255 (int64 array of length 256)."""
    return np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=256)


def missing_organs(labels: np.ndarray, organs, min_voxels: int = 1) -> list[int]:
    """Organs of `organs` with fewer than `min_voxels` voxels in `labels` (the class-number rule fails if any)."""
    counts = voxel_counts(labels)
    return [int(o) for o in organs if counts[int(o)] < min_voxels]


def box_voxels(mask: np.ndarray) -> int:
    """Voxels in the axis-aligned bounding box of `mask` (inclusive extents); 0 for an empty mask."""
    if not mask.any():
        return 0
    n = 1
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other))
        n *= int(hit[-1] - hit[0] + 1)
    return n


def relative_volumes(labels: np.ndarray, organs) -> dict[int, float]:
    """R_c = voxels of organ c / voxels of the bounding box of all `organs` together, for each organ of `organs`.

    A ratio of voxel counts on one grid, so it does not depend on the voxel spacing. Organs absent from `labels`
    get 0.0; when none of `organs` is present every R_c is 0.0.
    """
    organs = [int(o) for o in organs]
    lut = np.zeros(256, dtype=bool)
    lut[organs] = True
    box = box_voxels(lut[labels])
    counts = voxel_counts(labels)
    return {o: (float(counts[o]) / box if box else 0.0) for o in organs}


def mean_foreground_dice(a: np.ndarray, b: np.ndarray, organs) -> float:
    """Mean Dice (eval.dice) over the organs of `organs` present in `a` or `b`; 1.0 when none is in either (the
    maps agree)."""
    values = [v for v in dice_per_label(a, b, organs).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else 1.0


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
    votes = np.zeros(shape, dtype=np.uint16)
    background = np.ones(256, dtype=bool)  # labels outside `organs` vote for background
    background[[int(o) for o in organs]] = False
    for label in [0] + [int(o) for o in organs]:
        votes[...] = 0
        for p in predictions:
            votes += background[p] if label == 0 else (p == label)
        out[2 * votes.astype(np.int32) > n] = label
    return out
