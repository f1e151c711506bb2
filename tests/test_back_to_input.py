"""The fine labels' way back to the input grid (card postprocess.back_to_input): nearest labels, or the fine
stage's probabilities resampled linearly (resample.probabilities_to_labels, sliding_window_probabilities)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from inference import pipeline, resample, sliding_window as sw
from inference.backends import Backend
from inference.config import ModelCardError, PostprocessConfig
from inference.io import read_image
from inference.pipeline import EngineOptions, Segmenter

from helpers import stub_card_model, write_image


# ------------------------------------------------------------------------------------- probabilities_to_labels
def _reference(probs, channels, values, out_shape):
    """Voxel by voxel: the interpolated probabilities' argmax where a source voxel with a weight carries it, else
    the nearest label (the definition, written out; no slabs, no boundary shortcut)."""
    axes, near = [], []
    for n_in, n_out in zip(channels.shape, out_shape, strict=True):
        c = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        axes.append([(int(np.floor(v)), min(int(np.floor(v)) + 1, n_in - 1), v - np.floor(v)) for v in c])
        near.append(resample.nearest_indices(n_in, n_out))
    out = np.zeros(out_shape, np.uint8)
    for o in itertools.product(*[range(n) for n in out_shape]):
        total, carriers = np.zeros(probs.shape[0]), set()
        for corner in itertools.product((0, 1), repeat=3):
            idx, w = [], 1.0
            for ax, c in enumerate(corner):
                i0, i1, f = axes[ax][o[ax]]
                idx.append(i1 if c else i0)
                w *= f if c else 1 - f
            total += w * probs[(slice(None),) + tuple(idx)].astype(np.float64)
            if w > 0:
                carriers.add(int(channels[tuple(idx)]))
        best = int(np.argmax(total))
        nearest = channels[near[0][o[0]], near[1][o[1]], near[2][o[2]]]
        out[o] = values[best] if best in carriers else values[nearest]
    return out


def test_a_ramp_comes_back_where_its_probability_crosses_one_half():
    """p(organ) = 0, 0.2, 0.6, 1.0 on 4 voxels, 4 times finer: the interpolated p is 0.5 at source coordinate
    1.75, i.e. output coordinate (1.75 + 0.5) * 4 - 0.5 = 8.5: voxels 0-8 background, 9-15 organ. Nearest labels
    switch at the source voxel's edge (output voxel 8)."""
    p = np.array([0, 0.2, 0.6, 1.0], np.float32)
    probs = np.stack([1 - p, p])[:, None, None, :]
    channels = (p > 0.5).astype(np.uint8)[None, None, :]
    out = resample.probabilities_to_labels(probs, channels, np.array([0, 7]), (1, 1, 16))
    np.testing.assert_array_equal(out.ravel(), [0] * 9 + [7] * 7)
    np.testing.assert_array_equal(resample.labels_to_shape(channels * 7, (1, 1, 16)).ravel(), [0] * 8 + [7] * 8)


def test_no_label_appears_between_two_voxels_that_only_rank_it_second():
    """Between (0.5, 0.45, 0.05) and (0.05, 0.45, 0.5) the mean ranks channel 1 first; neither voxel is labelled
    1, so the output keeps the nearest labels."""
    probs = np.array([[0.5, 0.05], [0.45, 0.45], [0.05, 0.5]], np.float32)[:, None, None, :]
    channels = np.array([[[0, 2]]], np.uint8)
    out = resample.probabilities_to_labels(probs, channels, np.array([0, 1, 2]), (1, 1, 8))
    np.testing.assert_array_equal(out.ravel(), [0, 0, 0, 0, 2, 2, 2, 2])


@pytest.mark.parametrize("out_shape", [(5, 9, 13), (3, 4, 6), (4, 11, 3), (7, 5, 6)])
def test_equals_the_voxel_by_voxel_definition(out_shape):
    """Random probabilities (some voxels overwritten by one-hot labels, as the clean-up does), grids finer,
    coarser, the same (axis 0 of (4, 11, 3)) and mixed; small slabs: the boundary shortcut changes nothing."""
    rng = np.random.default_rng(sum(out_shape))
    probs = rng.dirichlet(np.ones(4) * 0.7, size=(4, 5, 6)).transpose(3, 0, 1, 2).astype(np.float16)
    channels = np.argmax(probs, axis=0).astype(np.uint8)
    smooth = np.zeros_like(channels)                     # a large region of one channel: many unmixed cells
    smooth[:, :3] = 1
    channels = np.where(rng.random(channels.shape) < 0.7, smooth, channels).astype(np.uint8)
    probs[:] = np.moveaxis(np.eye(4, dtype=np.float16)[channels], -1, 0) * np.float16(0.5) + probs * np.float16(0.5)
    changed = rng.random(channels.shape) < 0.1           # "cleaned" voxels: one-hot of another channel
    channels[changed] = (channels[changed] + 1) % 4
    hot = np.moveaxis(np.eye(4, dtype=np.float16)[channels], -1, 0)
    probs[:, changed] = hot[:, changed]
    values = np.array([0, 3, 5, 9], np.uint8)
    expected = _reference(probs, channels, values, out_shape)
    np.testing.assert_array_equal(resample.probabilities_to_labels(probs, channels, values, out_shape), expected)
    out = np.full((2,) + tuple(out_shape), 77, np.uint8)
    resample.probabilities_to_labels(probs, channels, values, out_shape, out=out[1], slab_voxels=1)
    np.testing.assert_array_equal(out[1], expected)
    assert (out[0] == 77).all()


def test_the_same_grid_gives_the_labels_back_and_shapes_are_checked():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=(3, 4, 5)).transpose(3, 0, 1, 2).astype(np.float32)
    channels = np.argmax(probs, axis=0).astype(np.uint8)
    values = np.array([0, 2, 13], np.uint8)
    np.testing.assert_array_equal(resample.probabilities_to_labels(probs, channels, values, (3, 4, 5)),
                                  values[channels])
    with pytest.raises(ValueError, match="disagree"):
        resample.probabilities_to_labels(probs, channels[:2], values, (3, 4, 5))
    with pytest.raises(ValueError, match="out has shape"):
        resample.probabilities_to_labels(probs, channels, values, (3, 4, 5), out=np.zeros((3, 4, 4), np.uint8))


# ------------------------------------------------------------------------------------------------ sliding window
def _pointwise(x):
    v = x[0, 0]
    return np.stack([np.zeros_like(v), 3 * (v - 0.5), 2 * (v - 1.5)]).astype(np.float32)


def _positional(calls):
    """A net whose logits depend on where the window lies (so overlapping windows disagree)."""
    def predict(x):
        calls.append(1)
        v = x[0, 0]
        return np.stack([np.zeros_like(v), v - 0.5 + 0.1 * len(calls), np.full_like(v, 0.3)]).astype(np.float32)
    return predict


@pytest.mark.parametrize("shape", [(40, 50, 37), (5, 9, 70), (16, 16, 16), (1, 20, 20)])
def test_probabilities_are_the_softmax_of_a_pointwise_net_whatever_the_tiling(shape):
    """Every window gives a voxel the same logits, so their weight-normalised average is those logits: the
    probabilities are their softmax (analytic), the labels those of sliding_window_labels."""
    image = np.random.default_rng(1).uniform(0, 3, size=shape).astype(np.float32)
    labels, probs = sw.sliding_window_probabilities(image, (16, 16, 16), 0.5, 3, _pointwise)
    assert probs.dtype == np.float16 and probs.shape == (3,) + shape
    np.testing.assert_array_equal(labels, sw.sliding_window_labels(image, (16, 16, 16), 0.5, 3, _pointwise))
    logits = np.stack([np.zeros_like(image), 3 * (image - 0.5), 2 * (image - 1.5)])
    expected = np.exp(logits) / np.exp(logits).sum(0)
    expected[expected < 2.0 ** -14] = 0
    np.testing.assert_allclose(probs.astype(np.float32), expected, atol=2e-3)


def test_labels_are_bit_identical_when_windows_disagree():
    image = np.random.default_rng(2).uniform(0, 1, size=(20, 30, 40)).astype(np.float32)
    a = sw.sliding_window_labels(image, (8, 16, 16), 0.5, 3, _positional([]))
    b, probs = sw.sliding_window_probabilities(image, (8, 16, 16), 0.5, 3, _positional([]))
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) > 1
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=3e-3)
    np.testing.assert_array_equal(np.argmax(probs, axis=0)[np.ptp(probs, axis=0) > 0.01],
                                  a[np.ptp(probs, axis=0) > 0.01])


# ---------------------------------------------------------------------------------------------------- the card
def test_card_key_defaults_to_labels_and_is_validated():
    assert PostprocessConfig.from_dict({}).back_to_input == "labels"
    cfg = PostprocessConfig.from_dict({"back_to_input": "probabilities"})
    assert PostprocessConfig.from_dict(json.loads(json.dumps({"back_to_input": cfg.back_to_input}))) == cfg
    for bad in ("linear", "", None, 1):
        with pytest.raises(ModelCardError, match="back_to_input"):
            PostprocessConfig.from_dict({"back_to_input": bad})


# ---------------------------------------------------------------------------------------------------- the engine
class HalfwayBackend(Backend):
    """Liver (channel 1) with logit 0.8 * (v - 5) against background's 0: an organ of intensity 10 on 0 read at
    half its contrast, as confident on either side (every other channel far below)."""

    def _forward(self, x):
        v = x[0, 0]
        out = np.full((self.stage.num_classes,) + v.shape, -100.0, np.float32)
        out[0], out[1] = 0.0, 0.8 * (v - 5.0)
        return out


def _sphere(shape, center, radius):
    z, y, x = np.indices(shape)
    return ((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2) <= radius ** 2


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("flip", [False, True])
def test_engine_writes_a_smoother_organ_in_the_inputs_geometry_and_keeps_the_clean_up(tmp_path, monkeypatch, flip):
    """A 1 mm image, a 2 mm fine grid, a stub network that reads intensity 10 as liver: the ball comes back
    closer to its true shape through the probabilities than through nearest labels, in the input's own voxel
    order, and the stray blob the largest-component step drops stays dropped."""
    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: HalfwayBackend(folder.card.stage(name),
                                                                                            device))
    shape = (36, 40, 44)
    ball = _sphere(shape, (18.3, 19.6, 17.2), 10.4)
    stray = _sphere(shape, (6, 6, 38), 2.2)
    arr = np.where(ball | stray, 10.0, 0.0).astype(np.float32)
    direction = (-1, 0, 0, 0, 1, 0, 0, 0, -1) if flip else (1, 0, 0, 0, 1, 0, 0, 0, 1)
    write_image(arr, tmp_path / "b_0000.nii.gz", spacing=(1.0, 1.0, 1.0), direction=direction)
    loaded = read_image(tmp_path / "b_0000.nii.gz")
    results = {}
    for mode in ("labels", "probabilities"):
        weights = stub_card_model(tmp_path / mode / "m", "back_to_input test model (networks replaced by a stub)",
                                  postprocess=PostprocessConfig(back_to_input=mode))
        seg = Segmenter(EngineOptions(weights_dir=weights, device="cpu", backend="torch"))
        results[mode] = seg.segment(loaded, "MRI")
    for mode, out in results.items():
        assert out.shape == arr.shape and out.dtype == np.uint8
        assert set(np.unique(out)) == {0, 1}, mode
        assert not out[stray].any(), mode          # the clean-up's drop survives the way back
    near, lin = (_dice(results[m] == 1, ball) for m in ("labels", "probabilities"))
    assert lin > near and lin > 0.95, (near, lin)


def test_a_model_folder_gets_the_mode_with_its_weights_unchanged(tmp_path):
    from helpers import make_random_model
    from inference.model_folder import load_model_folder
    from training.export import with_back_to_input

    src = make_random_model(tmp_path / "src", seed=4, onnx=False, bias_foreground=2.0)
    out = with_back_to_input(src, tmp_path / "w" / "p", name="p", back_to_input="probabilities")
    a, b = load_model_folder(src, verify=True).card, load_model_folder(out, verify=True).card
    assert b.postprocess.back_to_input == "probabilities" and a.postprocess.back_to_input == "labels"
    assert b.name == "p" and b.provenance["back_to_input"] == {"from_model": a.name, "mode": "probabilities",
                                                              "from_model_benchmark": None}
    assert [b.sha256[b.stage(n).files["torch"]] for n in b.stage_names] == [
        a.sha256[a.stage(n).files["torch"]] for n in a.stage_names]
    seg = Segmenter(EngineOptions(weights_dir=out.parent, device="cpu", backend="torch"))
    image = np.random.default_rng(0).normal(size=(24, 40, 40)).astype(np.float32)
    labels = seg.segment_array(image, (2.5, 1.3, 1.3), "MRI")
    assert labels.shape == image.shape and labels.any()
    with pytest.raises(ModelCardError, match="back_to_input"):
        with_back_to_input(src, tmp_path / "bad", name="bad", back_to_input="linear")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="new folder"):
        with_back_to_input(src, src, name="same", back_to_input="labels")
