"""The body the renderers paint into, from a label map and a binary body mask only.

`body_mask_from_image` derives the binary body mask from any scan (threshold, hole filling, largest component):
only that binary mask of a source scan enters a render. `body_layers` lays out skin, subcutaneous fat (of smoothly
varying thickness) and the abdominal muscle wall by the in-plane distance to the body surface; `_vertebra` puts a
vertebra (cortical shell, cancellous core) behind the organs at the posterior midline. The PET painter (`pet.py`)
and the random-contrast painter (`synth.py`) share them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from inference.labels import LATERAL_PAIRS

KIDNEYS = LATERAL_PAIRS[0]   # (right, left) kidney


def _smooth_field(shape, spacing, length_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length `length_mm`."""
    white = rng.standard_normal(shape).astype(np.float32)
    sigma = [max(length_mm / s, 0.0) for s in spacing]
    f = ndimage.gaussian_filter(white, sigma, mode="reflect")
    sd = float(f.std())
    return f / sd if sd > 0 else f


def _inplane_depth(body: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of each body voxel to the body surface within its slice (axis 0 = z)."""
    depth = np.zeros(body.shape, dtype=np.float32)
    for z in range(body.shape[0]):
        if body[z].any():
            depth[z] = ndimage.distance_transform_edt(body[z], sampling=spacing[1:])
    return depth


def body_layers(body: np.ndarray, spacing, rng: np.random.Generator, skin_mm: float, fat_mm: tuple[float, float],
                muscle_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(skin, subcutaneous fat, muscle wall, interior) masks by in-plane depth below the body surface; the fat
    layer's thickness varies smoothly within `fat_mm` (one random field drawn from `rng`)."""
    depth = _inplane_depth(body, spacing)
    fat_thickness = np.interp(_smooth_field(body.shape, spacing, 40.0, rng), [-2.0, 2.0], list(fat_mm))
    skin = body & (depth <= skin_mm)
    fat = body & ~skin & (depth <= skin_mm + fat_thickness)
    muscle = body & ~skin & ~fat & (depth <= skin_mm + fat_thickness + muscle_mm)
    return skin, fat, muscle, body & ~skin & ~fat & ~muscle


def _vertebra(body: np.ndarray, labels: np.ndarray, spacing, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(cortical shell, cancellous core) masks of a cylinder at the posterior midline of each slice's body,
    posterior to the kidneys' centre when they exist. Array axis 1 (y) increases towards posterior in the
    canonical CHAOS/FLARE frame; the caller passes labels in that frame."""
    shell = np.zeros(body.shape, dtype=bool)
    core = np.zeros(body.shape, dtype=bool)
    yy, xx = np.indices(body.shape[1:], dtype=np.float32)
    for z in range(body.shape[0]):
        if not body[z].any():
            continue
        ys, xs = np.nonzero(body[z])
        cx = 0.5 * (xs.min() + xs.max())
        posterior = ys.max()
        cy = posterior - (radius_mm + 25.0) / spacing[1]
        r = np.sqrt(((yy - cy) * spacing[1]) ** 2 + ((xx - cx) * spacing[2]) ** 2)
        inside = (r <= radius_mm) & body[z] & (labels[z] == 0)
        core[z] = inside & (r <= radius_mm - 3.0)
        shell[z] = inside & ~core[z]
    return shell, core


def body_mask_from_image(image: np.ndarray, spacing_zyx, labels: np.ndarray | None = None) -> np.ndarray:
    """Binary body mask of a scan: smoothed image above a threshold between background and tissue (half the
    99th percentile of the non-zero voxels' 5th-95th range start), holes filled per slice, largest 3D component,
    organs (when `labels` is given) always inside. Returns bool (z, y, x)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {a.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    smooth = ndimage.gaussian_filter(a, [0.0, 2.0 / spacing[1], 2.0 / spacing[2]])
    lo, hi = np.percentile(smooth, [2.0, 99.0])
    if hi <= lo:
        raise ValueError("constant image: no body can be found")
    mask = smooth > lo + 0.12 * (hi - lo)
    mask = ndimage.binary_opening(mask, structure=np.ones((1, 3, 3), bool))
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    if labels is not None:
        mask |= np.asarray(labels) > 0
        for z in range(mask.shape[0]):
            mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask
