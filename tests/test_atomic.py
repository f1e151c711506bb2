"""inference.atomic: the one write-then-rename helper of the project."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from inference.atomic import atomic_path, copy_file, temporary_name, write_csv, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_the_temporary_keeps_the_suffix_so_format_by_name_writers_work(tmp_path):
    path = tmp_path / "sub" / "mask.nii.gz"
    assert temporary_name(path).name.endswith(".nii.gz") and temporary_name(path).parent == path.parent
    with atomic_path(path, mkdir=True) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8)), str(tmp), True)
    assert sitk.ReadImage(str(path)).GetSize() == (4, 3, 2)


def test_text_csv_and_copies(tmp_path):
    write_text(tmp_path / "t.txt", "x\n")
    write_csv(tmp_path / "d" / "t.csv", ["a", "b"], [[1, 2], [3, 4]], mkdir=True)
    assert (tmp_path / "d" / "t.csv").read_text().splitlines() == ["a,b", "1,2", "3,4"]
    copy_file(tmp_path / "t.txt", tmp_path / "u.txt")
    assert (tmp_path / "u.txt").read_text() == "x\n"
    assert (tmp_path / "t.txt").read_text() == "x\n"
