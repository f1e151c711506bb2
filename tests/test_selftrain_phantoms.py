"""Checks of the stated layout of the self-training tests' 13-organ label maps (tests/phantoms.py, `grid_phantom`).

Layout: a (32, 48, 48) grid; the y-x plane is cut into 4 x 4 cells of 12 x 12 voxels; organ o sits in
cell CELL[o] as a box of `half` voxels around the cell centre (z: slices 8..24 +- jitter). The corner cells hold
small organs, so the bounding box of all organs is set by them; the liver (cell 5) is interior and the largest,
so shrinking it changes its R_1 but not the box.
"""
from __future__ import annotations

import numpy as np

from phantoms import CELL, grid_phantom as phantom


def test_phantom_layout_liver_interior_and_every_organ_present():
    p = phantom(3)
    assert set(np.unique(p)) == set(range(14))
    # the corner organs bound the union box; the liver box lies strictly inside it
    zz, yy, xx = np.nonzero(p)
    ly, lx = np.nonzero((p == 1).any(axis=0))
    assert yy.min() < ly.min() and ly.max() < yy.max() and xx.min() < lx.min() and lx.max() < xx.max()
    small = phantom(3, liver_half=1)
    assert np.count_nonzero(small == 1) < np.count_nonzero(p == 1) / 20
    assert len(set(CELL.values())) == 13
