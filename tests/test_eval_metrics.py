"""The FLARE 2024 Task 2/3 scoring rules (eval.metrics) on small synthetic label maps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import MRI_ORGANS, PET_ORGANS, organs_for, round4, score_case, score_organ
from eval.surface import compute_surface_distances, surface_dice_at_tolerance

SPACING = (1.0, 1.0, 2.0)


def _scores(gt, pred, organs, modality="mri", spacing=SPACING):
    return {s.label: (s.dsc, s.nsd) for s in score_case(gt, pred, spacing, organs, modality)}


def test_organ_tables():
    assert [o.label for o in MRI_ORGANS] == list(range(1, 14))
    assert {o.label: o.tolerance_mm for o in MRI_ORGANS} == {
        1: 5, 2: 3, 3: 3, 4: 5, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 3, 11: 5, 12: 7, 13: 3
    }
    assert [(o.label, o.name, o.tolerance_mm) for o in PET_ORGANS] == [
        (1, "liver", 5.0), (2, "right_kidney", 3.0), (3, "spleen", 3.0), (4, "left_kidney", 3.0)
    ]
    assert [o.label for o in organs_for("mri", [13, 1, 3, 2])] == [1, 2, 3, 13]
    with pytest.raises(ValueError):
        organs_for("pet", [5])
    with pytest.raises(ValueError):
        organs_for("ct")


def test_empty_rules():
    gt = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:5, 2:5, 2:5] = 1  # liver only in GT
    pred[6:8, 6:8, 6:8] = 2  # right kidney only in prediction
    scores = _scores(gt, pred, MRI_ORGANS)
    assert scores[1] == (0.0, 0.0)
    assert scores[2] == (0.0, 0.0)
    assert all(scores[i] == (1.0, 1.0) for i in range(3, 14))


def test_identical_maps_score_one():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[1:6, 1:6, 1:6] = 1
    gt[7:11, 7:11, 2:9] = 5
    gt[7:10, 1:4, 1:4] = 13
    scores = _scores(gt, gt.copy(), MRI_ORGANS)
    assert all(v == (1.0, 1.0) for v in scores.values())


def _tube(label, z_from, z_to_inclusive, shape=(10, 10, 16)):
    volume = np.zeros(shape, np.uint8)
    volume[3:7, 3:7, z_from:z_to_inclusive + 1] = label
    return volume


@pytest.mark.parametrize("label", [5, 6, 10])
def test_slice_cut_drops_prediction_outside_gt_range(label):
    gt, pred = _tube(label, 4, 9), _tube(label, 0, 15)
    assert _scores(gt, pred, MRI_ORGANS)[label] == (1.0, 1.0)
    # the same geometry as liver (no cut) is penalised
    assert _scores(np.where(gt > 0, 1, 0).astype(np.uint8), np.where(pred > 0, 1, 0).astype(np.uint8), MRI_ORGANS)[1][0] == round4(
        2 * 6 / (6 + 16)
    )


def test_slice_cut_upper_bound_is_exclusive():
    gt = _tube(5, 4, 9)
    without_top = _tube(5, 4, 8)  # top labelled slice missing: invisible after the cut
    without_bottom = _tube(5, 5, 9)
    assert _scores(gt, without_top, MRI_ORGANS)[5] == (1.0, 1.0)
    dsc, _ = _scores(gt, without_bottom, MRI_ORGANS)[5]
    assert dsc == round4(2 * 4 / (5 + 4))  # slices 4..8 kept: GT 5 slices, prediction 4


def test_single_slice_vessel_gives_nan_like_the_organizers():
    gt, pred = _tube(6, 7, 7), _tube(6, 7, 7)
    dsc, nsd = _scores(gt, pred, MRI_ORGANS)[6]
    assert math.isnan(dsc) and math.isnan(nsd)


def test_no_slice_cut_on_pet():
    # PET label 4 is the left kidney: scored on the full range
    gt, pred = _tube(4, 4, 9), _tube(4, 0, 15)
    dsc, _ = _scores(gt, pred, PET_ORGANS, modality="pet")[4]
    assert dsc == round4(2 * 6 / (6 + 16))


def test_nsd_skipped_below_dsc_0_2():
    gt = np.zeros((30, 12, 12), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:12, 1:11, 1:11] = 12  # duodenum, tolerance 7 mm
    pred[11:21, 1:11, 1:11] = 12  # overlap 1 of 10 slices: DSC 0.1
    dsc, nsd = _scores(gt, pred, MRI_ORGANS, spacing=(1.0, 1.0, 1.0))[12]
    assert dsc == 0.1 and nsd == 0.0
    raw_nsd = surface_dice_at_tolerance(compute_surface_distances(gt == 12, pred == 12, (1, 1, 1)), 7.0)
    assert raw_nsd > 0.3  # the rule, not the geometry, makes it 0


def test_nsd_computed_at_dsc_exactly_0_2():
    gt = np.zeros((30, 7, 7), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:7, 1:6, 1:6] = 12
    pred[6:11, 1:6, 1:6] = 12  # 1 of 5 slices overlap: DSC = 0.2 exactly
    dsc, nsd = score_organ(gt == 12, pred == 12, (1.0, 1.0, 1.0), 7.0, cut_to_gt_slices=False)
    assert dsc == 0.2 and nsd > 0


def test_values_rounded_to_4_decimals():
    gt = np.zeros((8, 8, 8), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:4, 1:4, 1:4] = 3  # 27 voxels
    pred[1:4, 1:4, 1:3] = 3  # 18 voxels, all inside: DSC 36/45 = 0.8
    pred[1:4, 1:4, 5] = 3  # 9 more outside: DSC 36/54 = 2/3
    dsc, nsd = _scores(gt, pred, MRI_ORGANS)[3]
    assert dsc == 0.6667
    assert nsd == round(nsd, 4)


def test_round4_matches_numpy_float_round():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.random(2000), np.arange(0, 1, 0.00005)])
    for value in values:
        assert round4(value) == round(np.float64(value), 4)


def test_spacing_changes_nsd_not_dsc():
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[5:15, 5:15, 5:15] = 1
    pred = np.roll(gt, 3, axis=2)
    fine = _scores(gt, pred, MRI_ORGANS, spacing=(1.0, 1.0, 1.0))[1]
    coarse = _scores(gt, pred, MRI_ORGANS, spacing=(1.0, 1.0, 3.0))[1]
    assert fine[0] == coarse[0] == 0.7
    assert fine[1] == 1.0  # 3 mm shift, 5 mm tolerance
    assert coarse[1] < 1.0  # 9 mm shift


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        score_case(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), SPACING, MRI_ORGANS)
