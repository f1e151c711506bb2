"""Which component an organ keeps when anatomy says where it lies (card postprocess.caudal_to, in
postprocess.keep_largest_component): on FDG PET the largest "right kidney" piece can be the hot heart above the
liver; the rule keeps the largest piece below the liver's centroid instead, and never removes an organ."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inference import pipeline
from inference.config import ModelCard, ModelCardError, PostprocessConfig
from inference.io import read_image
from inference.pipeline import CaseRecord, EngineOptions, Segmenter
from inference.postprocess import keep_largest_component

from helpers import stub_card_model, write_image
from test_engine_roi_cap import ValueBackend, _block

ORGANS = tuple(range(1, 14))


def _heart_case() -> np.ndarray:
    """Canonical grid (axis 0: z grows toward the head). Liver z 10-14 (centroid 12); "right kidney" pieces: the
    heart at z 16-20 (4x4x4 = 64 voxels, the larger) and the kidney at z 4-7 (3x3x3 = 27 voxels); spleen z 10-13."""
    lab = np.zeros((22, 12, 30), np.uint8)
    _block(lab, 1, (10, 15), (2, 8), (2, 10))
    _block(lab, 2, (16, 20), (2, 6), (4, 8))      # heart, labelled right kidney
    _block(lab, 2, (4, 7), (3, 6), (3, 6))        # the kidney
    _block(lab, 3, (10, 13), (2, 6), (20, 26))
    return lab


def test_the_largest_piece_below_the_reference_is_kept():
    lab = _heart_case()
    plain = keep_largest_component(lab.copy(), ORGANS)
    assert (plain[16:20, 2:6, 4:8] == 2).all() and not (plain[4:7, 3:6, 3:6] == 2).any()   # the heart wins
    ruled = keep_largest_component(lab.copy(), ORGANS, caudal_to=((2, 1),))
    assert (ruled[4:7, 3:6, 3:6] == 2).all() and not (ruled[16:20, 2:6, 4:8] == 2).any()   # the kidney wins
    others = (lab != 2)
    assert (ruled[others] == lab[others]).all()                                             # nothing else moves


def test_the_rule_never_removes_an_organ():
    lab = _heart_case()
    lab[lab == 2] = 0
    _block(lab, 2, (16, 20), (2, 6), (4, 8))      # only the heart piece: no piece below the liver
    _block(lab, 2, (20, 21), (9, 10), (20, 21))   # and a one-voxel piece, also above
    out = keep_largest_component(lab.copy(), ORGANS, caudal_to=((2, 1),))
    assert (out[16:20, 2:6, 4:8] == 2).all() and out[20, 9, 20] == 0                       # largest kept
    no_liver = _heart_case()
    no_liver[no_liver == 1] = 0
    out = keep_largest_component(no_liver.copy(), ORGANS, caudal_to=((2, 1),))
    assert (out[16:20, 2:6, 4:8] == 2).all()                                                # no reference: largest


def test_the_reference_is_its_kept_component_or_all_of_it_when_not_cleaned():
    lab = _heart_case()
    _block(lab, 1, (0, 2), (9, 12), (26, 30))     # a stray liver piece far below (24 voxels) ...
    # ... cleaned away first (liver in the organs): centroid 12 -> the kidney at z 4-7 is below it
    out = keep_largest_component(lab.copy(), ORGANS, caudal_to=((2, 1),))
    assert (out[4:7, 3:6, 3:6] == 2).all() and not (out[0:2, 9:12, 26:30] == 1).any()
    # liver not cleaned (not listed): all its voxels count, centroid (240*12 + 24*0.5) / 264 = 10.95, still above
    kept = keep_largest_component(lab.copy(), (2,), caudal_to=((2, 1),))
    assert (kept[4:7, 3:6, 3:6] == 2).all() and (kept[0:2, 9:12, 26:30] == 1).all()


def test_card_key_parses_validates_and_old_cards_have_none():
    assert PostprocessConfig.from_dict({}).caudal_to == ()
    cfg = PostprocessConfig.from_dict({"caudal_to": [[2, 1], [13, 3]]})
    assert cfg.caudal_to == ((2, 1), (13, 3))
    assert PostprocessConfig.from_dict(json.loads(json.dumps({"caudal_to": cfg.caudal_to}))) == cfg
    for bad in ([[2, 2]], [[2, 1], [2, 3]], [[2, 1], [1, 3]], [[0, 1]], [[2]], "2,1", [[2, "x"]]):
        with pytest.raises(ModelCardError, match="caudal_to"):
            PostprocessConfig.from_dict({"caudal_to": bad})
    with pytest.raises(ModelCardError, match="largest_component_organs"):
        PostprocessConfig.from_dict({"caudal_to": [[2, 1]], "largest_component_organs": [1, 3]})


@pytest.mark.parametrize("flip_z", [False, True])
def test_engine_applies_the_rule_in_the_patients_frame(tmp_path, monkeypatch, flip_z):
    """Through the engine (networks replaced by a stub that labels organ c where the intensity is 10 c): the same
    anatomy stored with the z axis running head -> feet keeps the same kidney piece."""
    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: ValueBackend(folder.card.stage(name),
                                                                                          device))
    arr = np.zeros((40, 24, 48), np.float32)                 # z, y, x at 2 mm; z index toward the head
    _block(arr, 10.0, (18, 28), (4, 16), (4, 20))           # liver, z 18-28
    _block(arr, 20.0, (31, 39), (4, 12), (8, 16))           # "right kidney" above it (heart), 512 voxels
    _block(arr, 20.0, (6, 12), (6, 12), (6, 12))            # the kidney below it, 216 voxels
    _block(arr, 30.0, (18, 26), (4, 12), (30, 42))          # spleen
    stored = arr[::-1].copy() if flip_z else arr
    direction = (1, 0, 0, 0, 1, 0, 0, 0, -1) if flip_z else (1, 0, 0, 0, 1, 0, 0, 0, 1)
    origin = (0.0, 0.0, 78.0) if flip_z else (0.0, 0.0, 0.0)   # same physical position either way
    write_image(stored, tmp_path / "c_0000.nii.gz", spacing=(2.0, 2.0, 2.0), direction=direction, origin=origin)
    results = {}
    for key, rule in (("on", ((2, 1),)), ("off", ())):
        weights = stub_card_model(tmp_path / key / "m", "caudal_to test model (networks replaced by a stub)",
                                  postprocess=PostprocessConfig(caudal_to=rule))
        seg = Segmenter(EngineOptions(weights_dir=weights, device="cpu", backend="torch", tta=False))
        out = seg.segment(read_image(tmp_path / "c_0000.nii.gz"), "MRI", CaseRecord())
        results[key] = out[::-1] if flip_z else out            # back to z toward the head
        card = ModelCard.from_dict(json.loads((weights / "m" / "model.json").read_text()))
        assert card.postprocess.caudal_to == rule
    assert results["on"][9, 9, 9] == 2 and results["on"][35, 8, 12] == 0
    assert results["off"][9, 9, 9] == 0 and results["off"][35, 8, 12] == 2
    assert results["on"][22, 10, 10] == 1 and results["on"][22, 8, 36] == 3
