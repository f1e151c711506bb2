"""Stage-1 and stage-2 filters on constructed label maps with known answers; Table 4; relative-volume statistics."""
from __future__ import annotations

import numpy as np
import pytest

from eval.dice import dice_coefficient, dice_per_label

from phantoms import grid_phantom, write_ct_label_set
from training.selftrain import labels as L
from training.selftrain.filtering import (CaseResult, format_table4, sample_measures, select_top_k, table4_row)
from training.selftrain.stats import StatsError, compute_stats, load_stats, save_stats


@pytest.fixture(scope="module")
def ct_stats(tmp_path_factory):
    folder = write_ct_label_set(tmp_path_factory.mktemp("ct_labels"), n=8)
    return compute_stats(folder, progress=False)


# ---- measurements ------------------------------------------------------------------------------------------

def test_relative_volume_by_hand():
    a = np.zeros((10, 10, 10), np.uint8)
    a[0:2, 0:2, 0:2] = 1  # 8 voxels
    a[4, 4, 4] = 2  # 1 voxel; box of all organs = 5 x 5 x 5
    assert L.relative_volumes(a, (1, 2)) == {1: 8 / 125, 2: 1 / 125}
    assert L.relative_volumes(a, (1,)) == {1: 1.0}  # the box of the set's organs only
    assert L.relative_volumes(np.zeros_like(a), (1, 2)) == {1: 0.0, 2: 0.0}


def test_dice_identical_is_one_and_shifted_cube_by_hand():
    p = grid_phantom(1)
    assert all(v == 1.0 for v in dice_per_label(p, p.copy(), range(1, 14)).values() if not np.isnan(v))
    a = np.zeros((8, 8, 8), np.uint8)
    a[2:6, 2:6, 2:6] = 3
    b = np.roll(a, 1, axis=2)  # overlap 4 x 4 x 3 = 48 of 64 + 64 -> Dice 96/128
    d = dice_per_label(a, b, (3, 4))
    assert d[3] == 0.75 and np.isnan(d[4])   # the one empty-mask rule: NaN where the organ is in neither
    assert all(d[k] == dice_coefficient(a == k, b == k) or np.isnan(d[k]) for k in (3, 4))
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(a, a[:-1], (3,))


def test_three_model_vote_by_hand():
    m1 = np.array([[[1, 1, 2, 0, 1, 5, 13]]], np.uint8)
    m2 = np.array([[[1, 2, 2, 3, 2, 5, 13]]], np.uint8)
    m3 = np.array([[[0, 2, 3, 3, 3, 1, 0]]], np.uint8)
    # voxel 4 has votes 1/2/3: no strict majority; voxel 5: organ 5 is outside the PET set -> background votes
    got = L.majority_vote([m1, m2, m3], range(1, 14))
    assert got.tolist() == [[[1, 2, 2, 3, 0, 5, 13]]]
    assert L.majority_vote([m1, m2, m3], range(1, 14), no_majority_label=14).tolist() == [[[1, 2, 2, 3, 14, 5, 13]]]
    assert L.majority_vote([m1, m2, m3], L.ORGAN_SETS["pet"]).tolist() == [[[1, 2, 2, 3, 0, 0, 13]]]
    # four models: 2 of 4 is not a majority
    two_two = [np.array([[[1]]], np.uint8)] * 2 + [np.array([[[2]]], np.uint8)] * 2
    assert L.majority_vote(two_two, (1, 2)).item() == 0
    assert L.majority_vote(two_two + [np.array([[[2]]], np.uint8)], (1, 2)).item() == 2


def test_pet_numbering_round_trip():
    pet = np.array([0, 1, 2, 3, 4], np.uint8)
    assert L.flare_from_pet(pet).tolist() == [0, 1, 2, 3, 13]
    with pytest.raises(ValueError, match="PET numbering"):
        L.flare_from_pet(np.array([5], np.uint8))
    assert L.restrict(np.array([1, 4, 13, 7], np.uint8), L.ORGAN_SETS["pet"]).tolist() == [1, 0, 13, 0]


# ---- statistics ------------------------------------------------------------------------------------------------

def test_ct_statistics_match_numpy_and_round_trip(ct_stats, tmp_path):
    maps = [grid_phantom(100 + i) for i in range(8)]
    liver = np.array([L.relative_volumes(m, range(1, 14))[1] for m in maps])
    s = ct_stats.for_set("mri")
    assert s.n_cases == 8
    assert s.relative_volume[1].mean == pytest.approx(liver.mean())
    assert s.relative_volume[1].std == pytest.approx(liver.std(ddof=1))
    assert s.relative_volume[1].std > 0
    pet_liver = np.array([L.relative_volumes(m, L.ORGAN_SETS["pet"])[1] for m in maps])
    assert ct_stats.for_set("pet").relative_volume[1].mean == pytest.approx(pet_liver.mean())
    assert ct_stats.median_spacing_xyz_mm == (1.5, 1.5, 2.5)
    save_stats(ct_stats, tmp_path / "stats.json")
    assert load_stats(tmp_path / "stats.json") == ct_stats


def test_statistics_exclude_incomplete_maps_and_name_bad_files(tmp_path):
    from phantoms import write_labels_nii

    folder = tmp_path / "ct"
    folder.mkdir()
    write_labels_nii(grid_phantom(1), folder / "full.nii.gz")
    write_labels_nii(grid_phantom(2, organs=(1, 2, 3, 13)), folder / "pet_only_a.nii.gz")
    write_labels_nii(grid_phantom(3, organs=(1, 2, 3, 13)), folder / "pet_only_b.nii.gz")
    stats = compute_stats(folder, progress=False)
    assert stats.for_set("pet").n_cases == 3
    with pytest.raises(StatsError, match="'mri'"):  # one complete 13-organ map is not enough for sigma
        stats.for_set("mri")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(StatsError, match="broken.nii.gz"):
        compute_stats(folder, progress=False)
    (folder / "broken.nii.gz").unlink()
    write_labels_nii(np.full((4, 4, 4), 20, np.uint8), folder / "wrong_numbering.nii.gz")
    with pytest.raises(StatsError, match="wrong_numbering.nii.gz.*0..13"):
        compute_stats(folder, progress=False)
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(StatsError, match="other.json"):
        load_stats(tmp_path / "other.json")


# ---- stage 1 ---------------------------------------------------------------------------------------------------

def test_plausible_prediction_passes_every_rule(ct_stats):
    p = grid_phantom(7)
    r = sample_measures(p, p.copy(), ct_stats.for_set("mri"), n_sigma=3.0)
    assert r.passed_class and r.passed_volume and not r.out_of_range
    assert r.mean_dice == 1.0


def test_too_small_liver_fails_the_volume_rule_only(ct_stats):
    p = grid_phantom(7, liver_half=1)
    r = sample_measures(p, p.copy(), ct_stats.for_set("mri"), n_sigma=3.0)
    assert r.passed_class
    assert not r.passed_volume
    assert list(r.out_of_range) == [1]  # the box is unchanged, so only the liver's ratio is off
    value, low, high = r.out_of_range[1]
    assert value < low


def test_missing_kidney_fails_the_class_rule(ct_stats):
    p = grid_phantom(7, organs=[o for o in range(1, 14) if o != 13])
    for set_name in ("mri", "pet"):
        r = sample_measures(p, p.copy(), ct_stats.for_set(set_name), n_sigma=3.0)
        assert r.missing_organs == [13]
        assert not r.passed_class and not r.passed_volume
        assert "class number" in r.failed_rule


def test_pet_set_ignores_organs_pet_labels_do_not_carry(ct_stats):
    p = grid_phantom(7, organs=(1, 2, 3, 13))  # no pancreas, aorta, ...: irrelevant for PET
    r = sample_measures(p, p.copy(), ct_stats.for_set("pet"), n_sigma=3.0)
    assert r.passed_class and r.passed_volume
    assert not sample_measures(p, p, ct_stats.for_set("mri"), n_sigma=3.0).passed_class


def _result(case, dice, cls=True, vol=True):
    return CaseResult(case=case, missing_organs=[] if cls else [13], relative_volume={}, out_of_range={},
                      dice_per_organ={}, mean_dice=dice, passed_class=cls, passed_volume=cls and vol)


def test_top_k_above_threshold_and_table4_counts():
    results = [_result("a", 0.95), _result("b", 0.99), _result("c", 0.85), _result("d", 0.92),
               _result("e", 1.0, vol=False), _result("f", 1.0, cls=False), _result("g", 0.95)]
    chosen = select_top_k(results, threshold=0.9, top_k=2)
    assert [r.case for r in chosen] == ["b", "a"]  # ties (a, g at 0.95) broken by case name
    assert {r.case: r.rank for r in results if r.rank} == {"b": 1, "a": 2, "g": 3, "d": 4}
    row = table4_row("mri", results, 0.9, 2)
    assert (row.total, row.class_number, row.relative_volume, row.top_k_dice, row.above_threshold) == (7, 6, 5, 2, 4)
    assert "below the threshold" in results[2].failed_rule and "top-k" in results[6].failed_rule
    assert results[1].failed_rule is None and "relative volume" in results[4].failed_rule
    text = format_table4([row, table4_row("pet", results[:1], 0.82, None)])
    lines = text.splitlines()
    assert lines[0] == "| target set | total | + class number | + relative volume | + top-k Dice |"
    assert lines[2] == "| mri | 7 | 6 | 5 | 2 |"
    assert lines[3] == "| pet | 1 | 1 | 1 | 1 |"
    assert "k = 2" in lines[4] and "k = all" in lines[5]
    assert [r.case for r in select_top_k(results, 0.9, None)] == ["b", "a", "g", "d"]


def test_stats_from_several_folders_give_a_set_the_maps_that_hold_it(tmp_path):
    """BTCV-like maps without the duodenum + FLARE22-like maps with all 13: the 13-organ set's statistics come from
    the complete maps of both folders, the 4-organ set's from every map."""
    from phantoms import write_labels_nii

    btcv, flare = tmp_path / "btcv", tmp_path / "flare"
    btcv.mkdir()
    flare.mkdir()
    organs12 = tuple(o for o in range(1, 14) if o != 12)
    for i in range(3):
        write_labels_nii(grid_phantom(10 + i, organs=organs12), btcv / f"b{i}.nii.gz")
    full = [grid_phantom(20 + i) for i in range(2)]
    for i, lab in enumerate(full):
        write_labels_nii(lab, flare / f"f{i}.nii.gz")
    with pytest.raises(StatsError, match="'mri'"):
        compute_stats(btcv, progress=False).for_set("mri")
    stats = compute_stats([btcv, flare], progress=False)
    assert stats.n_label_maps == 5 and stats.for_set("pet").n_cases == 5 and stats.for_set("mri").n_cases == 2
    want = [L.relative_volumes(lab, L.ORGAN_SETS["mri"])[12] for lab in full]
    got = stats.for_set("mri").relative_volume[12]
    assert got.mean == pytest.approx(np.mean(want)) and got.std == pytest.approx(np.std(want, ddof=1))
    assert str(btcv.resolve()) in stats.source and str(flare.resolve()) in stats.source
