"""Coronal and sagittal reslices of axial scans: the acquisition geometry of many kidney, MRCP and liver protocols.

A reslice is the scan resampled (linear; its label map by nearest neighbour, onto the same grid) onto a stack of
thick slices in another plane, with fine pixels within each slice, stored with the slice axis as the image's third
axis, as a scanner writes such a series:

| plane    | slice axis (thickness)  | in-plane axes (pixel)           |
|----------|-------------------------|---------------------------------|
| coronal  | front-back, 5.5 mm      | left-right, head-foot: 1.5 mm   |
| sagittal | left-right, 5.5 mm      | front-back, head-foot: 1.5 mm   |

The grid covers the scan's whole physical box; its direction is a proper rotation (determinant +1) built from the
scan's own axes, so an oblique scan stays oblique. Thick slices here are thin sampling planes of the resampled
scan, not slab averages: the point is the geometry the engine sees, many fine slices along head-foot.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

from inference.atomic import atomic_path

PLANES = ("coronal", "sagittal")
THICK_MM = 5.5
PIXEL_MM = 1.5


def _axes(image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image's three axis directions (unit vectors, physical), as ITK's direction matrix columns."""
    d = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    return d[:, 0], d[:, 1], d[:, 2]


def _patient_axes(image) -> dict[str, np.ndarray]:
    """Which of the image's axes runs left-right ('lr'), front-back ('ap'), head-foot ('si'): the axis closest to
    each LPS direction (x, y, z of the physical frame)."""
    axes = _axes(image)
    out = {}
    for name, k in (("lr", 0), ("ap", 1), ("si", 2)):
        i = int(np.argmax([abs(a[k]) for a in axes]))
        out[name] = axes[i] * math.copysign(1.0, axes[i][k])
    return out


def reslice_grid(image, plane: str, thick_mm: float = THICK_MM, pixel_mm: float = PIXEL_MM):
    """(size, spacing, origin, direction) of the `plane` reslice of `image`: ITK order, covering its box."""
    if plane not in PLANES:
        raise ValueError(f"unknown plane {plane!r} (known: {', '.join(PLANES)})")
    p = _patient_axes(image)
    cols = [p["lr"], p["si"], p["ap"]] if plane == "coronal" else [p["ap"], p["si"], p["lr"]]
    if np.linalg.det(np.stack(cols, axis=1)) < 0:
        cols[2] = -cols[2]
    spacing = (pixel_mm, pixel_mm, thick_mm)
    size_in = image.GetSize()
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([c - 0.5 for c in corner])
                        for corner in itertools.product(*[(0, n) for n in size_in])])
    proj = corners @ np.stack(cols, axis=1)                  # each corner along each new axis
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    size = [max(1, int(math.ceil((h - l) / s))) for l, h, s in zip(lo, hi, spacing, strict=True)]
    origin = sum((l + s / 2) * c for l, s, c in zip(lo, spacing, cols, strict=True))   # first voxel centre
    direction = tuple(float(v) for v in np.stack(cols, axis=1).ravel())
    return tuple(size), spacing, tuple(float(v) for v in origin), direction


def reslice(image, plane: str, labels: bool = False, thick_mm: float = THICK_MM, pixel_mm: float = PIXEL_MM):
    """`image` (SimpleITK) on its `plane` reslice grid: linear interpolation, or nearest neighbour for a label
    map (`labels`); outside the scan: the scan's minimum (0 for labels)."""
    import SimpleITK as sitk

    size, spacing, origin, direction = reslice_grid(image, plane, thick_mm, pixel_mm)
    fill = 0.0 if labels else float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor if labels else sitk.sitkLinear,
                         origin, spacing, direction, fill, image.GetPixelID())


def make_reslice_set(images: list[Path], labels: Path, out: Path, planes=PLANES) -> list[Path]:
    """out/images/<case>_<plane>_0000.nii.gz and out/labels/<case>_<plane>.nii.gz for every `<case>_0000.nii.gz`
    of `images` (its label map in `labels`) and plane. Existing files are kept; each written under a temporary
    name and renamed. Returns the images."""
    import SimpleITK as sitk

    from .stress import with_labels

    made = []
    for path, case, label in with_labels(images, labels):
        for plane in planes:
            dst_img = out / "images" / f"{case}_{plane}_0000.nii.gz"
            dst_lab = out / "labels" / f"{case}_{plane}.nii.gz"
            for src, dst, is_label in ((path, dst_img, False), (label, dst_lab, True)):
                if not dst.is_file():
                    with atomic_path(dst, mkdir=True) as tmp:
                        sitk.WriteImage(reslice(sitk.ReadImage(str(src)), plane, is_label), str(tmp),
                                        useCompression=True)
            made.append(dst_img)
    return made
