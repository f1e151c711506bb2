"""Voxel spacing in physical axes and resampling a scan to a target spacing (SimpleITK, linear).

Spacings here are in PHYSICAL order (x, y, z) of the patient frame (LPS), not in index order, so that a sagittal
or a permuted scan is compared with, and resampled to, the CT median along the right anatomical axes. The
index axis that runs closest to each physical axis is found with the engine's orientation logic.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from inference.orientation import orientation_from_direction
from inference.resample import shape_at_spacing


def physical_spacing_xyz(image: sitk.Image) -> tuple[float, float, float]:
    """Spacing (mm) along physical x, y, z: the spacing of the index axis nearest to each physical axis."""
    orient = orientation_from_direction(image.GetDirection())
    zyx = orient.spacing(tuple(reversed(image.GetSpacing())))  # canonical array axes are physical z, y, x
    return tuple(float(v) for v in reversed(zyx))  # type: ignore[return-value]


def index_spacing_for(image: sitk.Image, spacing_xyz_mm) -> tuple[float, float, float]:
    """ITK index-order spacing that puts physical spacing `spacing_xyz_mm` on `image`'s index axes."""
    orient = orientation_from_direction(image.GetDirection())
    target_zyx = tuple(reversed([float(v) for v in spacing_xyz_mm]))
    # original array order (z, y, x of the index): canonical axis a is original axis axes_order[a]
    array_spacing = [target_zyx[a] for a in np.argsort(orient.axes_order)]
    return tuple(reversed(array_spacing))  # type: ignore[return-value]


def same_spacing(a, b, rel_tol: float = 1e-3) -> bool:
    return all(abs(x - y) <= rel_tol * max(abs(x), abs(y)) for x, y in zip(a, b, strict=True))


def resample_to_spacing(image: sitk.Image, spacing_xyz_mm) -> sitk.Image:
    """`image` linearly resampled to physical spacing `spacing_xyz_mm`, covering the same physical extent.

    Direction is kept; the new grid's outer voxel edges start where the old ones start (origin moved by half the
    change of spacing), size = round(extent / new spacing), at least 1. Integer images are rounded and cast back
    to their pixel type (clipped to its range); float images stay float32. Linear interpolation near the last
    voxel extrapolates the edge value (ITK treats [-0.5, size - 0.5] as inside), never a fill value.
    """
    old_sp = np.asarray(image.GetSpacing(), dtype=np.float64)
    new_sp = np.asarray(index_spacing_for(image, spacing_xyz_mm), dtype=np.float64)
    new_size = shape_at_spacing(image.GetSize(), old_sp, new_sp)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    new_origin = np.asarray(image.GetOrigin(), dtype=np.float64) + direction @ ((new_sp - old_sp) / 2.0)
    array = sitk.GetArrayViewFromImage(image)
    fill = float(array.min())
    resampled = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkLinear, tuple(new_origin),
                              tuple(new_sp), image.GetDirection(), fill, sitk.sitkFloat32)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        values = np.clip(np.rint(sitk.GetArrayViewFromImage(resampled)), info.min, info.max).astype(array.dtype)
        out = sitk.GetImageFromArray(values)
        out.CopyInformation(resampled)
        return out
    return resampled
