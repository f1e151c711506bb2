"""The body the renderers paint into: body-mask extraction from a scan (only the binary mask reaches a render) and
the body-wall layers by depth, with analytic answers."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from training.render import body_mask_from_image
from training.render.body import _vertebra, body_layers

from helpers import REAL
from phantoms import abdomen_phantom

SPACING = (5.0, 2.0, 2.0)


def test_body_mask_from_image_finds_an_ellipse():
    _, body = abdomen_phantom((12, 80, 96))
    rng = np.random.default_rng(0)
    image = np.where(body, 300.0, 5.0) + rng.normal(0, 10, body.shape)
    image[:, 30:34, 40:50] = 2.0  # a dark hole inside the body (gas) is filled
    mask = body_mask_from_image(image, SPACING)
    # within two voxels of the true boundary everywhere (smoothing + a low threshold grow it by about one)
    st = np.ones((1, 3, 3), bool)
    assert np.all(mask[ndimage.binary_erosion(body, st, iterations=2)])
    assert not np.any(mask[~ndimage.binary_dilation(body, st, iterations=2)])
    with pytest.raises(ValueError, match="constant"):
        body_mask_from_image(np.zeros((4, 8, 8)), SPACING)
    with pytest.raises(ValueError, match="3D"):
        body_mask_from_image(np.zeros((8, 8)), SPACING)


def test_body_layers_follow_the_depth_below_the_surface():
    """A slab body 40 mm thick: skin to 2 mm, fat between 2 and 2 + [5, 5] mm, muscle 6 mm more, the rest inside."""
    body = np.zeros((2, 60, 40), bool)
    body[:, 10:50, 0:40] = True            # surfaces at y = 10 and y = 49 (x spans the whole slice: no x surface)
    body = np.pad(body, ((0, 0), (0, 0), (1, 1)))  # ... except at the padded x edges, far from the middle column
    sp = (5.0, 1.0, 1.0)
    skin, fat, muscle, inside = body_layers(body, sp, np.random.default_rng(0), 2.0, (5.0, 5.0), 6.0)
    col = np.arange(60)
    depth = np.minimum(col - 9, 50 - col).astype(float)   # edt distance of an inside voxel to the background
    mid = 20
    for name, mask, lo, hi in (("skin", skin, 0, 2), ("fat", fat, 2, 7), ("muscle", muscle, 7, 13),
                               ("inside", inside, 13, 99)):
        want = body[0, :, mid] & (depth > lo) & (depth <= hi)
        np.testing.assert_array_equal(mask[0, :, mid], want, err_msg=name)
    assert not (skin & fat).any() and (skin | fat | muscle | inside).sum() == body.sum()


def test_vertebra_sits_at_the_posterior_midline_outside_organs():
    body = np.zeros((1, 120, 120), bool)
    body[0, 10:110, 10:110] = True
    labels = np.zeros(body.shape, np.uint8)
    shell, core = _vertebra(body, labels, (5.0, 1.0, 1.0), 15.0)
    ys, xs = np.nonzero(shell[0] | core[0])
    # centre 15 + 25 mm in front of the posterior surface (y = 109), in the middle of x
    assert abs(ys.mean() - (109 - 40)) < 1 and abs(xs.mean() - 59.5) < 1
    assert core.sum() > 0 and not (shell & core).any()
    labels[0, 60:80, 50:70] = 5            # an organ there keeps its voxels
    shell2, core2 = _vertebra(body, labels, (5.0, 1.0, 1.0), 15.0)
    assert not ((shell2 | core2) & (labels > 0)).any()


@pytest.mark.skipif(not (REAL / "mr_chaos_t2").is_dir(), reason="needs ../shared/data/real")
def test_real_chaos_body_mask():
    chaos = REAL / "mr_chaos_t2"
    image = sitk.ReadImage(str(chaos / "images/chaos_t2_01_0000.nii.gz"))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(chaos / "labels/chaos_t2_01.nii.gz")))
    body = body_mask_from_image(sitk.GetArrayFromImage(image).astype(np.float32),
                                tuple(reversed(image.GetSpacing())), lab)
    assert 0.2 < body.mean() < 0.8 and np.all(body[lab > 0])
