"""Left/right organ pairs by side (postprocess.assign_laterality, card postprocess.lateral_pairs): a network
trained with left-right mirroring labels both kidneys alike; the engine puts them back on their sides."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference import pipeline
from inference.config import FLARE_LATERAL_PAIRS, ModelCard, ModelCardError, PostprocessConfig
from inference.io import read_image
from inference.pipeline import CaseRecord, EngineOptions, Segmenter
from inference.postprocess import assign_laterality

from helpers import stub_card_model, write_image
from test_engine_roi_cap import ValueBackend, _block


def test_two_kidneys_with_one_label_get_their_sides():
    lab = np.zeros((6, 10, 40), np.uint8)
    _block(lab, 13, (1, 5), (2, 6), (5, 10))    # patient's right (small x in LPS), labelled "left"
    _block(lab, 13, (1, 5), (2, 6), (28, 34))   # patient's left
    _block(lab, 1, (0, 2), (7, 10), (0, 20))    # liver: untouched
    before = lab.copy()
    assign_laterality(lab, FLARE_LATERAL_PAIRS, midline_x=30.0)  # a midline off to one side does not matter
    assert (lab[1:5, 2:6, 5:10] == 2).all() and (lab[1:5, 2:6, 28:34] == 13).all()
    assert (lab[before == 1] == 1).all() and ((lab == 0) == (before == 0)).all()


def test_swapped_pair_is_swapped_back_and_fragments_join_their_side():
    lab = np.zeros((6, 10, 40), np.uint8)
    _block(lab, 13, (1, 5), (2, 6), (5, 10))    # right kidney called left
    _block(lab, 2, (1, 5), (2, 6), (28, 34))    # left kidney called right
    _block(lab, 2, (0, 1), (0, 1), (12, 13))    # a one-voxel fragment right of the midpoint 19.25 -> right
    _block(lab, 13, (5, 6), (9, 10), (25, 26))  # a fragment left of it -> left
    assign_laterality(lab, ((2, 13),), midline_x=0.0)
    assert (lab[1:5, 2:6, 5:10] == 2).all() and (lab[1:5, 2:6, 28:34] == 13).all()
    assert lab[0, 0, 12] == 2 and lab[5, 9, 25] == 13


def test_a_single_kidney_takes_the_side_of_the_midline_and_pairs_are_independent():
    lab = np.zeros((6, 10, 40), np.uint8)
    _block(lab, 2, (1, 5), (2, 6), (28, 34))    # one kidney, left of the midline x = 20
    _block(lab, 8, (0, 1), (0, 2), (3, 5))      # one adrenal right of it, called "left"
    assign_laterality(lab, FLARE_LATERAL_PAIRS, midline_x=20.0)
    assert (lab[1:5, 2:6, 28:34] == 13).all() and (lab[0, 0:2, 3:5] == 7).all()
    empty = np.zeros((3, 3, 3), np.uint8)
    assert not assign_laterality(empty, FLARE_LATERAL_PAIRS, 1.0).any()


def test_card_key_parses_validates_and_old_cards_have_none():
    assert PostprocessConfig.from_dict({}).lateral_pairs == ()
    cfg = PostprocessConfig.from_dict({"lateral_pairs": [[2, 13], [7, 8]]})
    assert cfg.lateral_pairs == FLARE_LATERAL_PAIRS == ((2, 13), (7, 8))
    assert PostprocessConfig.from_dict(json.loads(json.dumps({"lateral_pairs": cfg.lateral_pairs}))) == cfg
    for bad in ([[2, 2]], [[2, 13], [13, 7]], [[0, 1]], [[2]], [2, 13], "2,13", [[2, "x"]]):
        with pytest.raises(ModelCardError, match="lateral_pairs"):
            PostprocessConfig.from_dict({"lateral_pairs": bad})


def _stub_model(folder: Path, pairs) -> Path:
    return stub_card_model(folder, "laterality test model (networks replaced by a stub)",
                           postprocess=PostprocessConfig(lateral_pairs=pairs))


@pytest.mark.parametrize("flip_x", [False, True])
def test_engine_puts_kidneys_on_the_patients_sides_in_the_inputs_own_orientation(tmp_path, monkeypatch, flip_x):
    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: ValueBackend(folder.card.stage(name),
                                                                                          device))
    arr = np.zeros((20, 24, 48), np.float32)
    _block(arr, 130.0, (6, 14), (8, 16), (6, 14))   # both kidneys "13" (intensity 130 -> class 13)
    _block(arr, 130.0, (6, 14), (8, 16), (34, 42))
    direction = (-1, 0, 0, 0, 1, 0, 0, 0, 1) if flip_x else (1, 0, 0, 0, 1, 0, 0, 0, 1)
    write_image(arr, tmp_path / "k_0000.nii.gz", spacing=(2.0, 2.0, 2.0), direction=direction)
    on = _stub_model(tmp_path / "on" / "m", FLARE_LATERAL_PAIRS)
    off = _stub_model(tmp_path / "off" / "m", ())
    results = {}
    for key, weights in (("on", on), ("off", off)):
        seg = Segmenter(EngineOptions(weights_dir=weights, device="cpu", backend="torch", tta=False))
        results[key] = seg.segment(read_image(tmp_path / "k_0000.nii.gz"), "MRI", CaseRecord())
    low_i, high_i = results["on"][10, 12, 10], results["on"][10, 12, 38]
    # LPS: physical x grows toward the patient's left; with a flipped x direction, index i runs the other way
    assert (low_i, high_i) == ((13, 2) if flip_x else (2, 13))
    # without the pairs: one "left kidney" survives the largest-component step, the other kidney is lost
    assert sorted([int(results["off"][10, 12, 10]), int(results["off"][10, 12, 38])]) == [0, 13]
    card = json.loads((on / "m" / "model.json").read_text())
    assert ModelCard.from_dict(card).postprocess.lateral_pairs == ((2, 13), (7, 8))
