"""The demo's PNG overlays: a legend that names each organ in the colour it is drawn with."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from helpers import write_image

_spec = importlib.util.spec_from_file_location("overlays", Path(__file__).parents[1] / "scripts" / "overlays.py")
overlays = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overlays)


def test_legend_names_follow_the_modality_and_colours_match_the_overlay():
    mri = overlays.legend_entries(np.array([0, 1, 13, 3]), "MRI")
    assert [(v, n) for v, n, _ in mri] == [(1, "liver"), (3, "spleen"), (13, "left kidney")]
    pet = overlays.legend_entries(np.array([0, 4, 2]), "PET")
    assert [(v, n) for v, n, _ in pet] == [(2, "right kidney"), (4, "left kidney")]
    # the overlay colours label v with entry v of the table, as the legend does
    for v, _, colour in mri:
        drawn = overlays.CMAP(np.full((2, 2), v, dtype=np.uint8).astype(np.intp) % 20)[0, 0]
        assert tuple(drawn) == tuple(colour)
    assert len({c for _, _, c in mri}) == 3


def test_overlay_png_is_written_with_a_legend(tmp_path):
    img = np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32)
    mask = np.zeros(img.shape, np.uint8)
    mask[2:6, 5:15, 5:15] = 1
    mask[2:6, 18:26, 18:26] = 13
    write_image(img, tmp_path / "case_0000.nii.gz")
    write_image(mask, tmp_path / "case.nii.gz")
    png = tmp_path / "png" / "case.png"
    assert overlays.overlay(tmp_path / "case_0000.nii.gz", tmp_path / "case.nii.gz", png) == (3, 14, 14)   # (9.5 x 100 + 21.5 x 64) / 164 voxels a slice
    assert png.is_file() and png.stat().st_size > 1000
    # through one label (a by-eye check of it): its own centre; a label the mask lacks: the organs' centre
    assert overlays.overlay(tmp_path / "case_0000.nii.gz", tmp_path / "case.nii.gz", png, label=13) == (3, 21, 21)
    assert overlays.overlay(tmp_path / "case_0000.nii.gz", tmp_path / "case.nii.gz", png, label=12) == (3, 14, 14)
