"""The by-number diagnosis of one label (benchmarks/label_probe.py) on a tiny volume: its counts follow the
reference, its shares of winners sum to one, a label the stage lacks or the reference lacks is named. (The by-eye
one, slices through one label, is scripts/overlays.py --label: tests/test_demo_overlays.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import label_probe
from training.inplane.loop import build_net2d

from helpers import write_image


def _case(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    img = np.random.default_rng(0).normal(100, 20, (3, 32, 32)).astype(np.float32)
    lab = np.zeros((3, 32, 32), np.uint8)
    lab[:, 8:16, 8:16], lab[1, 20:24, 20:26] = 1, 12      # 3 x 64 liver, 24 duodenum voxels (2 mm grid)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_image(img, tmp_path / "images" / "c_0000.nii.gz", (2.0, 2.0, 5.0))
    write_image(lab, tmp_path / "labels" / "c.nii.gz", (2.0, 2.0, 5.0))
    return tmp_path / "images" / "c_0000.nii.gz", tmp_path / "labels" / "c.nii.gz", lab


def test_the_probe_counts_the_reference_and_shares_its_voxels_among_winners(tmp_path):
    image, label, lab = _case(tmp_path)
    stage = tmp_path / "stage"
    stage.mkdir()
    ids = (0, 1, 12)
    torch.save(build_net2d((4, 8), len(ids)).state_dict(), stage / "final.pt")
    (stage / "summary.json").write_text(json.dumps({"label_ids": list(ids), "recipe": {
        "features": [4, 8], "spacing_mm": [None, 2.0, 2.0]}}))
    out = label_probe.probe(stage, image, label, 12)
    assert out["voxels"] == int((lab == 12).sum()) == 24
    assert abs(sum(out["wins_inside"].values()) - 1) < 1e-2 and set(out["wins_inside"]) <= set(ids)
    assert 0 <= out["p_inside"] <= 1 and 0 <= out["p_outside"] <= 1
    with pytest.raises(ValueError, match="not among the stage's labels"):
        label_probe.probe(stage, image, label, 13)
    with pytest.raises(ValueError, match="no voxel of label 3"):
        ids3 = (0, 1, 3)
        torch.save(build_net2d((4, 8), len(ids3)).state_dict(), stage / "final.pt")
        (stage / "summary.json").write_text(json.dumps({"label_ids": list(ids3), "recipe": {
            "features": [4, 8], "spacing_mm": [None, 2.0, 2.0]}}))
        label_probe.probe(stage, image, label, 3)
