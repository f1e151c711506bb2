"""Self-training rows of the in-plane benchmark: ignored pixels, the mixed bank, training labels, row checks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from training.inplane import bench
from training.inplane.train import train_one
from training.inplane.data import IGNORE, MixedBank, SliceBank, Volume
from training.inplane.loop import dice_ce_loss
from training.inplane.packed import kept_label, training_label
from training.inplane.recipe import SelfTraining, load_profile


def _volume(name: str, organ: int = 1) -> Volume:
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:5, 2:5] = organ
    return Volume(name, np.zeros((2, 8, 8), np.float16), labels, labels.copy(), (5.0, 2.0, 2.0), None, (0, 1, 2))


def test_ignored_pixels_count_in_neither_loss_term():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    wrong = logits.clone()
    wrong[:, :, 5:, :] = torch.tensor([0.0, 0.0, 50.0])[None, :, None, None]   # class 2 where the truth is 0
    assert float(dice_ce_loss(wrong, target)) > 1.0
    ignored = target.clone()
    ignored[:, 5:, :] = IGNORE
    assert float(dice_ce_loss(wrong, ignored)) < 1e-3     # the wrong pixels are ignored: a perfect prediction
    assert float(dice_ce_loss(wrong, torch.full_like(target, IGNORE))) == 0.0


def test_mixed_bank_draws_each_bank_in_its_proportion():
    bank = MixedBank(SliceBank([_volume("ct_a"), _volume("ct_b")]), SliceBank([_volume("mr", 2)]), 0.25)
    assert bank.names == ["ct_a", "ct_b", "mr"] and len(bank) == 6
    rng = np.random.default_rng(0)
    picks = [bank.pick(rng, foreground=True)[0].name for _ in range(4000)]
    assert picks.count("mr") / len(picks) == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="p_second"):
        MixedBank(SliceBank([_volume("a")]), SliceBank([_volume("b")]), 1.5)


def test_a_bank_of_its_own_appearance_policy_overrides_the_stages():
    """Target patches with `target_p_strong` 0 keep their own appearance (here: every change off, so the patch is
    the standardised slice) while the stage's policy (a random curve on every patch) changes the source's."""
    from dataclasses import replace

    from training.inplane.augment import make_batch
    from training.inplane.recipe import Appearance, Spatial

    def vol(name):
        v = _volume(name)
        v.image[:] = np.linspace(0, 1, 64, dtype=np.float16).reshape(8, 8)
        return v

    off = Appearance(strong=False, p_contrast=0.0, p_gamma=0.0, p_blur=0.0, p_noise=0.0)
    stage = Appearance(strong=True, p_curve=1.0, p_region=0.0, p_bias=0.0, p_contrast=0.0, p_gamma=0.0, p_blur=0.0,
                       p_noise=0.0)
    still = Spatial(rotation_deg=0.0, zoom=(1.0, 1.0), stretch=0.0, p_roi_mask=0.0)

    def batch(bank, a):
        return make_batch(bank, still, a, (8, 8), 4, np.random.default_rng(0), torch.Generator().manual_seed(0),
                          roi_mask=False)[0]

    def bent(x):   # largest second difference along x among inside pixels: 0 for the ramp, kept linear
        d = x[..., 2:] - 2 * x[..., 1:-1] + x[..., :-2]
        inside = (x[..., 2:] != 0) & (x[..., 1:-1] != 0) & (x[..., :-2] != 0)
        return float((d.abs() * inside).max())

    plain = batch(SliceBank([vol("t")]), off)
    assert bent(plain) < 1e-2 and bent(batch(SliceBank([vol("t")]), stage)) > 0.1
    own = MixedBank(SliceBank([vol("s")]), SliceBank([vol("t")], off), 1.0)    # every patch from the target bank
    assert bent(batch(own, stage)) < 1e-2
    assert replace(stage, p_strong=0.0).p_strong == 0.0
    with pytest.raises(ValueError, match="target_p_strong"):
        SelfTraining(teachers=("3", "A"), target_p_strong=1.5)


def test_ignore_pixels_are_no_organ_for_sampling_and_the_roi():
    vol = _volume("x")
    vol.labels[0, 0, 0] = IGNORE
    assert set(SliceBank([vol]).by_class) == {1}
    from training.inplane.data import organ_box

    assert organ_box(vol.labels) == ((2, 5), (2, 5))


def test_training_labels_ignore_organs_the_filter_did_not_check():
    """The consensus keeps the checked organs (and IGNORE where the teachers disagree); where the best teacher
    gives an organ outside the filter's set (7, an adrenal gland), the training label is IGNORE, not background."""
    consensus = np.zeros((3, 6, 6), np.uint8)
    consensus[:, 1:3, 1:3] = 1
    consensus[0, 0, 0] = IGNORE
    best = consensus.copy()
    best[0, 0, 0] = 1
    best[:, 4:6, 4:6] = 7
    want = consensus.copy()
    want[:, 4:6, 4:6] = IGNORE
    np.testing.assert_array_equal(training_label(consensus, best, "mri_large"), want)
    np.testing.assert_array_equal(training_label(consensus, best, "mri"), consensus)   # 7 is checked there


def test_kept_scans_are_labelled_by_the_teachers_majority_or_by_the_best_teacher_alone():
    """Three teachers (best first): "vote" keeps what two of three say and IGNOREs the rest; "best" is the first
    map as it is, except where it gives an organ outside the filter's set (7: IGNORE under both rules)."""
    best = np.zeros((1, 4, 4), np.uint8)
    best[0, 0, :] = 1                   # liver on the first row
    best[0, 3, 3] = 7                   # an adrenal gland: not checked by mri_large
    second, third = best.copy(), best.copy()
    second[0, 0, 0] = 2                 # teachers 2 and 3 disagree with the best at (0, 0) and with each other
    third[0, 0, 0] = 3
    second[0, 1, 1] = third[0, 1, 1] = 3   # two of three see a spleen where the best sees background
    voted = kept_label([best, second, third], "mri_large", "vote")
    want = best.copy()
    want[0, 0, 0] = IGNORE              # 1 / 2 / 3: no majority
    want[0, 1, 1] = 3
    want[0, 3, 3] = IGNORE
    np.testing.assert_array_equal(voted, want)
    alone = kept_label([best, second, third], "mri_large", "best")
    want = best.copy()
    want[0, 3, 3] = IGNORE
    np.testing.assert_array_equal(alone, want)
    with pytest.raises(ValueError, match="label rule"):
        kept_label([best, second], "mri_large", "union")
    with pytest.raises(ValueError, match="labels must be one of"):
        SelfTraining(teachers=("3", "A3"), labels="union")
    assert load_profile("cpu").rows["RAb"].selftrain.labels == "best"


def test_self_training_rows_need_two_teachers_and_their_trained_rows(tmp_path):
    with pytest.raises(ValueError, match="two teacher"):
        SelfTraining(teachers=("A",))
    prof = load_profile("cpu")
    st = prof.rows["A3"].selftrain
    assert st.teachers[0] == "A" and prof.rows["A3"].start == "A" and len(st.teachers) >= 2
    assert prof.fine_recipe("A3").time_budget_s <= 90 * 60 and prof.fine_recipe("A3").lr == 5e-4
    assert prof.rows["Ac"].start == "A" and prof.fine_recipe("Ac") == prof.fine_recipe("A3")   # A+3's control
    # options left at their defaults stay out of a stage's fingerprint (stages trained before them stay done)
    assert set(prof.stage_settings("A3", "fine")["row"]["selftrain"]).isdisjoint({"labels", "target_p_strong"})
    assert prof.stage_settings("RA4h", "fine")["row"]["selftrain"]["target_p_strong"] == 0.5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"extends": "cpu", "rows": {"A3": {"fine": {"learning_rate": 1}}}}))
    with pytest.raises(ValueError, match="learning_rate"):
        load_profile(str(bad))
    with pytest.raises(ValueError, match="row A's fine stage"):
        train_one(tmp_path, "cpu", "A3", "fine", data=tmp_path / "no_data_needed_before_this_check")


@pytest.mark.slow
def test_pet_row_renders_trains_its_own_stages_and_is_checked_on_the_real_pet_scans(tmp_path, monkeypatch):
    """A PET row with tiny networks on 2 BTCV label maps (1 render each): renders, its own coarse and fine
    stages, a PET card (PET output scheme) and the volume / placement check on both real FDG PET scans."""
    from helpers import REAL

    from training.inplane import protocol
    from training.inplane.pack import packed_set
    from training.inplane.pet import PET_CASES, check_summary

    if not all((REAL / "pet_fdg" / "images" / f"{c}_0000.nii.gz").is_file() for c in PET_CASES):
        pytest.skip("FDG PET scans not present")
    monkeypatch.setattr(protocol, "BTCV_CASES", ("btcv_0001", "btcv_0002"))
    prof_file = tmp_path / "tiny.json"
    tiny = {"features": [4, 8], "patch": [32, 32], "batch": 2, "iterations": 2, "time_budget_s": None}
    prof_file.write_text(json.dumps({
        "extends": "cpu", "name": "tiny", "coarse": {**tiny, "spacing_mm": [None, 8.0, 8.0]},
        "fine": {**tiny, "spacing_mm": [None, 6.0, 6.0]}, "rows": {"P": {"render_variants": 1}}}))
    work = tmp_path / "work"
    csv_path = bench.run_row(work, str(prof_file), "P", REAL)
    assert csv_path.name == "pet_check.csv" and check_summary(csv_path)["organs"] == 2 * 4
    assert packed_set(work / "rows" / "P" / "render" / "pet.npz", "all") == ["btcv_0001_pet0", "btcv_0002_pet0"]
    for stage in ("rows/P/coarse", "rows/P/fine"):
        assert json.loads((work / stage / "summary.json").read_text())["volumes"] == ["btcv_0001_pet0",
                                                                                      "btcv_0002_pet0"]
    assert not (work / "coarse").exists()                  # the shared (MRI) coarse stage is not trained
    card = json.loads((work / "models" / "rP" / "model.json").read_text())
    assert card["modalities"] == ["PET"]
    out = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "scores" / "rP" / "pet_pred" / f"{PET_CASES[1]}.nii.gz")))
    assert set(np.unique(out)) <= {0, 1, 2, 3, 4}
    table = bench.publish(work, str(prof_file), tmp_path / "results").read_text()
    assert "PET rows" in table and "fdg_sts001" in table
    assert (tmp_path / "results" / "stages" / "rows" / "P" / "coarse" / "final.pt").is_file()


@pytest.mark.slow
def test_self_training_row_runs_its_teachers_first_and_stops_when_the_filter_keeps_nothing(tmp_path):
    """Row A3 on tiny networks: the runner trains, exports and scores both teachers (A, Ab), pseudo-labels the 10
    target scans with them, filters, and, with untrained teachers, stops with the Table-4 counts (no scan kept:
    every scan misses organs) instead of training on nothing."""
    from helpers import REAL

    if not (REAL / "ct_btcv").is_dir():
        pytest.skip("BTCV not present")
    prof_file = tmp_path / "tiny.json"
    tiny = {"features": [4, 8], "patch": [32, 32], "batch": 2, "iterations": 2, "time_budget_s": None}
    prof_file.write_text(json.dumps({"extends": "cpu", "name": "tiny",
                                     "coarse": {**tiny, "spacing_mm": [None, 8.0, 8.0]},
                                     "fine": {**tiny, "spacing_mm": [None, 6.0, 6.0]}}))
    work = tmp_path / "work"
    with pytest.raises(RuntimeError, match="kept no target scan"):
        bench.run_row(work, str(prof_file), "A3", REAL, curve_on_test=False)
    for step in ("pack", "coarse", "rA.fine", "rA.export", "rA.score", "rAb.fine"):
        assert (work / "state" / f"{step}.json").is_file(), step
    assert not (work / "state" / "rA3.pseudo.json").exists() and not (work / "state" / "rA3.fine.json").exists()
    table4 = json.loads((work / "rows/A3/pseudo/filtered/table4.json").read_text())
    assert table4["total"] == 10 and table4["top_k_dice"] == 0


def test_3d_rows_train_pseudo_labels_with_nnunets_ignore_label(tmp_path):
    """A 3D nnU-Net self-training row: its spec declares nnU-Net's ignore label (max class + 1); a packed volume
    becomes an nnU-Net source with the scan's own intensities, its FLARE labels and IGNORE written as that label,
    on the pack's grid (identity direction, the pack's spacing)."""
    import SimpleITK as sitk

    from training.inplane import nnunet3d
    from training.inplane.data import IGNORE, prepare_volume
    from training.inplane.recipe import load_profile

    lab = np.zeros((4, 6, 6), np.uint8)
    lab[1:3, 1:3, 1:3] = 13
    lab[0] = IGNORE
    arr = np.arange(144, dtype=np.float32).reshape(4, 6, 6)
    vol = prepare_volume("t", arr, (5.0, 2.0, 2.0), lab, (None, 2.0, 2.0), (0, 1, 13))
    prof = load_profile("cpu")
    assert nnunet3d.spec_dict(prof, "C3")["labels"]["ignore"] == nnunet3d.NNUNET_IGNORE == 14
    assert "ignore" not in nnunet3d.spec_dict(prof, "C1")["labels"]
    source = nnunet3d._write_source([vol], tmp_path / "pseudo")
    name, folders = source.split("=")
    images, labels = (Path(f) for f in folders.split(","))
    made = sitk.ReadImage(str(labels / "t.nii.gz"))
    got = sitk.GetArrayFromImage(made)
    assert name == "pseudo" and set(np.unique(got)) == {0, 13, 14} and (got[0] == 14).all()
    assert made.GetSpacing() == (2.0, 2.0, 5.0) and made.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(images / "t_0000.nii.gz")))
    assert np.abs(image - vol.raw()).max() < 1e-3 and abs(image.mean() - arr.mean()) < 2.0


def test_translated_ct_keeps_its_own_appearance_when_the_row_says_so(tmp_path):
    """`synthetic_p_strong` gives the CycleGAN's translated CT a bank of its own appearance policy (the row's
    with that p_strong) while the source CT keeps the stage's (None); rows without it record nothing new."""
    from training.inplane.pack import write_pack
    from training.inplane.packed import packed_bank, synthetic_pack
    from training.inplane.recipe import Row

    work, pack = tmp_path / "w", tmp_path / "pack.npz"
    write_pack(pack, [_volume("ct")], {"btcv": ["ct"]})
    write_pack(synthetic_pack(work, "attention"), [_volume("ct")], {"all": ["ct"]})
    prof_file = tmp_path / "p.json"
    rows = {"S": {"title": "s", "appearance": {"strong": True}, "synthetic": "attention", "synthetic_p_strong": 0.0},
            "U": {"title": "u", "appearance": {"strong": True}, "synthetic": "attention"}}
    prof_file.write_text(json.dumps({"extends": "cpu", "rows": rows}))
    prof = load_profile(str(prof_file))
    bank, _ = packed_bank(work, prof, "S", "fine", (None, 2.0, 2.0), pack, (0, 1), False)
    assert isinstance(bank, MixedBank) and bank.first.appearance is None
    assert bank.second.appearance.strong and bank.second.appearance.p_strong == 0.0
    assert packed_bank(work, prof, "U", "fine", (None, 2.0, 2.0), pack, (0, 1), False)[0].second.appearance is None
    assert prof.stage_settings("S", "fine")["row"]["synthetic_p_strong"] == 0.0
    assert "synthetic_p_strong" not in prof.stage_settings("U", "fine")["row"]
    for bad in ({"synthetic_p_strong": 0.5}, {"synthetic": "attention", "synthetic_p_strong": 1.5}):
        with pytest.raises(ValueError, match="synthetic_p_strong"):
            Row(name="X", title="x", **bad)
