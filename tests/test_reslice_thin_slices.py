"""Coronal / sagittal reslices (eval.reslice: grid, physical consistency) and the in-plane stages' minimum slice
spacing (StageConfig.min_slice_mm: fewer network passes on thin slices, labels back on every slice)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from eval.reslice import make_reslice_set, reslice, reslice_grid
from inference import normalization
from inference.config import ModelCardError
from inference.pipeline import Segmenter
from training.inplane.export import card_stage
from training.inplane.recipe import StageRecipe


def _axial(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> tuple[sitk.Image, sitk.Image]:
    """40 x 30 x 10 voxels of 1 x 1 x 5 mm (x, y, z) with a labelled box (22 x 20 x 20 mm) and an image that is
    bright inside it."""
    lab = np.zeros((10, 30, 40), np.uint8)
    lab[2:6, 5:27, 10:30] = 1
    img = sitk.GetImageFromArray((lab * 100 + 10).astype(np.int16))
    label = sitk.GetImageFromArray(lab)
    for im in (img, label):
        im.SetSpacing((1.0, 1.0, 5.0))
        im.SetOrigin((-20.0, 7.0, 100.0))
        im.SetDirection(direction)
    return img, label


def _physical_centroid(label: sitk.Image) -> np.ndarray:
    idx = np.argwhere(sitk.GetArrayViewFromImage(label) > 0)[:, ::-1].mean(axis=0)   # x, y, z
    return np.array(label.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx]))


def test_coronal_grid_of_an_axial_scan_is_a_rotation_over_its_box():
    img, _ = _axial()
    size, spacing, origin, direction = reslice_grid(img, "coronal")
    d = np.array(direction).reshape(3, 3)
    assert np.allclose(d[:, 0], (1, 0, 0)) and np.allclose(d[:, 1], (0, 0, 1)) and np.allclose(abs(d[:, 2]), (0, 1, 0))
    assert np.isclose(np.linalg.det(d), 1.0)
    # the box: 40 mm left-right, 50 mm head-foot, 30 mm front-back
    assert spacing == (1.5, 1.5, 5.5) and size == (27, 34, 6)
    sag = reslice_grid(img, "sagittal")
    assert sag[0] == (20, 34, 8) and np.isclose(np.linalg.det(np.array(sag[3]).reshape(3, 3)), 1.0)
    with pytest.raises(ValueError, match="unknown plane"):
        reslice_grid(img, "axial")


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 1, 0, 1, 0, 0, 0, 0, -1)])
@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_a_reslice_keeps_the_organ_where_it_was_and_its_volume(direction, plane):
    img, label = _axial(direction)
    out = reslice(label, plane, labels=True)
    vol_in = float(sitk.GetArrayViewFromImage(label).sum()) * np.prod(label.GetSpacing())
    vol_out = float((sitk.GetArrayViewFromImage(out) > 0).sum()) * np.prod(out.GetSpacing())
    # nearest-neighbour sampling of 5.5 mm slices: the box's 20-22 mm along the slice axis become 3 or 4 slices
    assert out.GetPixelID() == sitk.sitkUInt8 and abs(vol_out - vol_in) / vol_in < 5.5 / 20
    assert np.linalg.norm(_physical_centroid(out) - _physical_centroid(label)) < 5.5 / 2 + 1   # mm
    bright = reslice(img, plane)
    arr, lab = sitk.GetArrayViewFromImage(bright), sitk.GetArrayViewFromImage(out)
    assert arr[lab > 0].mean() > 60 > arr[lab == 0].mean()


def test_reslice_set_writes_images_and_labels_on_the_same_grid(tmp_path):
    img, label = _axial()
    (tmp_path / "in").mkdir()
    (tmp_path / "lab").mkdir()
    sitk.WriteImage(img, str(tmp_path / "in" / "c_01_0000.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "lab" / "c_01.nii.gz"))
    made = make_reslice_set([tmp_path / "in" / "c_01_0000.nii.gz"], tmp_path / "lab", tmp_path / "out")
    assert [p.name for p in made] == ["c_01_coronal_0000.nii.gz", "c_01_sagittal_0000.nii.gz"]
    for p in made:
        a = sitk.ReadImage(str(p))
        b = sitk.ReadImage(str(tmp_path / "out" / "labels" / p.name.replace("_0000", "")))
        assert a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin())
        assert np.allclose(a.GetDirection(), b.GetDirection())


def _inplane_stage(min_slice_mm):
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(16, 16), features=(4, 8))
    return replace(card_stage(recipe, (0, 1)), normalization=normalization.Normalization("none"),
                   min_slice_mm=min_slice_mm)


class _CountingNet:
    """A stub network: organ (channel 1) where the one-slice window is brighter than 0.5; counts its calls."""

    def __init__(self):
        self.calls = 0

    def predict(self, window):
        self.calls += 1
        x = window[0, 0]
        return np.stack([np.zeros_like(x), (x > 0.5).astype(np.float32) * 2 - 1]).astype(np.float32)


def test_thin_slices_run_at_the_minimum_slice_spacing_and_thick_ones_as_they_are():
    canon = np.zeros((30, 16, 16), np.float32)
    canon[9:21, 4:12, 4:12] = 1.0              # 12 mm of organ along z at 1 mm slices
    sample = normalization.stats_sample(canon)
    net = _CountingNet()
    labels, _ = Segmenter._run_stage(_inplane_stage(3.0), net, canon, (1.0, 2.0, 2.0), sample)
    assert labels.shape == (10, 16, 16) and net.calls == 10        # 30 slices of 1 mm -> 10 of 3 mm
    assert labels[:, 8, 8].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]
    net = _CountingNet()
    labels, _ = Segmenter._run_stage(_inplane_stage(3.0), net, canon[::5], (5.0, 2.0, 2.0), sample)
    assert labels.shape == (6, 16, 16) and net.calls == 6          # 5 mm slices: every slice, as before
    net = _CountingNet()
    labels, _ = Segmenter._run_stage(_inplane_stage(None), net, canon, (1.0, 2.0, 2.0), sample)
    assert labels.shape == (30, 16, 16) and net.calls == 30


def test_min_slice_spacing_needs_an_in_plane_stage():
    stage = _inplane_stage(3.0)
    assert stage.grid_spacing((1.0, 0.7, 0.7)) == (3.0, 2.0, 2.0) and stage.grid_spacing((4.0, 1, 1)) == (None, 2.0, 2.0)
    with pytest.raises(ModelCardError, match="min_slice_mm"):
        replace(stage, spacing_mm=(3.0, 2.0, 2.0))
    with pytest.raises(ModelCardError, match="min_slice_mm"):
        replace(stage, min_slice_mm=0.0)
    assert type(stage).from_dict({**stage.__dict__, "architecture": stage.architecture.__dict__,
                                  "normalization": {"scheme": "none"}, "tta": {}}).min_slice_mm == 3.0
