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
from training.inplane.pseudo import pseudo_cases
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


def test_ignore_pixels_are_no_organ_for_sampling_and_the_roi():
    vol = _volume("x")
    vol.labels[0, 0, 0] = IGNORE
    assert set(SliceBank([vol]).by_class) == {1}
    from training.inplane.data import organ_box

    assert organ_box(vol.labels) == ((2, 5), (2, 5))


def _write(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing((1.5, 1.5, 6.0))
    sitk.WriteImage(img, str(path))


def test_training_labels_ignore_organs_the_filter_did_not_check(tmp_path):
    """The consensus keeps the checked organs (and IGNORE where the teachers disagree); where the best teacher
    gives an organ outside the filter's set (7, an adrenal gland), the training label is IGNORE, not background."""
    prof_file = tmp_path / "p.json"
    prof_file.write_text(json.dumps({"extends": "cpu", "rows": {"S": {
        "title": "s", "source": "btcv", "start": "A", "selftrain": {"teachers": ["A", "Ab"]}}}}))
    prof = load_profile(str(prof_file))
    base = tmp_path / "work" / "rows" / "S" / "pseudo"
    consensus = np.zeros((3, 6, 6), np.uint8)
    consensus[:, 1:3, 1:3] = 1
    consensus[0, 0, 0] = IGNORE
    best = consensus.copy()
    best[0, 0, 0] = 1
    best[:, 4:6, 4:6] = 7
    _write(consensus, base / "filtered" / "labels" / "c1.nii.gz")
    _write(best, base / "pred" / "rA" / "c1.nii.gz")
    (base / "filtered" / "manifest.json").write_text(json.dumps({"cases": [
        {"case": "c1", "image": "images/c1_0000.nii.gz", "label": "labels/c1.nii.gz"}]}))
    (case,) = pseudo_cases(tmp_path / "work", prof, "S")
    assert case.image == base / "filtered" / "images" / "c1_0000.nii.gz"
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    want = consensus.copy()
    want[:, 4:6, 4:6] = IGNORE
    np.testing.assert_array_equal(got, want)


def test_self_training_rows_need_two_teachers_and_their_trained_rows(tmp_path):
    with pytest.raises(ValueError, match="two teacher"):
        SelfTraining(teachers=("A",))
    prof = load_profile("cpu")
    st = prof.rows["A3"].selftrain
    assert st.teachers[0] == "A" and prof.rows["A3"].start == "A" and len(st.teachers) >= 2
    assert prof.fine_recipe("A3").time_budget_s <= 90 * 60 and prof.fine_recipe("A3").lr == 5e-4
    assert prof.rows["Ac"].start == "A" and prof.fine_recipe("Ac") == prof.fine_recipe("A3")   # A+3's control
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"extends": "cpu", "rows": {"A3": {"fine": {"learning_rate": 1}}}}))
    with pytest.raises(ValueError, match="learning_rate"):
        load_profile(str(bad))
    with pytest.raises(ValueError, match="row A's fine stage"):
        train_one(tmp_path, "cpu", "A3", "fine", data=tmp_path / "no_data_needed_before_this_check")


@pytest.mark.slow
def test_synthetic_row_trains_a_tiny_translator_translates_and_publishes_its_curves(tmp_path):
    """A CycleGAN row on real scans with a tiny translator (2 source CT, the 10 target scans, 2 epochs of 2
    iterations): the translator trains with a quality curve, translates the source CT onto its own grid with its
    labels, and publish copies its curves; the row then trains its fine stage on CT + synthetic (all 30 CT at
    8 mm for that step)."""
    from helpers import REAL

    from training.inplane import protocol
    from training.inplane.synthetic import synthetic_cases, synthetic_folder

    target = protocol.source_cases("chaos_target", REAL)[0]
    if not all(c.image.is_file() for c in target):
        pytest.skip("CHAOS target scans not present")
    data = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (data / "ct_btcv" / sub).mkdir(parents=True)
    for name in ("btcv_0001", "btcv_0002"):
        c = protocol.btcv_case(name, REAL)
        (data / "ct_btcv" / "imagesTr" / c.image.name).symlink_to(c.image)
        (data / "ct_btcv" / "labelsTr" / c.label.name).symlink_to(c.label)
    all_ct = tmp_path / "all_ct"
    all_ct.mkdir()
    (all_ct / "mr_chaos_t2").symlink_to(REAL / "mr_chaos_t2")
    (all_ct / "ct_btcv").symlink_to(REAL / "ct_btcv")
    (data / "mr_chaos_t2").symlink_to(REAL / "mr_chaos_t2")
    options = tmp_path / "gan.json"
    options.write_text(json.dumps({"spacing_mm": 8.0, "slice_size": 32, "body_crop": True, "ngf": 4, "n_blocks": 1,
                                   "ndf": 4, "n_layers_d": 2, "seg_filters": 4, "seg_depth": 2, "epochs": 2,
                                   "decay_epochs": 1, "iterations_per_epoch": 2, "num_workers": 0,
                                   "quality_every": 1, "grid_cases": 1, "grid_slices": 1, "val_fraction": 0.5}))
    prof_file = tmp_path / "tiny.json"
    prof_file.write_text(json.dumps({
        "extends": "cpu", "name": "tiny", "cyclegan": str(options),
        "fine": {"spacing_mm": [None, 8.0, 8.0], "features": [4, 8], "patch": [32, 32], "batch": 2, "iterations": 2,
                 "time_budget_s": None}}))
    prof = load_profile(str(prof_file))
    work = tmp_path / "work"
    synth = synthetic_folder(work, prof, "attention", data)
    cases = synthetic_cases(synth)
    assert [c.name for c in cases] == ["btcv_0001", "btcv_0002"]
    for c in cases:
        src = sitk.ReadImage(str(protocol.btcv_case(c.name, REAL).image))
        img, lab = sitk.ReadImage(str(c.image)), sitk.ReadImage(str(c.label))
        assert img.GetSize() == src.GetSize() == lab.GetSize() and img.GetSpacing() == src.GetSpacing()
    curve = (work / "cyclegan" / "attention" / "quality_curve.csv").read_text().splitlines()
    assert curve[0].startswith("epoch,step,trained_s,segmentation_dice") and len(curve) == 3   # epochs 1 and 2
    out = train_one(work, str(prof_file), "2", "fine", all_ct, curve_on_test=False)   # translator found
    summary = json.loads((out / "summary.json").read_text())
    assert summary["volumes"] == list(protocol.BTCV_CASES) + ["btcv_0001", "btcv_0002"]   # CT, then synthetic
    bench.publish(work, str(prof_file), tmp_path / "results")
    assert (tmp_path / "results" / "curves" / "cyclegan_attention.png").is_file()
    assert (tmp_path / "results" / "cyclegan" / "attention" / "quality_curve.csv").is_file()


@pytest.mark.slow
def test_pet_row_renders_trains_its_own_stages_and_is_checked_on_the_real_pet_scans(tmp_path, monkeypatch):
    """A PET row with tiny networks on 2 BTCV label maps (1 render each): renders, its own coarse and fine
    stages, a PET card (PET output scheme) and the volume / placement check on both real FDG PET scans."""
    from helpers import REAL

    from training.inplane import protocol
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
    assert sorted(p.name for p in (work / "render" / "pet" / "images").iterdir()) == [
        "btcv_0001_pet0_0000.nii.gz", "btcv_0002_pet0_0000.nii.gz"]
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
    for step in ("coarse", "rA.fine", "rA.export", "rA.score", "rAb.fine", "rAb.export", "rA3.pseudo"):
        assert (work / "state" / f"{step}.json").is_file(), step
    assert not (work / "state" / "rA3.fine.json").exists()
    table4 = json.loads((work / "rows/A3/pseudo/filtered/table4.json").read_text())
    assert table4["total"] == 10 and table4["top_k_dice"] == 0


def test_3d_rows_train_pseudo_labels_with_nnunets_ignore_label(tmp_path, monkeypatch):
    """A 3D nnU-Net self-training row: its spec declares nnU-Net's ignore label (max class + 1) and the kept
    target scans' IGNORE voxels are written with it; the linked source folders follow the pseudo-labels."""
    import SimpleITK as sitk

    from training.inplane import nnunet3d, protocol, pseudo
    from training.inplane.data import IGNORE
    from training.inplane.recipe import load_profile

    lab = np.zeros((4, 6, 6), np.uint8)
    lab[1:3, 1:3, 1:3] = 1
    lab[0] = IGNORE
    img = sitk.GetImageFromArray(np.zeros((4, 6, 6), np.float32))
    for name, arr in (("t_0000.nii.gz", None), ("t.nii.gz", lab)):
        out = sitk.GetImageFromArray(arr) if arr is not None else img
        sitk.WriteImage(out, str(tmp_path / name))
    case = protocol.Case("t", tmp_path / "t_0000.nii.gz", tmp_path / "t.nii.gz")
    monkeypatch.setattr(pseudo, "pseudo_cases", lambda work, prof, row: [case])
    prof = load_profile("cpu")
    assert nnunet3d.spec_dict(prof, "C3")["labels"]["ignore"] == nnunet3d.NNUNET_IGNORE == 14
    assert "ignore" not in nnunet3d.spec_dict(prof, "C1")["labels"]
    source = nnunet3d._pseudo_source(tmp_path / "work", prof, "C3", tmp_path / "work" / "pseudo")
    name, folders = source.split("=")
    made = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folders.split(",")[1]) / "t.nii.gz")))
    assert name == "pseudo" and set(np.unique(made)) == {0, 1, 14} and (made[0] == 14).all()
