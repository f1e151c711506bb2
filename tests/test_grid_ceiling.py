"""The grid-ceiling diagnostic (benchmarks/grid_ceiling.py): analytic cases on synthetic label maps."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks import grid_ceiling


def _box(lo: int, hi: int) -> np.ndarray:
    labels = np.zeros((3, 24, 24), np.uint8)
    labels[:, lo:hi, lo:hi] = 1
    return labels


@pytest.mark.parametrize("back", grid_ceiling.RETURNS)
def test_a_box_on_the_grid_lines_loses_nothing(back):
    # 1 mm map, 2 mm grid: grid voxel i covers map voxels 2i and 2i+1, so a box on even edges is exact
    d = grid_ceiling.ceiling(_box(4, 12), (5.0, 1.0, 1.0), 2.0, (1,), back)
    assert d[1] == pytest.approx(1.0)


def test_a_box_off_the_grid_lines_loses_its_edge_with_nearest_labels():
    # edges at 5 and 13: every edge grid voxel holds half of the organ; ties go to the background (the first
    # class), so the box comes back as rows and columns 6..11 (6 of 8): Dice 2 * 36 / (64 + 36)
    d = grid_ceiling.ceiling(_box(5, 13), (5.0, 1.0, 1.0), 2.0, (1,), grid_ceiling.RETURNS[0])
    assert d[1] == pytest.approx(72 / 100)


def test_the_script_writes_its_table_and_names_an_empty_folder(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    img = sitk.GetImageFromArray(_box(4, 12))
    img.SetSpacing((1.0, 1.0, 5.0))
    sitk.WriteImage(img, str(maps / "case_1.nii.gz"))
    assert grid_ceiling.main(["--labels", str(maps), "--out", str(tmp_path / "out"), "--organs", "1",
                              "--spacings", "2.0"]) == 0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| 2.0 mm | labels, nearest | 100.00 | 100.00 |" in table
    with pytest.raises(SystemExit, match="no label maps"):
        grid_ceiling.main(["--labels", str(tmp_path / "out"), "--out", str(tmp_path / "o2")])
