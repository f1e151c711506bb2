"""Spatial operations and their inverses, with analytic answers."""
import itertools

import numpy as np
import pytest
import torch

from inference import orientation, resample, roi


def _direction(perm, signs):
    d = np.zeros((3, 3))
    for p in range(3):
        d[p, perm[p]] = signs[p]
    return tuple(d.ravel())


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, 1, 1), (1, -1, -1), (-1, -1, -1)])
def test_reorient_undo_is_identity_and_canonical(perm, signs):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    o = orientation.orientation_from_direction(_direction(perm, signs))
    canon = o.apply(arr)
    assert np.array_equal(o.undo(canon), arr)
    assert o.oblique_deg == pytest.approx(0.0)
    # the canonical array's axis a runs along physical axis 2-a in + direction: check with index vectors
    d = np.reshape(_direction(perm, signs), (3, 3))
    canon_idx = np.stack([o.apply(c) for c in np.indices(arr.shape)], -1)  # original array index per voxel
    phys = canon_idx[..., ::-1] @ d.T  # ITK index (i, j, k) -> physical direction
    for a in range(3):
        step = np.diff(phys, axis=a)
        assert np.all(step[..., 2 - a] > 0), "canonical axis must increase along its physical axis"


def test_identity_direction_is_identity():
    o = orientation.orientation_from_direction((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert o.is_identity and o.describe() == ""


def test_oblique_angle_reported():
    t = np.radians(20)
    d = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    o = orientation.orientation_from_direction(tuple(d.ravel()))
    assert o.oblique_deg == pytest.approx(20.0, abs=1e-6)
    assert o.axes_order == (0, 1, 2) and not o.flip_axes


def test_canonical_spacing_follows_permutation():
    o = orientation.orientation_from_direction(_direction((2, 0, 1), (1, 1, 1)))
    spacing = (3.0, 2.0, 1.0)
    canon = o.spacing(spacing)
    assert sorted(canon) == sorted(spacing)
    arr = np.zeros((5, 6, 7))
    assert o.apply(arr).shape == tuple(arr.shape[a] for a in o.axes_order)


def test_shape_at_spacing():
    assert resample.shape_at_spacing((100, 200, 51), (2.0, 1.0, 1.0), (4.0, 4.0, 5.0)) == (50, 50, 10)
    assert resample.shape_at_spacing((3, 3, 3), (1, 1, 1), (10, 10, 10)) == (1, 1, 1)


def test_linear_matches_torch_trilinear():
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(7, 9, 11)).astype(np.float32)
    for shape in [(14, 5, 11), (3, 18, 4), (7, 9, 11)]:
        ours = resample.resample_linear(arr, shape)
        ref = torch.nn.functional.interpolate(torch.from_numpy(arr)[None, None], size=shape, mode="trilinear",
                                              align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_linear_reproduces_a_ramp_and_constants():
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 4, 4))
    up = resample.resample_linear(ramp, (20, 4, 4))
    # output voxel o samples (o + 0.5) / 2 - 0.5, clamped to [0, 9]
    expected = np.clip((np.arange(20) + 0.5) / 2 - 0.5, 0, 9)
    np.testing.assert_allclose(up[:, 0, 0], expected, atol=1e-6)
    assert np.allclose(resample.resample_linear(np.full((5, 6, 7), 3.5), (9, 2, 13)), 3.5)


def test_nearest_labels_roundtrip_integer_factor():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 14, size=(6, 8, 10)).astype(np.uint8)
    up = resample.labels_to_shape(labels, (12, 24, 10))
    assert up.dtype == np.uint8
    assert np.array_equal(up[::2, ::3, :], labels)
    assert np.array_equal(resample.labels_to_shape(up, labels.shape), labels)


def test_crop_uncrop_identity():
    rng = np.random.default_rng(2)
    arr = rng.integers(1, 5, size=(10, 12, 14)).astype(np.uint8)
    box = roi.Box((2, 3, 4), (7, 12, 10))
    c = roi.crop(arr, box)
    assert c.shape == box.shape == (5, 9, 6)
    back = roi.uncrop(c, box, arr.shape)
    assert np.array_equal(back[box.slices], arr[box.slices])
    mask = np.ones(arr.shape, bool)
    mask[box.slices] = False
    assert not back[mask].any()
    assert np.array_equal(roi.crop(back, box), c)
    with pytest.raises(ValueError):
        roi.uncrop(c[:-1], box, arr.shape)


def test_foreground_box_scale_expand():
    lab = np.zeros((10, 10, 10), np.uint8)
    assert roi.foreground_box(lab) is None
    lab[2, 3:5, 7] = 1
    lab[6, 4, 8] = 13  # a second, disconnected organ widens the union box
    box = roi.foreground_box(lab)
    assert box == roi.Box((2, 3, 7), (7, 5, 9))
    big = roi.scale_box(box, (10, 10, 10), (20, 40, 10))
    assert big == roi.Box((4, 12, 7), (14, 20, 9))
    grown = roi.expand_box(big, (5.0, 2.0, 3.0), (2.0, 1.0, 1.5), (20, 40, 10))
    # margins in voxels: ceil(5/2)=3, ceil(2/1)=2, ceil(3/1.5)=2; clipped to the image
    assert grown == roi.Box((1, 10, 5), (17, 22, 10))


def test_labels_to_shape_into_a_view_slab_by_slab():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 14, size=(7, 5, 6)).astype(np.uint8)
    expected = resample.labels_to_shape(labels, (20, 9, 11))
    target = np.zeros((30, 15, 20), np.uint8)
    view = np.flip(np.transpose(target, (2, 0, 1)), (0,))[:, 1:10, 3:14]  # a permuted, flipped window
    assert view.shape == (20, 9, 11)
    resample.labels_to_shape(labels, (20, 9, 11), out=view, slab_voxels=50)  # several slabs
    assert np.array_equal(view, expected)
    assert target.sum() == expected.astype(np.int64).sum()
    with pytest.raises(ValueError):
        resample.labels_to_shape(labels, (20, 9, 11), out=target)


def test_label_counts_slabwise():
    from inference.postprocess import label_counts

    rng = np.random.default_rng(4)
    lab = rng.integers(0, 14, size=(9, 7, 5)).astype(np.uint8)
    np.testing.assert_array_equal(label_counts(lab, slab_voxels=40), np.bincount(lab.ravel(), minlength=256))


def test_spacing_of_shape_is_the_true_voxel_size_of_a_rounded_grid():
    from inference.resample import shape_at_spacing, spacing_of_shape

    shape, spacing = (10, 20, 30), (2.0, 1.0, 1.0)
    grid = shape_at_spacing(shape, spacing, (4.0, 2.0, 4.0))          # 30 mm / 4 mm rounds to 8 voxels
    assert grid == (5, 10, 8)
    assert spacing_of_shape(shape, spacing, grid) == (4.0, 2.0, 3.75)
