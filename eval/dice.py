"""The one Dice of this project (numpy only: the training path on a machine without scipy imports it too).

Empty-mask rule, as the FLARE scorer's: NaN when a label is in neither mask; callers that average skip NaN
(numpy.nanmean) and say what an all-NaN mean means for them.
"""
from __future__ import annotations

import numpy as np


def dice_coefficient(mask_gt: np.ndarray, mask_pred: np.ndarray) -> float:
    """Volumetric Dice 2|A and B| / (|A| + |B|); NaN when both masks are empty."""
    volume_sum = int(np.count_nonzero(mask_gt)) + int(np.count_nonzero(mask_pred))
    if volume_sum == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(mask_gt & mask_pred)) / volume_sum


def dice_per_label(gt: np.ndarray, pred: np.ndarray, labels) -> dict[int, float]:
    """`dice_coefficient` of each label of `labels` (0..255) between two label maps of one shape, NaN where the
    label is in neither (the one empty-mask rule), from one joint histogram of the voxels foreground in either."""
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: {gt.shape} vs {pred.shape}")
    gt, pred = np.asarray(gt, dtype=np.uint8), np.asarray(pred, dtype=np.uint8)
    fg = (gt != 0) | (pred != 0)   # background pairs enter no organ's Dice
    joint = np.bincount(gt[fg].astype(np.uint16) * 256 + pred[fg], minlength=256 * 256).reshape(256, 256)
    out = {}
    for lab in (int(v) for v in labels):
        total = int(joint[lab, :].sum()) + int(joint[:, lab].sum())
        out[lab] = float("nan") if total == 0 else 2.0 * int(joint[lab, lab]) / total
    return out
