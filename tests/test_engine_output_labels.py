"""The model card's per-modality output label map: the engine writes what the card says, with no modality branch."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from inference.config import ModelCardError
from inference.model_folder import load_model_folder, write_card
from inference.labels import OUTPUT_SCHEMES, PET_FROM_MRI
from inference.pipeline import segment_image

from helpers import make_random_model, write_image
from phantoms import blob_image


def test_default_maps_are_the_flare_and_pet_schemes_and_bad_maps_are_rejected(tmp_path):
    card = load_model_folder(make_random_model(tmp_path / "m", onnx=False)).card
    assert card.output_map("MRI") == OUTPUT_SCHEMES["MRI"] == {k: k for k in range(1, 14)}
    assert card.output_map("PET") == PET_FROM_MRI == {1: 1, 2: 2, 3: 3, 13: 4}
    again = replace(card, output_labels={"PET": {"1": "1", "13": "2"}})
    assert again.output_map("PET") == {1: 1, 13: 2}          # JSON's string keys are read as labels
    with pytest.raises(ModelCardError, match="distinct"):
        replace(card, output_labels={"MRI": {1: 1, 2: 1}})
    with pytest.raises(ModelCardError, match="does not serve"):
        replace(replace(card, modalities=("MRI",)), output_labels={"PET": {1: 1}})


def test_the_engine_writes_the_cards_map(tmp_path):
    folder = make_random_model(tmp_path / "w" / "m", modalities=("MRI",), onnx=False, bias_foreground=2.0)
    image = tmp_path / "case_0000.nii.gz"
    write_image(blob_image((24, 48, 48)), image, spacing=(3.0, 3.0, 4.0))
    plain = sitk.GetArrayFromImage(segment_image(image, folder.parent, model="m", backend="torch"))
    assert len(np.unique(plain)) > 2                      # the biased random net predicts several organs
    swap = {k: 14 - k for k in range(1, 14)}              # a permutation: the same region, other numbers
    card = load_model_folder(folder).card
    write_card(replace(card, output_labels={"MRI": swap}), folder)
    assert json.loads((folder / "model.json").read_text())["output_labels"]["MRI"]["1"] == 13
    mapped = sitk.GetArrayFromImage(segment_image(image, folder.parent, model="m", backend="torch"))
    lut = np.zeros(256, np.uint8)
    for k, v in swap.items():
        lut[k] = v
    np.testing.assert_array_equal(mapped, lut[plain])
