"""Cross-check against an independent implementation on real label maps.

The reference is DeepMind's surface-distance as published on PyPI (``surface-distance==0.1``),
wrapped in the organizers' per-organ rules (T2andT3_FLARE24_DSC_NSD_Eval.py) written out
here on the full arrays. Predictions are eroded / shifted / trimmed copies of real labels
read from ``shared/data/real`` (never copied into the repository).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from eval.io_utils import read_label_map
from eval.metrics import MRI_ORGANS, organs_for, score_case, score_organ

sd = pytest.importorskip("surface_distance")

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
CHAOS = REAL / "mr_chaos_t2" / "labels"
TOTALSEG = REAL / "totalseg_examples" / "labels"
pytestmark = pytest.mark.skipif(not CHAOS.is_dir(), reason=f"real data not found at {REAL}")


def _organizers_reference(gt, pred, spacing, organs):
    """The organizers' loop, with surface-distance's functions, on full arrays (unrounded)."""
    out = {}
    for organ in organs:
        i = organ.label
        g_any, p_any = np.sum(gt == i) > 0, np.sum(pred == i) > 0
        if not g_any and not p_any:
            out[i] = (1.0, 1.0)
        elif g_any != p_any:
            out[i] = (0.0, 0.0)
        else:
            if i in (5, 6, 10):
                z = np.where(gt == i)[2]
                lo, hi = np.min(z), np.max(z)
                g, p = gt[:, :, lo:hi] == i, pred[:, :, lo:hi] == i
            else:
                g, p = gt == i, pred == i
            dsc = sd.compute_dice_coefficient(g, p)
            if dsc < 0.2:
                nsd = 0.0
            else:
                nsd = sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(g, p, spacing), organ.tolerance_mm)
            out[i] = (float(dsc), float(nsd))
    return out


def _erode_labels(labels):
    out = np.zeros_like(labels)
    for value in np.unique(labels)[1:]:
        out[ndimage.binary_erosion(labels == value, iterations=1)] = value
    return out


def _perturbations(labels):
    shifted = np.roll(labels, (2, -1, 1), axis=(0, 1, 2))
    grown = ndimage.grey_dilation(labels, size=(3, 3, 1))
    return {"eroded": _erode_labels(labels), "shifted": shifted, "dilated": grown}


@pytest.fixture(scope="module")
def chaos_cases():
    files = sorted(CHAOS.glob("*.nii.gz"))
    assert len(files) >= 3
    return [read_label_map(f) for f in (files[0], files[len(files) // 2], files[-1])]


def test_nsd_and_dsc_agree_with_surface_distance_on_chaos(chaos_cases):
    organs = organs_for("mri", [1, 2, 3, 13])
    max_difference = 0.0
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # surface-distance 0.1 imports scipy.ndimage.filters
        for label_map in chaos_cases:
            gt = label_map.data
            for pred in _perturbations(gt).values():
                reference = _organizers_reference(gt, pred, label_map.spacing_mm, organs)
                for organ in organs:
                    ours = score_organ(gt == organ.label, pred == organ.label, label_map.spacing_mm, organ.tolerance_mm, False)
                    difference = max(abs(ours[0] - reference[organ.label][0]), abs(ours[1] - reference[organ.label][1]))
                    max_difference = max(max_difference, difference)
                    compared += 1
    print(f"\nCHAOS cross-check: {compared} organ comparisons, max |ours - surface-distance| = {max_difference:.3g}")
    assert compared == 3 * 3 * 4
    assert max_difference < 1e-4


@pytest.mark.parametrize("name", ["ts_ct_sm.nii.gz", "ts_mr_sm.nii.gz", "ts_ct_dicom.nii.gz"])
def test_all_rules_agree_with_reference_on_totalsegmentator_labels(name):
    """13-organ scheme with aorta/IVC slice cuts and organs missing on either side."""
    label_map = read_label_map(TOTALSEG / name)
    gt = label_map.data
    pred = np.roll(gt, (1, 0, 1), axis=(0, 1, 2))
    pred[pred == 9] = 0  # gallbladder missing in the prediction
    pred[(pred == 0) & (np.roll(gt, 3, axis=0) == 1)] = 10  # an esophagus the GT does not have
    top = np.nonzero((gt == 5).any(axis=(0, 1)))[0]
    if top.size:
        pred[:, :, top.max()][pred[:, :, top.max()] == 5] = 0  # drop the aorta's top slice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = _organizers_reference(gt, pred, label_map.spacing_mm, MRI_ORGANS)
    ours = {s.label: (s.dsc, s.nsd) for s in score_case(gt, pred, label_map.spacing_mm, MRI_ORGANS)}
    for label, (dsc, nsd) in reference.items():
        assert ours[label][0] == pytest.approx(round(np.float64(dsc), 4), abs=1e-12), (name, label)
        assert ours[label][1] == pytest.approx(round(np.float64(nsd), 4), abs=1e-12), (name, label)
    assert any(0 < v[1] < 1 for v in ours.values())  # not a trivial comparison
