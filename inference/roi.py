"""Region of interest: bounding boxes, margins in mm, crop and its inverse uncrop."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """Half-open voxel box [start, stop) per array axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @classmethod
    def whole(cls, shape) -> "Box":
        return cls(start=(0, 0, 0), stop=tuple(int(s) for s in shape))  # type: ignore[arg-type]


def foreground_box(labels: np.ndarray) -> Box | None:
    """Smallest box holding every non-zero voxel, or None for an empty map."""
    if not labels.any():
        return None
    start, stop = [], []
    for axis in range(labels.ndim):
        other = tuple(a for a in range(labels.ndim) if a != axis)
        hit = np.flatnonzero(labels.any(axis=other))
        start.append(int(hit[0]))
        stop.append(int(hit[-1]) + 1)
    return Box(tuple(start), tuple(stop))  # type: ignore[arg-type]


def scale_box(box: Box, from_shape, to_shape) -> Box:
    """Map a box on a grid of `from_shape` to the grid of `to_shape` covering the same extent (outward rounding)."""
    start, stop = [], []
    for a, b, n_from, n_to in zip(box.start, box.stop, from_shape, to_shape):
        f = n_to / n_from
        start.append(max(0, int(math.floor(a * f + 1e-9))))
        stop.append(min(int(n_to), int(math.ceil(b * f - 1e-9))))
    return Box(tuple(start), tuple(stop))  # type: ignore[arg-type]


def expand_box(box: Box, margin_mm, spacing_mm, shape) -> Box:
    """Grow `box` by `margin_mm` on each side (rounded up to whole voxels) and clip it to the image."""
    start, stop = [], []
    for a, b, m, s, n in zip(box.start, box.stop, margin_mm, spacing_mm, shape):
        vox = int(math.ceil(m / s - 1e-9))
        start.append(max(0, a - vox))
        stop.append(min(int(n), b + vox))
    return Box(tuple(start), tuple(stop))  # type: ignore[arg-type]


def crop(arr: np.ndarray, box: Box) -> np.ndarray:
    return arr[box.slices]


def uncrop(cropped: np.ndarray, box: Box, shape, fill=0) -> np.ndarray:
    """Inverse of `crop`: place `cropped` at `box` in a new array of `shape` filled with `fill`."""
    if tuple(cropped.shape) != box.shape:
        raise ValueError(f"cropped array {cropped.shape} does not match box {box.shape}")
    out = np.full(tuple(shape), fill, dtype=cropped.dtype)
    out[box.slices] = cropped
    return out
