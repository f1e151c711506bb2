"""ROI regrowth (card roi.regrow_mm): organs touching an inner face of the ROI grow it and the fine stage reruns."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from inference import pipeline, roi
from inference.config import ModelCardError, RoiConfig
from inference.io import read_image
from inference.pipeline import CaseRecord, EngineOptions

from helpers import stub_card_model, write_image
from test_engine_roi_cap import ValueBackend, _block

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.oracle_roi import GivenRoiSegmenter  # noqa: E402


def test_touched_faces_lists_low_and_high_faces_per_axis():
    lab = np.zeros((4, 5, 6), np.uint8)
    assert roi.touched_faces(lab) == []
    lab[0, 2, 2] = 1       # z low
    lab[2, 4, 3] = 13      # y high
    assert roi.touched_faces(lab) == [(0, 0), (1, 1)]
    lab[1, 1, 5] = 2       # x high
    lab[1, 1, 0] = 2       # x low
    assert roi.touched_faces(lab) == [(0, 0), (1, 1), (2, 0), (2, 1)]


def test_grow_faces_moves_only_the_listed_faces_in_whole_voxels_and_stops_at_borders_and_limits():
    box = roi.Box((10, 10, 10), (20, 20, 20))
    spacing = (4.0, 1.5, 1.0)
    # 10 mm: ceil(2.5) = 3 voxels in z, ceil(6.67) = 7 in y, 10 in x
    assert roi.grow_faces(box, [(0, 0), (1, 1), (2, 0)], 10.0, spacing, (100, 100, 100)) == \
        roi.Box((7, 10, 0), (20, 27, 20))
    assert roi.grow_faces(box, [(0, 1)], 10.0, spacing, (22, 100, 100)) == roi.Box((10, 10, 10), (22, 20, 20))
    at_border = roi.Box((0, 10, 10), (20, 20, 20))
    assert roi.grow_faces(at_border, [(0, 0)], 10.0, spacing, (100, 100, 100)) == at_border
    # a limit of 12 voxels along z leaves room for 2 more
    assert roi.grow_faces(box, [(0, 0)], 10.0, spacing, (100, 100, 100), max_shape=(12, 100, 100)) == \
        roi.Box((8, 10, 10), (20, 20, 20))
    assert roi.grow_faces(box, [], 10.0, spacing, (100, 100, 100)) == box


def test_roi_config_regrow_keys_parse_validate_and_default_off():
    assert RoiConfig.from_dict({}).regrow_mm == 0.0 and RoiConfig.from_dict({}).regrow_rounds == 2
    cfg = RoiConfig.from_dict({"regrow_mm": 40, "regrow_rounds": 3})
    assert cfg.regrow_mm == 40.0 and cfg.regrow_rounds == 3
    for bad in ({"regrow_mm": -1}, {"regrow_mm": float("nan")}, {"regrow_mm": "40"}, {"regrow_rounds": -1},
                {"regrow_rounds": 1.5}, {"regrow_rounds": True}):
        with pytest.raises(ModelCardError, match="regrow"):
            RoiConfig.from_dict(bad)


def _stub_model(folder: Path, regrow_mm: float) -> Path:
    return stub_card_model(folder, "regrow test model (networks replaced by a stub)",
                           roi=RoiConfig(margin_mm=(4.0, 4.0, 4.0), regrow_mm=regrow_mm, regrow_rounds=3))


def test_engine_regrows_a_roi_that_cuts_an_organ_until_it_holds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: ValueBackend(folder.card.stage(name),
                                                                                          device))
    arr = np.zeros((24, 40, 40), np.float32)
    _block(arr, 10.0, (4, 20), (6, 30), (4, 30))   # a "liver" (1)
    write_image(arr, tmp_path / "l_0000.nii.gz", spacing=(2.0, 2.0, 2.0))
    cut = roi.Box((6, 10, 10), (16, 22, 22))       # the caller's (or a poor coarse stage's) box: inside the liver
    results = {}
    for regrow in (0.0, 8.0):
        seg = GivenRoiSegmenter(EngineOptions(weights_dir=_stub_model(tmp_path / f"g{regrow}" / "m", regrow),
                                              device="cpu", backend="torch", tta=False))
        seg.roi_box = cut
        rec = CaseRecord()
        results[regrow] = (seg.segment(read_image(tmp_path / "l_0000.nii.gz"), "MRI", rec), rec)
    off, rec_off = results[0.0]
    assert rec_off.roi_regrow_rounds == 0 and (off == 1).sum() == cut.shape[0] * cut.shape[1] * cut.shape[2]
    on, rec_on = results[8.0]
    # 8 mm = 4 voxels per touched face and round. Round 1: every face cuts the liver -> (2, 6, 6)-(20, 26, 26);
    # round 2: z low (index 2) is clear of it, the rest touch -> (2, 2, 2)-(24, 30, 30); round 3: only y, x high
    # touch (z high is the image border) -> (2, 2, 2)-(24, 34, 34), which holds the liver (z 4-20, y 6-30, x 4-30)
    assert rec_on.roi_regrow_rounds == 3
    assert rec_on.roi_box_zyx == {"start": [2, 2, 2], "stop": [24, 34, 34]}
    assert any("ROI regrown" in n for n in rec_on.notes)
    assert (on[4:20, 6:30, 4:30] == 1).all() and (on == 1).sum() == 16 * 24 * 26
