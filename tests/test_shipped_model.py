"""The shipped default model on real scans: a regression guard on CHAOS T2 MRI (DSC floors the model reaches,
measured in the UDA benchmark, both kidneys included: a model that confuses left and right fails), and on the two
real FDG PET scans the checks that need no PET labels: the PET label scheme {0..4}, the input's geometry, and an
ROI that the card's extent cap keeps off the whole body (~35 s for both scans on 2 CPU cores without TTA; without
the cap a whole-body fine ROI took 20+ minutes per scan).

Known to fail, marked strict xfail: an adult-sized liver on PET. The shipped model was never trained for PET (no
PET-capable model exists yet: benchmarks/results/uda-h200-rows2p/, row P); its PET "liver" is 300-530 ml in the
pelvis (benchmarks/results/shipped-model-pet/). When a PET model makes it pass, the strict marker fails the
suite so that the marker is removed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.config import find_models, load_model_folder
from training.uda_bench.protocol import PET_CASES, PET_PLAUSIBLE_ML

from helpers import REAL

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
CHAOS_CASES = ("chaos_t2_34", "chaos_t2_37")  # benchmark test scans (never trained on)
# floors below what the model reaches on these scans (CPU, ONNX Runtime, TTA: liver 0.629 / 0.293, right kidney
# 0.707 / 0.609, spleen 0.689 / 0.528, left kidney 0.673 / 0.604, mean 0.675 / 0.508)
LIVER_FLOOR = {"chaos_t2_34": 0.55, "chaos_t2_37": 0.22}
KIDNEY_FLOOR = 0.50   # each kidney: left/right confusion (both kidneys one label) drops one of them to ~0
MEAN_FLOOR = {"chaos_t2_34": 0.60, "chaos_t2_37": 0.43}
BENCH_MEAN_FLOOR = 0.45  # the card's benchmark mean over the 4 test scans (0.519)
ORGANS = (1, 2, 3, 13)

needs_real = pytest.mark.skipif(not (REAL / "mr_chaos_t2").is_dir(), reason="needs ../shared/data/real")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / float(s)


def test_a_default_model_is_shipped_and_verifies():
    models = find_models(WEIGHTS)
    assert models, f"no model folder in {WEIGHTS}"
    card = load_model_folder(models[0], verify=True).card
    assert {"MRI", "PET"} <= set(card.modalities)
    assert card.postprocess.lateral_pairs == ((2, 13), (7, 8)) and card.roi.max_extent_mm is not None
    bench = card.provenance["uda_benchmark"]
    assert bench["mean_dsc"] >= BENCH_MEAN_FLOOR


def _segment(tmp_path_factory, images: Path, cases, *extra: str) -> Path:
    """The shipped model through the engine's CLI (fresh process, CPU) on `cases` of `images`; masks folder
    (QC JSON beside it in ../qc)."""
    inp = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out") / "masks"
    for case in cases:
        (inp / f"{case}_0000.nii.gz").symlink_to(images / f"{case}_0000.nii.gz")
    proc = subprocess.run([sys.executable, "-m", "inference", str(inp), str(out), "--device", "cpu", *extra,
                           "--log-dir", str(out.parent / "qc")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def chaos_predictions(tmp_path_factory):
    return _segment(tmp_path_factory, REAL / "mr_chaos_t2/images", CHAOS_CASES)


@needs_real
def test_shipped_model_dsc_floor_on_real_chaos(chaos_predictions):
    for case in CHAOS_CASES:
        pred_img = sitk.ReadImage(str(chaos_predictions / f"{case}.nii.gz"))
        ref_img = sitk.ReadImage(str(REAL / "mr_chaos_t2/labels" / f"{case}.nii.gz"))
        assert pred_img.GetSize() == ref_img.GetSize() and pred_img.GetSpacing() == ref_img.GetSpacing()
        assert pred_img.GetPixelID() == sitk.sitkUInt8
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        assert set(np.unique(pred).tolist()) <= set(range(14))
        dice = {o: _dice(pred == o, ref == o) for o in ORGANS}
        assert dice[1] >= LIVER_FLOOR[case], (case, dice)
        assert dice[2] >= KIDNEY_FLOOR and dice[13] >= KIDNEY_FLOOR, (case, dice)
        assert np.mean(list(dice.values())) >= MEAN_FLOOR[case], (case, dice)


@pytest.fixture(scope="module")
def pet_predictions(tmp_path_factory):
    return _segment(tmp_path_factory, REAL / "pet_fdg/images", PET_CASES, "--no-tta")


needs_pet = pytest.mark.skipif(not (REAL / "pet_fdg").is_dir(), reason="needs ../shared/data/real")


@needs_pet
def test_shipped_model_on_real_fdg_pet_writes_pet_label_maps_on_a_capped_roi(pet_predictions):
    import json

    for case in PET_CASES:
        img = sitk.ReadImage(str(REAL / "pet_fdg/images" / f"{case}_0000.nii.gz"))
        pred_img = sitk.ReadImage(str(pet_predictions / f"{case}.nii.gz"))
        assert pred_img.GetPixelID() == sitk.sitkUInt8
        assert pred_img.GetSize() == img.GetSize() and pred_img.GetSpacing() == img.GetSpacing()
        assert pred_img.GetOrigin() == img.GetOrigin() and pred_img.GetDirection() == img.GetDirection()
        pred = sitk.GetArrayViewFromImage(pred_img)
        assert set(np.unique(pred).tolist()) <= {0, 1, 2, 3, 4}, case
        qc = json.loads((pet_predictions.parent / "qc" / f"{case}.json").read_text())
        assert qc["modality"] == "PET" and qc["roi_capped"], qc
        box = qc["roi_box_zyx"]
        extent_mm = [(b - a) * s for a, b, s in zip(box["start"], box["stop"], reversed(img.GetSpacing()))]
        cap = load_model_folder(find_models(WEIGHTS)[0]).card.roi.max_extent_mm
        margin = 2 * 20.0 + 2 * 5.0  # the card's 20 mm ROI margin per side + one coarse voxel of rounding per side
        assert all(e <= c + margin for e, c in zip(extent_mm, cap)), (case, extent_mm)


@needs_pet
@pytest.mark.xfail(strict=True, reason="the shipped model was never trained for PET: its PET liver is 300-530 ml "
                                       "in the pelvis (benchmarks/results/shipped-model-pet/)")
def test_shipped_model_finds_an_adult_sized_liver_on_real_fdg_pet(pet_predictions):
    lo, hi = PET_PLAUSIBLE_ML[1]
    for case in PET_CASES:
        img = sitk.ReadImage(str(pet_predictions / f"{case}.nii.gz"))
        liver_ml = float((sitk.GetArrayViewFromImage(img) == 1).sum()) * float(np.prod(img.GetSpacing())) / 1000.0
        assert lo <= liver_ml <= hi, (case, liver_ml)
