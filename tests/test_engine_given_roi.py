"""benchmarks/oracle_roi.GivenRoiSegmenter: the fine stage on a caller's canonical box, coarse stage skipped (the
oracle-ROI diagnostic), through the engine's `_region` step; and that diagnostic's oracle box."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from inference import orientation, roi
from inference.io import LoadedImage
from inference.pipeline import CaseRecord, EngineOptions

from helpers import make_random_model, write_image
from phantoms import blob_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.oracle_roi import GivenRoiSegmenter, oracle_box  # noqa: E402


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    weights = tmp_path_factory.mktemp("w")
    make_random_model(weights / "random_given_roi", seed=5, bias_foreground=2.0)
    return GivenRoiSegmenter(EngineOptions(weights_dir=weights, device="cpu", backend="onnx", threads=1))


def _loaded(tmp_path, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    arr = blob_image((30, 40, 50))
    img = write_image(arr, tmp_path / "x_0000.nii.gz", spacing=(2.0, 2.0, 3.0), direction=direction)
    return LoadedImage(image=img, array=arr)


def test_given_box_skips_the_coarse_stage_and_labels_only_inside_it(segmenter, tmp_path):
    loaded = _loaded(tmp_path)
    segmenter.roi_box = None
    whole = segmenter.segment(loaded, "MRI", CaseRecord())
    assert whole.any()  # the biased random net labels organs everywhere it looks
    box = roi.Box((5, 10, 12), (20, 30, 40))
    rec = CaseRecord()
    segmenter.roi_box = box
    out = segmenter.segment(loaded, "MRI", rec)
    assert out.shape == loaded.array.shape and out.dtype == np.uint8
    outside = out.copy()
    outside[box.slices] = 0
    assert not outside.any() and out[box.slices].any()
    assert rec.coarse_shape_zyx == () and "coarse" not in rec.seconds and "coarse" not in rec.normalization
    assert rec.roi_box_zyx == {"start": [5, 10, 12], "stop": [20, 30, 40]}
    assert any("coarse stage skipped" in n for n in rec.notes)


def test_given_box_is_clipped_to_the_image_and_an_empty_one_refused(segmenter, tmp_path):
    loaded = _loaded(tmp_path)
    rec = CaseRecord()
    segmenter.roi_box = roi.Box((-4, 0, 30), (100, 12, 90))
    segmenter.segment(loaded, "MRI", rec)
    assert rec.roi_box_zyx == {"start": [0, 0, 30], "stop": [30, 12, 50]}
    with pytest.raises(ValueError, match="empty"):
        segmenter.roi_box = roi.Box((3, 3, 60), (9, 9, 70))
        segmenter.segment(loaded, "MRI", CaseRecord())


def test_oracle_box_is_the_reference_organs_box_plus_margin_on_the_canonical_grid():
    ref = np.zeros((20, 30, 40), np.uint8)
    ref[4:8, 10:20, 5:15] = 1      # liver
    ref[10:12, 2:4, 30:33] = 13    # left kidney
    ref[15:18, 25:28, 35:38] = 5   # aorta: not scored, must not widen the box
    identity = orientation.orientation_from_direction((1, 0, 0, 0, 1, 0, 0, 0, 1))
    box = oracle_box(ref, [1, 2, 3, 13], (3.0, 2.0, 1.0), (6.0, 4.0, 2.0), identity)
    assert box == roi.Box((2, 0, 3), (14, 22, 35))   # margin 2, 2, 2 voxels; clipped at y = 0
    flipped_y = orientation.orientation_from_direction((1, 0, 0, 0, -1, 0, 0, 0, 1))
    box_f = oracle_box(ref, [1, 2, 3, 13], (3.0, 2.0, 1.0), (6.0, 4.0, 2.0), flipped_y)
    assert box_f == roi.Box((2, 8, 3), (14, 30, 35))  # y mirrored: [0, 22) -> [30 - 22, 30)
    with pytest.raises(ValueError, match="none of the scored organs"):
        oracle_box(np.zeros_like(ref), [1], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), identity)
