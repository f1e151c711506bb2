"""Smoke run on real volumes: CT (TotalSegmentator example, with its label) -> real T2 MRI (CHAOS), a tiny net,
a few iterations on the CPU, then translate the CT back out with its geometry. The data live outside the repo
(../shared/data/real); the test is skipped where they are absent."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from training.cyclegan.__main__ import main

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
CT_IMAGE = REAL / "totalseg_examples" / "images" / "ts_ct_sm_0000.nii.gz"
CT_LABEL = REAL / "totalseg_examples" / "labels" / "ts_ct_sm.nii.gz"
MR = REAL / "mr_chaos_t2"
MR_CASES = ("chaos_t2_01", "chaos_t2_02")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CT_IMAGE.exists() and (MR / "images").is_dir()),
                                 reason=f"real data not found under {REAL}")]


def test_real_ct_to_mri_smoke(tmp_path, one_torch_thread):   # one thread for this test only
    for sub in ("ct_img", "ct_lab", "mr_img", "mr_lab"):
        (tmp_path / sub).mkdir()
    (tmp_path / "ct_img" / CT_IMAGE.name).symlink_to(CT_IMAGE)        # links, no copies of the data
    (tmp_path / "ct_lab" / CT_LABEL.name).symlink_to(CT_LABEL)
    for case in MR_CASES:
        (tmp_path / "mr_img" / f"{case}_0000.nii.gz").symlink_to(MR / "images" / f"{case}_0000.nii.gz")
        (tmp_path / "mr_lab" / f"{case}.nii.gz").symlink_to(MR / "labels" / f"{case}.nii.gz")
    out = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["train", "--ct-images", str(tmp_path / "ct_img"), "--ct-labels", str(tmp_path / "ct_lab"),
                 "--target-images", str(tmp_path / "mr_img"), "--target-labels", str(tmp_path / "mr_lab"),
                 "--out", str(out), "--target-modality", "mri", "--epochs", "1", "--iterations-per-epoch", "3",
                 "--ngf", "8", "--n-blocks", "2", "--ndf", "8", "--n-layers-d", "2", "--seg-filters", "8",
                 "--seg-depth", "3", "--slice-size", "64", "--spacing-mm", "3", "--num-workers", "0",
                 "--body-crop", "--grid-slices", "2", "--quiet"]) == 0
    train_s = time.perf_counter() - t0
    steps = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert len(steps) == 3 and all(np.isfinite(v) for s in steps for v in s.values())
    q = json.loads((out / "quality.json").read_text())
    # the label map has 12 organs; every one of them is scored (values are near 0 after 3 iterations)
    assert len(q["structure_preservation"]["per_organ"]) == 12
    assert set(q["target_dice"]["per_organ"]) == {"liver", "right_kidney", "spleen", "left_kidney"}
    assert (out / "grids" / "ts_ct_sm.png").exists()

    trans = tmp_path / "synthetic_mri"
    assert main(["translate", "--checkpoint", str(out / "checkpoints" / "latest.pt"), "--ct-images",
                 str(tmp_path / "ct_img"), "--ct-labels", str(tmp_path / "ct_lab"), "--out", str(trans),
                 "--quiet"]) == 0
    src = sitk.ReadImage(str(CT_IMAGE))
    fake = sitk.ReadImage(str(trans / "images" / "ts_ct_sm_0000.nii.gz"))
    assert fake.GetSize() == src.GetSize()
    np.testing.assert_allclose(fake.GetSpacing(), src.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(fake.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(fake.GetDirection(), src.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(trans / "labels" / "ts_ct_sm.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(CT_LABEL))))
    print(f"real smoke: train + quality {train_s:.1f} s")
