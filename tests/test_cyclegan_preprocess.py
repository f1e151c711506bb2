"""Preprocessing of the CycleGAN: every transform against its inverse, and the whole volume round trip."""
import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference.orientation import orientation_from_direction
from training.cyclegan.options import CycleGANOptions
from training.cyclegan.preprocess import (InPlaneCrop, InPlanePad, InPlaneResample, IntensityWindow,
                                          percentile_window, prepare_arrays, prepare_image, restore_labels,
                                          restore_volume)
from phantoms import slice_phantom

torch.set_num_threads(1)


def signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for a, p in enumerate(perm):
                d[p, a] = signs[a]
            yield tuple(d.ravel())


@pytest.mark.parametrize("direction", list(signed_permutations()))
def test_reorientation_is_canonical_and_invertible(direction):
    shape = (3, 4, 5)                                   # array (z, y, x) = index axes (k, j, i)
    spacing = (1.0, 2.0, 3.0)                           # index spacing (i, j, k)
    d = np.asarray(direction).reshape(3, 3)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    idx = np.stack([i * spacing[0], j * spacing[1], k * spacing[2]])      # (3, z, y, x)
    phys = np.einsum("pa,a...->p...", d, idx)                              # physical x, y, z per voxel
    reo = orientation_from_direction(direction)      # the engine's, which the translator uses
    for p in range(3):
        canon = reo.apply(phys[p])
        axis = 2 - p                                    # canonical array axis of physical axis p
        assert np.all(np.diff(canon, axis=axis) > 0)    # increasing along its own axis ...
        others = [a for a in range(3) if a != axis]
        for a in others:                                # ... constant along the others
            assert np.allclose(np.diff(canon, axis=a), 0)
        np.testing.assert_array_equal(reo.undo(canon), phys[p])
    # spacing follows the axes: canonical axis 2 - p has the spacing of the index axis along physical p
    sp = reo.spacing(tuple(reversed(spacing)))
    for p in range(3):
        a = int(np.argmax(np.abs(d[p])))
        assert sp[2 - p] == spacing[a]


def test_intensity_window_round_trip_and_clipping():
    w = IntensityWindow(-600, 600)
    x = np.array([-1000, -600, 0, 300, 600, 2000], dtype=np.float32)
    y = w.apply(x)
    np.testing.assert_allclose(y, [-1, -1, 0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_allclose(w.invert(y), np.clip(x, -600, 600), atol=1e-3)
    with pytest.raises(ValueError):
        IntensityWindow(1, 1)


def test_percentile_window():
    x = np.arange(1001, dtype=np.float32)
    w = percentile_window(x, (0.1, 99.9))
    assert w.low == pytest.approx(1.0) and w.high == pytest.approx(999.0)
    assert percentile_window(np.zeros(10), (0.1, 99.9)).high == 1.0    # constant volume: unit window


def test_resample_shapes_and_round_trip():
    r = InPlaneResample.to_spacing((40, 60), (1.5, 0.75), 3.0)
    assert r.new_shape_yx == (20, 15)
    yy, xx = np.mgrid[0:40, 0:60]
    smooth = np.sin(yy / 12.0)[None] * np.cos(xx / 15.0)[None] * np.ones((2, 1, 1))
    down = r.apply(smooth.astype(np.float32))
    assert down.shape == (2, 20, 15)
    back = r.invert(down)
    assert back.shape == smooth.shape
    assert np.abs(back - smooth)[:, 4:-4, 4:-4].max() < 0.1
    # labels: nearest neighbour, exact round trip for an integer upsampling
    up = InPlaneResample((5, 7), (10, 14))
    lab = np.random.default_rng(0).integers(0, 14, (3, 5, 7)).astype(np.uint8)
    assert up.apply_labels(lab).shape == (3, 10, 14)
    np.testing.assert_array_equal(up.invert_labels(up.apply_labels(lab)), lab)


def test_body_crop_is_the_largest_component_box_plus_margin():
    norm = np.full((3, 50, 60), -1.0, dtype=np.float32)
    norm[1, 10:21, 15:41] = 0.2                          # the body (on one slice is enough: max projection)
    norm[0, 45, 2] = 0.9                                 # an isolated speck (table, noise): ignored
    crop = InPlaneCrop.body(norm, margin_px=2)
    assert (crop.y0, crop.y1, crop.x0, crop.x1) == (8, 23, 13, 43)
    cut = crop.apply(norm)
    assert cut.shape == (3, 15, 30)
    restored = crop.invert(cut)
    expected = norm.copy()
    expected[0, 45, 2] = -1.0                            # outside the box: background
    np.testing.assert_array_equal(restored, expected)
    # near the border the margin is clipped; nothing above threshold: the full slice
    edge = InPlaneCrop.body(np.pad(norm[:, 10:21, 15:41], ((0, 0), (0, 5), (0, 5)), constant_values=-1), 3)
    assert (edge.y0, edge.y1, edge.x0, edge.x1) == (0, 14, 0, 29)
    empty = InPlaneCrop.body(np.full((2, 8, 8), -1.0), 1)
    assert (empty.y0, empty.y1, empty.x0, empty.x1) == (0, 8, 0, 8)


def test_pad_to_multiple_round_trip():
    pad = InPlanePad.to_multiple((45, 61), 16)
    assert (pad.before, pad.after) == ((1, 1), (2, 2))    # (y, x) before, (y, x) after
    x = np.random.default_rng(1).normal(size=(2, 45, 61)).astype(np.float32)
    padded = pad.apply(x)
    assert padded.shape == (2, 48, 64) and padded[0, 0, 0] == -1.0
    np.testing.assert_array_equal(pad.invert(padded), x)
    assert InPlanePad.to_multiple((32, 32), 16, min_size=64).apply(x[:, :32, :32]).shape == (2, 64, 64)


@pytest.mark.parametrize("body_crop", [False, True])
def test_volume_round_trip(body_crop):
    img, lab = slice_phantom((5, 48, 56), "ct", noise=0.0)
    direction = (-1, 0, 0, 0, 0, 1, 0, -1, 0)          # flipped x, y and z swapped: a coronal-ordered array
    vol = prepare_arrays(img, (0.8, 0.8, 2.0), direction, "ct", spacing_mm=1.6, ct_window_hu=(-600, 600),
                         percentiles=(0.1, 99.9), body_crop=body_crop, label=lab)
    assert vol.image.dtype == np.float32 and vol.image.min() >= -1 and vol.image.max() <= 1
    assert vol.label.shape == vol.image.shape
    restored = restore_volume(vol.image, vol.transform)
    assert restored.shape == img.shape
    inside = np.abs(img) < 550                          # inside the window, away from the clip
    err = np.abs(restored - img)[inside]
    assert np.median(err) < 5.0                         # HU, after a 2x down- and upsampling
    lab_back = restore_labels(vol.label, vol.transform)
    assert lab_back.shape == lab.shape
    agreement = np.mean(lab_back[lab > 0] == lab[lab > 0])
    assert agreement > 0.85


def test_prepare_image_uses_options():
    img, lab = slice_phantom((3, 32, 32), "mri")
    sitk_img = sitk.GetImageFromArray(img)
    sitk_img.SetSpacing((2.0, 2.0, 5.0))
    opts = CycleGANOptions(spacing_mm=4.0, slice_size=32, seg_depth=2)
    vol = prepare_image(sitk_img, "mri", opts)
    assert vol.image.shape == (3, 16, 16)
    assert vol.transform.window.low < vol.transform.window.high
    assert vol.label is None
