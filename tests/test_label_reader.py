"""The one label-map reader of the training tools (inference.io.read_label_map): one value check, one geometry
rule, the file named in every refusal."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from inference.io import GEOMETRY_ATOL_MM, grid_difference, read_label_map

from helpers import write_image


def _write(tmp_path, arr, name="lab.nii.gz", **geo):
    return write_image(arr, tmp_path / name, **geo), tmp_path / name


def test_values_come_back_as_uint8_and_bad_values_are_refused(tmp_path):
    arr = np.zeros((3, 4, 5), np.int16)
    arr[1, 2, 3], arr[2, 0, 0] = 13, 7
    _, path = _write(tmp_path, arr)
    image, got = read_label_map(path, max_label=13)
    assert got.dtype == np.uint8 and np.array_equal(got, arr) and image.GetSize() == (5, 4, 3)
    _, fpath = _write(tmp_path, arr.astype(np.float32), "float.nii.gz")      # whole numbers stored as float: fine
    assert np.array_equal(read_label_map(fpath)[1], arr)
    for bad, name, match in ((arr.astype(np.float32) + 0.5, "half.nii.gz", "non-integer"),
                             (arr - 1, "neg.nii.gz", r"-1\.\.12 are outside 0\.\.13"),
                             (arr + 1, "high.nii.gz", r"1\.\.14 are outside 0\.\.13")):
        _, p = _write(tmp_path, bad, name)
        with pytest.raises(ValueError, match=match) as err:
            read_label_map(p, max_label=13)
        assert name in str(err.value)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        read_label_map(tmp_path / "broken.nii.gz")


def test_the_geometry_rule(tmp_path):
    arr = np.zeros((3, 4, 5), np.uint8)
    geo = dict(spacing=(0.8, 0.8, 5.0), origin=(10.0, -20.0, 30.0), direction=(1, 0, 0, 0, -1, 0, 0, 0, 1))
    ref = write_image(np.zeros((3, 4, 5), np.float32), tmp_path / "scan.nii.gz", **geo)
    _, same = _write(tmp_path, arr, "same.nii.gz", **geo)
    assert read_label_map(same, reference=ref)[1].shape == (3, 4, 5)
    near = dict(geo, origin=(10.0 + GEOMETRY_ATOL_MM / 2, -20.0, 30.0))
    _, p = _write(tmp_path, arr, "near.nii.gz", **near)
    assert read_label_map(p, reference=ref)[0] is not None
    for name, change, match in (("shifted.nii.gz", dict(origin=(10.0, -20.0, 30.01)), "differs by up to 0.01 mm"),
                                ("spacing.nii.gz", dict(spacing=(0.8, 0.81, 5.0)), "voxel grid differs"),
                                ("flipped.nii.gz", dict(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), "voxel grid differs")):
        _, p = _write(tmp_path, arr, name, **dict(geo, **change))
        with pytest.raises(ValueError, match=match) as err:
            read_label_map(p, reference=ref)
        assert name in str(err.value) and "not on its scan's grid" in str(err.value)
    _, small = _write(tmp_path, arr[:, :3], "small.nii.gz", **geo)
    with pytest.raises(ValueError, match=r"size \(5, 3, 3\) differs from \(5, 4, 3\)"):
        read_label_map(small, reference=ref)
    assert grid_difference(ref, ref) is None


def test_a_four_d_file_is_refused(tmp_path):
    img = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))] * 2)
    sitk.WriteImage(img, str(tmp_path / "four.nii.gz"))
    with pytest.raises(ValueError, match="four.nii.gz"):
        read_label_map(tmp_path / "four.nii.gz")
