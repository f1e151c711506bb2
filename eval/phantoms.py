"""Synthetic MR-like volumes of any size (benchmarks, demo inputs when no real scan is at hand)."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def synthetic_mr(size_xyz, seed: int = 0) -> sitk.Image:
    """MR-like phantom: body ellipse, a few bright/dark organ ellipsoids, noise (int16)."""
    x, y, z = size_xyz
    spacing_xy = 420.0 / max(x, y)
    spacing_z = float(np.clip(350.0 / z, 1.0, 8.0))
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.ogrid[:z, :y, :x]
    nz, ny, nx = (zz - z / 2) / (z / 2), (yy - y / 2) / (y / 2), (xx - x / 2) / (x / 2)
    arr = np.where(ny ** 2 / 0.6 + nx ** 2 / 0.85 < 1, 300.0, 0.0) * np.ones((z, 1, 1))
    for (cz, cy, cx, r, v) in [(0.1, -0.1, -0.35, 0.35, 500), (0.0, 0.2, 0.4, 0.2, 650), (-0.3, 0.35, -0.3, 0.12, 800),
                               (-0.3, 0.35, 0.3, 0.12, 800)]:
        arr[((nz - cz) ** 2 + (ny - cy) ** 2 + (nx - cx) ** 2) < r ** 2] = v
    arr += rng.normal(0, 20, arr.shape)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((spacing_xy, spacing_xy, spacing_z))
    return img
