"""Physical-axis spacing and resampling to the CT median spacing: extent, position and pixel type preserved."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from training.selftrain.geometry import index_spacing_for, physical_spacing_xyz, resample_to_spacing, same_spacing

PERMUTED = (0, 0, 1, 0, 1, 0, 1, 0, 0)  # index i runs along physical z, index k along physical x


def _image(arr, spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), origin=(-30.0, 12.0, 100.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    return img


def _centroid_mm(img: sitk.Image) -> np.ndarray:
    arr = sitk.GetArrayFromImage(img).astype(np.float64)
    w = np.clip(arr - 50.0, 0, None)  # the bright blob only
    zyx = np.array([(w * g).sum() / w.sum() for g in np.indices(arr.shape)])
    return np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in zyx[::-1])))


def _extent_mm(img: sitk.Image) -> np.ndarray:
    return np.asarray(img.GetSize()) * np.asarray(img.GetSpacing())


def test_physical_spacing_follows_the_direction_matrix():
    arr = np.zeros((4, 5, 6), np.int16)
    assert physical_spacing_xyz(_image(arr, (0.8, 0.9, 5.0))) == (0.8, 0.9, 5.0)
    permuted = _image(arr, (5.0, 0.9, 0.8), direction=PERMUTED)
    assert physical_spacing_xyz(permuted) == (0.8, 0.9, 5.0)
    assert index_spacing_for(permuted, (0.8, 0.9, 5.0)) == (5.0, 0.9, 0.8)
    assert same_spacing((1.0, 1.0, 2.5), (1.0, 1.0005, 2.5)) and not same_spacing((1, 1, 2.5), (1, 1, 2.6))


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1), PERMUTED])
def test_resample_keeps_extent_position_and_type(direction):
    zz, yy, xx = np.indices((12, 40, 36))
    blob = ((zz - 5) ** 2 / 9 + (yy - 22) ** 2 / 36 + (xx - 15) ** 2 / 36) <= 1
    arr = (10 + 200 * blob).astype(np.int16)
    img = _image(arr, (1.25, 1.25, 6.0) if direction != PERMUTED else (6.0, 1.25, 1.25), direction)
    target_xyz = (2.0, 2.0, 2.5) if direction != PERMUTED else (2.5, 2.0, 2.0)
    out = resample_to_spacing(img, target_xyz)
    assert physical_spacing_xyz(out) == pytest.approx(target_xyz)
    assert out.GetDirection() == img.GetDirection()
    assert sitk.GetArrayViewFromImage(out).dtype == np.int16
    assert np.all(np.abs(_extent_mm(out) - _extent_mm(img)) <= np.asarray(out.GetSpacing()) / 2 + 1e-6)
    # the first voxel's outer corner stays where it was
    def corner(im):
        return np.asarray(im.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5)))
    assert np.allclose(corner(out), corner(img), atol=1e-6)
    assert np.linalg.norm(_centroid_mm(out) - _centroid_mm(img)) < 1.0  # mm
    values = sitk.GetArrayViewFromImage(out)
    assert values.min() >= 10 and values.max() <= 210


def test_resample_float_image_stays_float():
    arr = np.random.default_rng(0).normal(size=(6, 8, 8)).astype(np.float32)
    out = resample_to_spacing(_image(arr, (1.0, 1.0, 3.0)), (1.0, 1.0, 1.0))
    assert out.GetSize() == (8, 8, 18)
    assert sitk.GetArrayViewFromImage(out).dtype == np.float32
