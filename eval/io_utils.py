"""Label-map reading the way the organizers do (atomic writes: inference.atomic)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["LabelMap", "LabelReadError", "read_label_map"]


class LabelReadError(Exception):
    """A label or prediction file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class LabelMap:
    """A label map as the organizers see it: uint8 array in nibabel (x, y, z) order plus header geometry."""

    path: Path
    data: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray


def read_label_map(path: Path) -> LabelMap:
    """Read a NIfTI label map like ``np.uint8(nib.load(path).get_fdata())``.

    Integer files without scaling are cast directly (same result, less memory).
    Spacing is ``header.get_zooms()[:3]`` (float32 values widened exactly).
    Raises LabelReadError (file named) for an unreadable file, fewer than 3
    dimensions, a 4-D file with more than one volume, non-finite values or values
    outside 0..255 (where the organizers' uint8 cast would be undefined or wrap).
    """
    try:
        image = nib.load(str(path))
        proxy = image.dataobj
        slope = getattr(proxy, "slope", 1.0)
        inter = getattr(proxy, "inter", 0.0)
        raw = np.asanyarray(proxy)
        if np.issubdtype(raw.dtype, np.integer) and slope in (1.0, None) and inter in (0.0, None):
            values = raw
        else:
            values = image.get_fdata()
        zooms = image.header.get_zooms()
        affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as error:  # nibabel raises many types (ImageFileError, EOFError, zlib.error...)
        raise LabelReadError(f"{path}: cannot read NIfTI ({type(error).__name__}: {error})") from error
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise LabelReadError(f"{path}: expected a 3-D label map, got shape {values.shape}")
    if values.size:
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise LabelReadError(f"{path}: label map contains NaN or infinite values")
        low, high = values.min(), values.max()
        if low < 0 or high >= 256:
            raise LabelReadError(f"{path}: label values outside 0..255 (min {low}, max {high})")
    data = np.ascontiguousarray(values.astype(np.uint8))
    spacing = tuple(float(z) for z in zooms[:3])
    return LabelMap(path=Path(path), data=data, spacing_mm=spacing, affine=affine)  # type: ignore[arg-type]
