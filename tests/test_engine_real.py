"""End to end on EVERY real volume of ../shared/data/real through predict.sh, and torch/ONNX parity."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import REAL, make_random_model, tiny_stage
from inference.modality import case_name, modality_of

ROOT = Path(__file__).resolve().parents[1]
REAL_IMAGES = sorted(REAL.glob("*/images/*_0000.nii.gz"))
pytestmark = pytest.mark.skipif(not REAL_IMAGES, reason=f"real data folder {REAL} is missing")


@pytest.fixture(scope="module")
def e2e_model(tmp_path_factory):
    """Random tiny model with CI-sized stages (bias makes it predict organs, so the ROI path runs)."""
    root = tmp_path_factory.mktemp("e2e_weights")
    make_random_model(root / "e2e", seed=3, bias_foreground=0.3,
                      coarse=tiny_stage((8.0, 8.0, 8.0), (32, 32, 32)),
                      fine=tiny_stage((6.0, 5.0, 5.0), (32, 64, 64), tta_axes=(2,)))
    return root


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


@pytest.mark.slow
def test_predict_sh_on_every_real_volume(tmp_path, e2e_model):
    inp, out = tmp_path / "inputs", tmp_path / "outputs"
    inp.mkdir()
    for p in REAL_IMAGES:
        os.symlink(p, inp / p.name)
    proc = subprocess.run(["sh", str(ROOT / "predict.sh"), str(inp), str(out), "--weights", str(e2e_model),
                           "--device", "cpu", "--log-dir", str(tmp_path / "qc")],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(os.listdir(out)) == sorted(f"{case_name(p)}.nii.gz" for p in REAL_IMAGES)
    for p in REAL_IMAGES:
        src = sitk.ReadImage(str(p))
        seg = sitk.ReadImage(str(out / f"{case_name(p)}.nii.gz"))
        assert seg.GetPixelID() == sitk.sitkUInt8
        assert seg.GetSize() == src.GetSize()
        np.testing.assert_allclose(seg.GetSpacing(), src.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)
        labels = set(np.unique(sitk.GetArrayViewFromImage(seg)).tolist())
        allowed = set(range(5)) if modality_of(p) == "PET" else set(range(14))
        assert labels <= allowed, (p.name, labels)
        assert (tmp_path / "qc" / f"{case_name(p)}.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chaos_t2_33_0000.nii.gz", "fdg_sts001_0000.nii.gz", "ts_mr_sm_0000.nii.gz"])
def test_torch_and_onnx_backends_agree(name, e2e_model):
    from inference.io import read_image
    from inference.pipeline import EngineOptions, Segmenter

    path = next(p for p in REAL_IMAGES if p.name == name)
    loaded = read_image(path)
    results = {}
    for backend in ("torch", "onnx"):
        seg = Segmenter(EngineOptions(weights_dir=e2e_model, device="cpu", backend=backend))
        results[backend] = seg.segment(loaded, modality_of(path))
    a, b = results["torch"], results["onnx"]
    organs = sorted(set(np.unique(a)) | set(np.unique(b)) - {0})
    assert organs, "the biased random model should predict some organ"
    for organ in organs:
        assert _dice(a == organ, b == organ) >= 0.99, (name, organ)
