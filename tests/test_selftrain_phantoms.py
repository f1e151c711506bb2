"""Constructed 13-organ label maps for the self-training tests (helpers), and checks of their stated layout.

Layout of `phantom`: a (32, 48, 48) grid; the y-x plane is cut into 4 x 4 cells of 12 x 12 voxels; organ o sits in
cell CELL[o] as a box of `half` voxels around the cell centre (z: slices 8..24 +- jitter). The corner cells hold
small organs, so the bounding box of all organs is set by them; the liver (cell 5) is interior and the largest,
so shrinking it changes its R_1 but not the box.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import write_image

SHAPE = (32, 48, 48)
CELL = {1: 5, 2: 0, 3: 3, 4: 1, 5: 2, 6: 4, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 12, 13: 15}


def organ_box(organ: int, half: int, z=(8, 24)) -> tuple[slice, slice, slice]:
    cy, cx = divmod(CELL[organ], 4)
    y0, x0 = cy * 12 + 6, cx * 12 + 6
    return slice(z[0], z[1]), slice(y0 - half, y0 + half), slice(x0 - half, x0 + half)


def phantom(seed: int | None = None, organs=range(1, 14), liver_half: int = 5, jitter: bool = True) -> np.ndarray:
    """uint8 label map; with `seed`, each organ's half-size and z extent vary by +-1 voxel (CT-like spread)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(SHAPE, dtype=np.uint8)
    for o in organs:
        j = (lambda: int(rng.integers(-1, 2))) if (jitter and seed is not None) else (lambda: 0)
        half = (liver_half if o == 1 else 3) + (j() if o != 1 or liver_half > 2 else 0)
        out[organ_box(o, half, (8 + j(), 24 + j()))] = o
    return out


def write_labels_nii(arr: np.ndarray, path: Path, spacing=(1.5, 1.5, 2.5)) -> None:
    write_image(arr.astype(np.uint8), path, spacing=spacing)


def write_ct_label_set(folder: Path, n: int = 8, first_seed: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_labels_nii(phantom(first_seed + i), folder / f"ct_{i:03d}.nii.gz")
    return folder


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
