"""The side-by-side benchmark's building blocks on a TINY network: both tools (nnUNetPredictor through
benchmarks/nnunet_runner.py, and `python -m inference`) run in fresh processes on one synthetic MR volume and
write a label map of the input's shape."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest.importorskip("nnunetv2")

from benchmarks import side_by_side as sbs  # noqa: E402
from eval.phantoms import synthetic_mr  # noqa: E402
from inference.config import Architecture  # noqa: E402


def test_both_tools_segment_a_tiny_volume(tmp_path):
    fine = Architecture(1, 3, (4, 8, 16), ((1, 3, 3), (3, 3, 3), (3, 3, 3)), ((1, 1, 1), (1, 2, 2), (2, 2, 2)),
                        (1, 1, 1), (1, 1))
    coarse = (Architecture(1, 2, (4, 8), ((3, 3, 3),) * 2, ((1, 1, 1), (2, 2, 2)), (1, 1), (1,)), (8.0, 8.0, 8.0),
              (16, 16, 16))
    models = sbs.build_models(tmp_path / "models", arch=fine, spacing=(6.0, 6.0, 6.0), patch=(16, 32, 32),
                              coarse=coarse, variants=("tta8",), onnx=False)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    image = synthetic_mr((40, 36, 12), seed=3)
    sitk.WriteImage(image, str(inputs / "tiny_0000.nii.gz"), True)
    cmds = sbs.commands(models, "cpu")
    assert set(cmds) == {"nnunet_predictor", "ours_tta8"}
    rows = sbs.run_tools(cmds, inputs, tmp_path / "runs", {"tiny_0000.nii.gz": "40x36x12"}, timeout_s=120)
    assert [r["tool"] for r in rows] == ["nnunet_predictor", "ours_tta8"]
    for r in rows:
        assert r["ok"], r
        out = sitk.ReadImage(r["prediction"])
        assert out.GetSize() == image.GetSize(), (r["tool"], out.GetSize())
        assert np.allclose(out.GetSpacing(), image.GetSpacing(), atol=1e-4)
    sbs.write_results(tmp_path / "results", rows, "cpu", 0.0, 1.0, ["tta8"])
    assert (tmp_path / "results" / "results.csv").read_text().splitlines()[0] == ",".join(sbs.FIELDS)
    assert (tmp_path / "results" / "time_per_case.png").stat().st_size > 0
