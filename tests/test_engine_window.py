"""Sliding-window geometry, Gaussian weights, blending, TTA and label clean-up."""
import numpy as np
import pytest

from inference import postprocess, sliding_window as sw, tta
from inference.config import TTA
from inference.labels import PET_FROM_MRI


def test_compute_steps_nnunet_geometry():
    assert sw.compute_steps((100,), (50,), 0.5) == [[0, 25, 50]]
    assert sw.compute_steps((50,), (50,), 0.5) == [[0]]
    # 3 windows of 64 over 130 with step 0.5: ceil(66/32)+1 = 4 windows, evenly 22 apart
    assert sw.compute_steps((130,), (64,), 0.5) == [[0, 22, 44, 66]]
    assert sw.compute_steps((130, 64), (64, 64), 1.0) == [[0, 33, 66], [0]]
    with pytest.raises(ValueError):
        sw.compute_steps((10,), (16,), 0.5)


def test_gaussian_weights():
    g = sw.gaussian_weights((9, 16, 16))
    assert g.shape == (9, 16, 16) and g.max() == pytest.approx(1.0) and g.min() > 0
    assert g[4, 8, 8] == pytest.approx(1.0)
    # separable with sigma = patch / 8: one sigma from the centre along y -> exp(-1/2)
    assert g[4, 8 + 2, 8] == pytest.approx(np.exp(-0.5), rel=1e-5)
    np.testing.assert_allclose(g[4, 8 - 3, 8], g[4, 8 + 3, 8])


def test_pad_unpad_identity():
    arr = np.arange(3 * 20 * 7, dtype=np.float32).reshape(3, 20, 7)
    padded, slicer = sw.pad_to_patch(arr, (8, 16, 8))
    assert padded.shape == (8, 20, 8)
    assert np.array_equal(sw.unpad(padded, slicer), arr)
    assert slicer[0] == slice(2, 5)  # 5 missing: 2 below, 3 above
    assert padded[:2].sum() == 0 and padded[5:].sum() == 0


def _threshold_net(calls):
    def predict(x):
        calls.append(x.shape)
        v = x[0, 0]
        return np.stack([np.zeros_like(v), v - 0.5, 2 * (v - 1.5)])
    return predict


@pytest.mark.parametrize("shape", [(40, 50, 37), (5, 9, 70), (16, 16, 16)])
def test_sliding_window_reproduces_a_pointwise_net(shape):
    """A net that classifies each voxel by its value must give the same labels whatever the tiling."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 3, size=shape).astype(np.float32)
    expected = np.select([image > 2.5, image > 0.5], [2, 1], 0)  # argmax of (0, v-0.5, 2v-3)
    calls = []
    labels = sw.sliding_window_labels(image, (16, 16, 16), 0.5, 3, _threshold_net(calls))
    assert labels.shape == image.shape and labels.dtype == np.uint8
    assert np.array_equal(labels, expected)
    padded = [max(s, 16) for s in shape]
    n_expected = np.prod([len(s) for s in sw.compute_steps(padded, (16, 16, 16), 0.5)])
    assert len(calls) == n_expected


def test_gaussian_blending_prefers_the_window_centre():
    """Two windows disagree on their overlap: each voxel takes the one whose centre is nearer."""
    image = np.zeros((8, 8, 24), np.float32)

    def predict(x):
        # window starting at x=0 says class 1, the one at x=8 says class 2 (known through a marker voxel)
        out = np.zeros((3,) + x.shape[2:], np.float32)
        out[1 if x[0, 0, 0, 0, 0] == 0 else 2] = 1.0
        return out

    image[:, :, 8:] = 1e-3  # marks the second window (starts at x=8)
    labels = sw.sliding_window_labels(image, (8, 8, 16), 0.5, 3, predict)
    # window centres at x=8 and x=16; x=12 is a tie, which argmax gives to the lower class
    assert (labels[..., :13] == 1).all() and (labels[..., 13:] == 2).all()


def test_flip_sets():
    assert tta.flip_sets(TTA()) == [()]
    assert len(tta.flip_sets(TTA(axes=(0, 1, 2)))) == 8
    assert tta.flip_sets(TTA(axes=(1, 2), mode="joint")) == [(), (1, 2)]


def test_mirrored_mean_analytic():
    x = np.zeros((1, 1, 2, 3, 4), np.float32)

    def predict(inp):  # logits = x-coordinate ramp (not flip-equivariant)
        return np.broadcast_to(np.arange(4, dtype=np.float32), (1, 2, 3, 4)).copy()

    out = tta.mirrored_mean(predict, x, tta.flip_sets(TTA(axes=(2,))))
    np.testing.assert_allclose(out, 1.5)  # mean of the ramp and its mirror
    same = tta.mirrored_mean(predict, x, tta.flip_sets(TTA(axes=(0, 1))))
    np.testing.assert_allclose(same, predict(x))


def test_keep_largest_component_per_organ():
    lab = np.zeros((10, 20, 20), np.uint8)
    lab[1:4, 1:4, 1:4] = 1  # 27 voxels
    lab[6:9, 10:15, 10:15] = 1  # 75 voxels: kept
    lab[1:3, 15:17, 1:3] = 2  # organ 2 not listed: untouched
    lab[6:8, 1:3, 15:17] = 2
    lab[5, 5, 5] = 3
    out = postprocess.keep_largest_component(lab.copy(), organs=(1, 3))
    assert (out == 1).sum() == 75 and out[7, 12, 12] == 1 and out[2, 2, 2] == 0
    assert (out == 2).sum() == 16 and (out == 3).sum() == 1


def test_pet_remap():
    lab = np.arange(14, dtype=np.uint8).reshape(1, 1, 14)
    pet = postprocess.relabel(lab, PET_FROM_MRI)
    assert pet.ravel().tolist() == [0, 1, 2, 3] + [0] * 9 + [4]
