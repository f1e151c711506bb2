"""training.export.compose_model: the coarse stage of one model folder + the fine stage of another."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from inference import segment_image
from inference.config import ModelCardError, RoiConfig
from inference.model_folder import load_model_folder, sha256_of, write_card
from training.export import compose_model

from helpers import make_random_model, tiny_stage
from phantoms import blob_image


@pytest.fixture()
def two_models(tmp_path):
    a = make_random_model(tmp_path / "a", seed=1, modalities=("MRI", "PET"),
                          coarse=tiny_stage((8.0, 8.0, 8.0), (16, 32, 32), features=(4, 8, 16)))
    b = make_random_model(tmp_path / "b", seed=2, modalities=("MRI",), onnx=False)
    card_b = load_model_folder(b).card   # the fine model's own ROI rule, to be carried over
    write_card(replace(card_b, roi=RoiConfig(margin_mm=(11.0, 12.0, 13.0), regrow_mm=7.0)), b)
    return tmp_path, a, b


def test_composed_model_has_a_coarse_and_b_fine_with_b_rules(two_models):
    root, a, b = two_models
    out = compose_model(a, b, root / "ab", name="ab", note="test")
    card = load_model_folder(out, verify=True).card
    ca, cb = load_model_folder(a).card, load_model_folder(b).card
    assert card.name == "ab" and card.modalities == ("MRI",)    # what both serve
    assert replace(card.coarse, files={}) == replace(ca.coarse, files={})
    assert replace(card.fine, files={}) == replace(cb.fine, files={})
    assert card.roi == cb.roi and card.postprocess == cb.postprocess
    # the weight files are byte copies of the sources (b has no ONNX: the fine stage is torch only)
    assert set(card.coarse.files) == set(ca.coarse.files) and set(card.fine.files) == {"torch"}
    for stage, src, src_card in (("coarse", a, ca), ("fine", b, cb)):
        for backend, fname in getattr(card, stage).files.items():
            assert sha256_of(out / fname) == sha256_of(src / getattr(src_card, stage).files[backend])
    prov = card.provenance["composed"]
    assert prov["coarse_from"]["name"] == "a" and prov["fine_from"]["name"] == "b" and prov["note"] == "test"
    img = sitk.GetImageFromArray(blob_image((24, 48, 48)))
    img.SetSpacing((2.0, 2.0, 3.0))
    lab = sitk.GetArrayFromImage(segment_image(img, root, model="ab", device="cpu", backend="torch"))
    assert lab.shape == (24, 48, 48) and lab.dtype == np.uint8


def test_compose_refuses_label_mismatch_no_shared_modality_and_overwriting_a_source(tmp_path):
    a = make_random_model(tmp_path / "a", seed=1, modalities=("PET",), onnx=False)
    b = make_random_model(tmp_path / "b", seed=2, modalities=("MRI",), onnx=False)
    with pytest.raises(ValueError, match="no modality in common"):
        compose_model(a, b, tmp_path / "x", name="x")
    c = make_random_model(tmp_path / "c", seed=3, modalities=("MRI",), onnx=False,
                          fine=tiny_stage((3.0, 2.0, 2.0), (16, 32, 32), labels=(0, 1, 2, 3, 4)))
    with pytest.raises(ValueError, match="labels"):
        compose_model(b, c, tmp_path / "y", name="y")
    with pytest.raises(ValueError, match="new folder"):
        compose_model(b, b, tmp_path / "b", name="b")
    # a tampered source weight file is refused before anything is written
    card = json.loads((b / "model.json").read_text())
    (b / card["fine"]["files"]["torch"]).write_bytes(b"not a network")
    with pytest.raises(ModelCardError):
        compose_model(b, b, tmp_path / "z", name="z")
    assert not (tmp_path / "z").exists()


def test_compose_command_line(two_models):
    import subprocess
    import sys

    root, a, b = two_models
    run = [sys.executable, "-m", "training.inplane", "compose", "--coarse-from", str(a), "--fine-from", str(b),
           "--name", "cli"]
    ok = subprocess.run(run + ["--out", str(root / "cli")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert load_model_folder(root / "cli", verify=True).card.name == "cli"
    bad = subprocess.run(run[:5] + [str(root / "nowhere"), "--fine-from", str(b), "--name", "x", "--out",
                                    str(root / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "nowhere" in bad.stderr
