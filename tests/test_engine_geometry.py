"""Outputs overlay their inputs in physical space, whatever the voxel order on disk.

A pointwise 'threshold network' replaces the learned one, so the correct answer is known: the bright sphere.
"""
import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_image
from phantoms import blob_image
from inference import pipeline
from inference.backends import Backend
from inference.cli import main


class ThresholdBackend(Backend):
    """Channel 1 (liver) wherever the normalised intensity exceeds 1.5, background elsewhere."""

    def _forward(self, x):
        v = x[0, 0]
        out = np.full((self.stage.num_classes,) + v.shape, -100.0, np.float32)
        out[0] = 0.0
        out[1] = v - 1.5
        return out


@pytest.fixture
def threshold_engine(monkeypatch):
    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: ThresholdBackend(folder.card.stage(name), device))


def _rotation(deg, axis):
    t = np.radians(deg)
    c, s = np.cos(t), np.sin(t)
    r = {2: [[c, -s, 0], [s, c, 0], [0, 0, 1]], 0: [[1, 0, 0], [0, c, -s], [0, s, c]]}[axis]
    return np.array(r)


CASES = {
    "identity": np.eye(3),
    "flipped_xy": np.diag([-1.0, -1.0, 1.0]),
    "flipped_z": np.diag([1.0, 1.0, -1.0]),
    "permuted": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float),
    "permuted_flipped": np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], float),
    "oblique_20deg": _rotation(20, 2),
    "oblique_flipped": _rotation(15, 0) @ np.diag([1.0, -1.0, -1.0]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_overlays_input(name, tmp_path, random_model, threshold_engine):
    direction = CASES[name]
    arr = blob_image((40, 64, 56), center=(18, 30, 25), radius=9.0)
    truth = arr > 5
    spacing = (1.5, 1.0, 2.0)  # ITK order x, y, z
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    img = write_image(arr, inp / f"{name}_0000.nii.gz", spacing=spacing, origin=(-20.0, 13.0, 7.5),
                      direction=tuple(direction.ravel()))
    assert main([str(inp), str(out), "--weights", str(random_model), "--device", "cpu"]) == 0
    seg = sitk.ReadImage(str(out / f"{name}.nii.gz"))
    assert seg.GetPixelID() == sitk.sitkUInt8
    assert seg.GetSize() == img.GetSize()
    assert np.allclose(seg.GetSpacing(), img.GetSpacing()) and np.allclose(seg.GetOrigin(), img.GetOrigin())
    assert np.allclose(seg.GetDirection(), img.GetDirection())
    lab = sitk.GetArrayFromImage(seg)
    assert set(np.unique(lab)) <= {0, 1}
    dice = 2 * np.logical_and(lab == 1, truth).sum() / ((lab == 1).sum() + truth.sum())
    assert dice > 0.9, dice
    # the segmented sphere's centre sits on the true centre in physical space (within one voxel)
    c_true = np.mean(np.argwhere(truth), axis=0)[::-1]
    c_seg = np.mean(np.argwhere(lab == 1), axis=0)[::-1]
    p_true = np.array(img.TransformContinuousIndexToPhysicalPoint(c_true.tolist()))
    p_seg = np.array(seg.TransformContinuousIndexToPhysicalPoint(c_seg.tolist()))
    assert np.linalg.norm(p_true - p_seg) < max(spacing)


def test_pet_case_gets_pet_labels(tmp_path, random_model, threshold_engine, monkeypatch):
    """A PET name gets the PET scheme: the MRI spleen (3) stays 3, left kidney (13) becomes 4, others vanish."""

    class ManyOrgans(Backend):
        def _forward(self, x):
            v = x[0, 0]
            out = np.full((self.stage.num_classes,) + v.shape, -100.0, np.float32)
            out[0] = 0.0
            # organ by z position within the window (z is not a mirror axis, so TTA keeps it): 3, 13, 5
            z = np.arange(v.shape[0])[:, None, None] / v.shape[0]
            out[3] = np.where(z < 0.33, 1.0, -1.0) * (v > 1.5)
            out[13] = np.where((z >= 0.33) & (z < 0.66), 1.0, -1.0) * (v > 1.5)
            out[5] = np.where(z >= 0.66, 1.0, -1.0) * (v > 1.5)
            return out

    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: ManyOrgans(folder.card.stage(name), device))
    arr = blob_image((32, 48, 48), radius=14.0)
    (tmp_path / "in").mkdir()
    write_image(arr, tmp_path / "in" / "fdg_case_0000.nii.gz", spacing=(2.0, 2.0, 2.0))
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(random_model)]) == 0
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "fdg_case.nii.gz")))
    assert set(np.unique(lab)) <= {0, 1, 2, 3, 4}
    assert (lab == 3).any() and (lab == 4).any()


def test_no_tta_runs_one_pass_per_window(tmp_path, random_model, monkeypatch):
    calls = []

    class Counting(ThresholdBackend):
        def _forward(self, x):
            calls.append(self.stage.patch_size)
            return super()._forward(x)

    monkeypatch.setattr(pipeline, "make_backend",
                        lambda folder, name, backend, device, threads=None: Counting(folder.card.stage(name), device))
    (tmp_path / "in").mkdir()
    write_image(blob_image((16, 32, 32)), tmp_path / "in" / "a_0000.nii.gz", spacing=(2.0, 2.0, 3.0))
    counts = {}
    for flag in ([], ["--no-tta"]):
        calls.clear()
        assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(random_model), *flag]) == 0
        counts[bool(flag)] = len(calls)
    # the fine stage mirrors over 2 axes (4 passes per window), the coarse stage has no TTA
    from inference.model_folder import load_model_folder

    card = load_model_folder(random_model / "random_c2f").card
    assert card.fine.tta.axes == (1, 2) and not card.coarse.tta.axes
    fine_windows = (counts[False] - counts[True]) // 3
    assert fine_windows >= 1 and counts[False] == counts[True] + 3 * fine_windows
