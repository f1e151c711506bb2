"""`Segmenter.segment_array`: the engine on an array already on its canonical grid, without SimpleITK.

The answer is known without knowing the network: the file path (`segment`) and the array path run the same code on
the same canonical voxels, so the labels must agree voxel for voxel, whatever the file's voxel order.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import write_image
from inference import orientation
from inference.io import read_image
from inference.pipeline import CaseContext, CaseRecord, EngineOptions, Segmenter
from phantoms import blob_image

ROOT = Path(__file__).resolve().parents[1]
SPACING_XYZ = (2.0, 1.5, 4.0)  # ITK order of the file's index axes

DIRECTIONS = {
    "identity": np.eye(3),
    "flipped_xy": np.diag([-1.0, -1.0, 1.0]),
    "permuted_flipped": np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], float),
}


@pytest.fixture(scope="module")
def segmenter(random_model):
    return Segmenter(EngineOptions(weights_dir=random_model, device="cpu", backend="torch"))


def test_case_context_of_array_is_the_canonical_case_of_the_image(tmp_path):
    arr = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    direction = DIRECTIONS["permuted_flipped"]
    write_image(arr, tmp_path / "c_0000.nii.gz", spacing=(1.0, 2.0, 3.0), direction=tuple(direction.ravel()))
    loaded = read_image(tmp_path / "c_0000.nii.gz")
    from_image = CaseContext.of(loaded, "MRI")
    from_array = CaseContext.of_array(np.ascontiguousarray(from_image.canon), from_image.spacing, "MRI")
    assert from_array.orient.is_identity and from_array.out_shape == from_image.canon.shape
    assert from_image.out_shape == arr.shape and from_image.canon.shape != arr.shape
    np.testing.assert_array_equal(from_array.canon, from_image.canon)
    assert from_array.spacing == from_image.spacing
    # the file's index axes i, j, k (1, 2, 3 mm) run along physical -z, -x, +y: canonical (z, y, x) = (i, k, j)
    assert from_image.spacing == (1.0, 3.0, 2.0)


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_segment_array_labels_equal_segment_on_the_canonical_grid(name, tmp_path, segmenter):
    direction = DIRECTIONS[name]
    arr = blob_image((20, 40, 36), center=(9, 22, 15), radius=7.0, seed=1)
    path = tmp_path / f"{name}_0000.nii.gz"
    write_image(arr, path, spacing=SPACING_XYZ, direction=tuple(direction.ravel()))
    loaded = read_image(path)
    orient = orientation.orientation_from_direction(direction.ravel())
    canon = np.ascontiguousarray(orient.apply(loaded.array))
    canon_spacing = orient.spacing(tuple(reversed(SPACING_XYZ)))

    rec_file, rec_array = CaseRecord(), CaseRecord()
    from_file = segmenter.segment(loaded, "MRI", rec_file)
    from_array = segmenter.segment_array(canon, canon_spacing, "MRI", rec_array)

    assert from_array.dtype == np.uint8 and from_array.shape == canon.shape
    np.testing.assert_array_equal(from_array, orient.apply(from_file))
    assert np.unique(from_array).size > 1  # the random model labels something: the comparison is not vacuous
    assert rec_array.roi_box_zyx == rec_file.roi_box_zyx
    assert rec_array.organ_volumes_ml == rec_file.organ_volumes_ml
    assert rec_array.input_size_xyz == tuple(reversed(canon.shape))
    assert rec_array.input_spacing_xyz == tuple(reversed(canon_spacing))
    assert rec_array.orientation == "canonical" and rec_array.model == rec_file.model


def test_segment_array_constant_and_bad_input(segmenter):
    rec = CaseRecord()
    out = segmenter.segment_array(np.full((6, 8, 8), 3.0, np.float32), (2.0, 2.0, 2.0), "PET", rec)
    assert out.shape == (6, 8, 8) and out.dtype == np.uint8 and not out.any()
    assert rec.input_size_xyz == (8, 8, 6) and rec.modality == "PET"
    with pytest.raises(ValueError, match="3D"):
        segmenter.segment_array(np.zeros((8, 8), np.float32), (2.0, 2.0, 2.0), "MRI")
    with pytest.raises(ValueError, match="spacing"):
        segmenter.segment_array(np.zeros((4, 8, 8), np.float32), (2.0, 0.0, 2.0), "MRI")
    bad = np.zeros((4, 8, 8), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segmenter.segment_array(bad, (2.0, 2.0, 2.0), "MRI")


SCRIPT = """
import sys
sys.modules["SimpleITK"] = None  # any import of SimpleITK now raises ImportError
import numpy as np
from inference.pipeline import EngineOptions, Segmenter
canon = np.random.default_rng(0).normal(size=(12, 24, 20)).astype(np.float32)
canon[4:8, 8:16, 6:14] += 10.0
for backend in ("torch", "onnx"):
    seg = Segmenter(EngineOptions(weights_dir=sys.argv[1], device="cpu", backend=backend, threads=1))
    out = seg.segment_array(canon, (4.0, 3.0, 3.0), "MRI")
    assert out.shape == canon.shape and out.dtype == np.uint8, (backend, out.shape, out.dtype)
"""


def test_segment_array_runs_without_simpleitk(random_model):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(random_model)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
