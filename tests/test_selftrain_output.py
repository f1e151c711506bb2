"""`filter` end to end on a hand-built predictions folder with known answers: Table 4 counts, consensus labels,
the training-ready folder and its manifest, PET numbering, overwrite rules, and errors naming the file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_image
from phantoms import SHAPE, grid_phantom, write_ct_label_set
from training.selftrain.__main__ import main
from training.selftrain.predict import build_record, write_record
from training.selftrain.stats import compute_stats, save_stats

SPACING = (1.5, 1.5, 2.5)
MODELS = ("best", "second", "third")


def _shift_liver(p: np.ndarray) -> np.ndarray:
    q = p.copy()
    liver = p == 1
    q[liver] = 0
    q[np.roll(liver, 1, axis=2) & (q == 0)] = 1
    return q


def _cases() -> dict[str, tuple[str, list[np.ndarray]]]:
    """case -> (modality, [best, second, third]) with known fates under the default thresholds."""
    good_a = grid_phantom(11)
    good_b = grid_phantom(12)
    small = grid_phantom(13, liver_half=1)
    no_kidney = grid_phantom(14, organs=[o for o in range(1, 14) if o != 13])
    low = grid_phantom(15)
    pet = grid_phantom(16)
    return {
        "good_a": ("MRI", [good_a, good_a, good_a]),  # Dice 1
        "good_b": ("MRI", [good_b, _shift_liver(good_b), good_b]),  # Dice just below 1; vote = best
        "small_liver": ("MRI", [small, small, small]),  # fails the relative volume
        "no_kidney": ("MRI", [no_kidney, no_kidney, no_kidney]),  # fails the class number
        "low_dice": ("MRI", [low, np.roll(low, (4, 4), axis=(1, 2)), low]),  # fails the Dice threshold
        "fdg_pet": ("PET", [pet, pet, np.where(pet == 3, 0, pet).astype(np.uint8)]),  # PET: vote keeps the spleen
    }


@pytest.fixture(scope="module")
def pred(tmp_path_factory):
    root = tmp_path_factory.mktemp("selftrain_filter")
    save_stats(compute_stats(write_ct_label_set(root / "ct", n=8), progress=False), root / "stats.json")
    pred = root / "pred"
    src = root / "src"
    src.mkdir()
    for case, (modality, maps) in _cases().items():
        image = write_image(np.random.default_rng(0).normal(size=SHAPE).astype(np.float32),
                            src / f"{case}_0000.nii.gz", spacing=SPACING, origin=(5.0, -7.0, 30.0))
        entries = []
        for name, arr in zip(MODELS, maps, strict=True):
            (pred / name).mkdir(parents=True, exist_ok=True)
            if modality == "PET":
                arr = np.where(np.isin(arr, (1, 2, 3, 13)), arr, 0).astype(np.uint8)
            lab = sitk.GetImageFromArray(arr)
            lab.CopyInformation(image)
            sitk.WriteImage(lab, str(pred / name / f"{case}.nii.gz"))
            entries.append({"name": name, "path": f"/models/{name}", "card_sha256": name * 4,
                            "label": f"{name}/{case}.nii.gz"})
        write_record(build_record(case, modality, src / f"{case}_0000.nii.gz",
                                  str((src / f"{case}_0000.nii.gz").resolve()), image, None, entries, [], 0.0), pred)
    return root, pred


def _filter(root, pred, out, *extra):
    return main(["filter", "--predictions", str(pred), "--stats", str(root / "stats.json"), "--out", str(out),
                 "--no-progress", *extra])


def test_mri_filter_table4_and_training_folder(pred, capsys):
    root, pred_dir = pred
    out = root / "out_mri"
    assert _filter(root, pred_dir, out, "--modality", "mri") == 0
    printed = capsys.readouterr().out
    assert "| mri | 5 | 4 | 3 | 2 |" in printed  # total, + class, + relative volume, + top-k Dice
    assert json.loads((out / "table4.json").read_text())["top_k_dice"] == 2
    assert "| mri | 5 | 4 | 3 | 2 |" in (out / "table4.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["case"] for c in manifest["cases"]] == ["good_a", "good_b"]  # rank order by Dice
    assert manifest["numTraining"] == 2 and manifest["label_numbering"] == "FLARE"
    assert manifest["labels"]["left_kidney"] == 13 and len(manifest["labels"]) == 14
    assert [m["role"] for m in manifest["models"]] == ["best", "second", "ensemble"]
    assert manifest["filters"]["dice_threshold"] == 0.9
    assert sorted(p.name for p in (out / "images").iterdir()) == ["good_a_0000.nii.gz", "good_b_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["good_a.nii.gz", "good_b.nii.gz"]
    for case in ("good_a", "good_b"):
        img = sitk.ReadImage(str(out / "images" / f"{case}_0000.nii.gz"))
        lab = sitk.ReadImage(str(out / "labels" / f"{case}.nii.gz"))
        assert lab.GetSize() == img.GetSize() and lab.GetOrigin() == img.GetOrigin()
        assert lab.GetSpacing() == img.GetSpacing() and lab.GetPixelID() == sitk.sitkUInt8
        # best and third agree everywhere, so the 2-of-3 vote reproduces them
        assert np.array_equal(sitk.GetArrayFromImage(lab), _cases()[case][1][0])
    report = {c["case"]: c for c in json.loads((out / "filter_report.json").read_text())["cases"]}
    assert report["small_liver"]["failed_rule"].startswith("relative volume: organ 1 ")
    assert report["no_kidney"]["failed_rule"] == "class number: missing organs [13]"
    assert "below the threshold" in report["low_dice"]["failed_rule"]
    assert 0.9 < report["good_b"]["mean_dice"] < 1.0


def test_top_k_and_overwrite_replace_stale_cases(pred, capsys):
    root, pred_dir = pred
    out = root / "out_topk"
    assert _filter(root, pred_dir, out, "--modality", "mri") == 0
    assert _filter(root, pred_dir, out, "--modality", "mri", "--top-k", "1") == 2
    refused = capsys.readouterr().out
    assert "manifest.json" in refused and "--overwrite" in refused
    assert _filter(root, pred_dir, out, "--modality", "mri", "--top-k", "1", "--overwrite") == 0
    assert "| mri | 5 | 4 | 3 | 1 |" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["good_a.nii.gz"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["good_a_0000.nii.gz"]
    # a lower threshold lets the low-agreement case through
    assert _filter(root, pred_dir, out, "--modality", "mri", "--dice-threshold", "0.1", "--overwrite") == 0
    assert "| mri | 5 | 4 | 3 | 3 |" in capsys.readouterr().out


def test_pet_set_writes_flare_numbering_and_merges_tables(pred, capsys):
    root, pred_dir = pred
    out = root / "out_pet"
    assert _filter(root, pred_dir, out, "--modality", "pet") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["annotated_organs"] == [1, 2, 3, 13] and manifest["filters"]["dice_threshold"] == 0.82
    assert [c["case"] for c in manifest["cases"]] == ["fdg_pet"]
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels" / "fdg_pet.nii.gz")))
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 13}  # spleen kept: 2 of 3 models
    capsys.readouterr()
    assert main(["table", str(root / "out_mri"), str(out / "table4.json"), "--out", str(root / "t4.md")]) == 0
    lines = (root / "t4.md").read_text().splitlines()
    assert lines[2] == "| mri | 5 | 4 | 3 | 2 |" and lines[3] == "| pet | 1 | 1 | 1 | 1 |"


def test_pet_organ_set_over_mri_scans_reads_the_mri_records(pred, capsys):
    """--modality pet --scan-modality mri: the MRI cases filtered on the four PET organs (the benchmark's CHAOS
    targets); the PET case is the other modality now. Kidney 13 is one of the four, so no_kidney still fails."""
    root, pred_dir = pred
    out = root / "out_pet_over_mri"
    assert _filter(root, pred_dir, out, "--modality", "pet", "--scan-modality", "mri") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["annotated_organs"] == [1, 2, 3, 13] and manifest["modality"] == "MRI"
    assert manifest["channel_names"] == {"0": "MRI"}
    report = json.loads((out / "filter_report.json").read_text())
    assert report["ignored_other_modality_records"] == 1 and report["table4"]["total"] == 5
    kept = [c["case"] for c in manifest["cases"]]
    assert "fdg_pet" not in kept and "no_kidney" not in kept and "good_a" in kept
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels" / "good_a.nii.gz")))
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 13}   # restricted to the set's organs
    with pytest.raises(SystemExit):
        _filter(root, pred_dir, root / "out_bad", "--modality", "pet", "--scan-modality", "ct")
    from training.selftrain.filtering import FilterConfig, FilterError

    with pytest.raises(FilterError, match="scan-modality"):
        FilterConfig(predictions=pred_dir, stats=root / "stats.json", target_set="pet", out=root / "o",
                     scan_modality="ct")


def test_filter_errors_name_the_file(pred, tmp_path, capsys):
    root, pred_dir = pred
    assert _filter(root, tmp_path, tmp_path / "o", "--modality", "mri") == 2
    assert "no records/ sub-folder" in capsys.readouterr().out
    bad = tmp_path / "bad_pred"
    (bad / "records").mkdir(parents=True)
    (bad / "records" / "x.json").write_text("{not json")
    assert _filter(root, bad, tmp_path / "o", "--modality", "mri") == 2
    assert "x.json" in capsys.readouterr().out
    lonely = tmp_path / "lonely"
    (lonely / "records").mkdir(parents=True)
    rec = json.loads((pred_dir / "records" / "good_a.json").read_text())
    rec["models"][0]["label"] = str(pred_dir / "best" / "gone.nii.gz")
    (lonely / "records" / "good_a.json").write_text(json.dumps(rec))
    assert _filter(root, lonely, tmp_path / "o", "--modality", "mri") == 2
    assert "gone.nii.gz" in capsys.readouterr().out
    stats_mr_only = tmp_path / "s.json"
    data = json.loads((root / "stats.json").read_text())
    del data["sets"]["pet"]
    stats_mr_only.write_text(json.dumps(data))
    assert main(["filter", "--predictions", str(pred_dir), "--stats", str(stats_mr_only), "--modality", "pet",
                 "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "'pet'" in capsys.readouterr().out


def test_native_predictions_that_moved_find_their_images_with_images_flag(pred, tmp_path, capsys):
    import shutil

    root, pred_dir = pred
    moved = tmp_path / "moved_pred"
    shutil.copytree(pred_dir, moved)
    for path in (moved / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        rec["image"] = rec["source_image"] = f"/gone/elsewhere/{rec['case']}_0000.nii.gz"
        path.write_text(json.dumps(rec))
    assert _filter(root, moved, tmp_path / "o1", "--modality", "mri") == 2
    assert "/gone/elsewhere/" in capsys.readouterr().out
    src = Path(json.loads((pred_dir / "records" / "good_a.json").read_text())["source_image"]).parent
    assert _filter(root, moved, tmp_path / "o2", "--modality", "mri", "--images", str(src)) == 0
    assert (tmp_path / "o2" / "images" / "good_a_0000.nii.gz").is_file()
