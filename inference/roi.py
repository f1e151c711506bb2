"""Region of interest: bounding boxes, margins in mm, a plausibility cap on the organs' extent, crop and uncrop."""
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
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

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


def _cap_voxels(max_extent_mm, spacing_mm) -> tuple[int, int, int]:
    """The cap in whole voxels per axis: floor(cap_mm / spacing_mm), at least 1 (1e-9 voxel of slack, so
    300 mm at 3.0 mm is 100 voxels even where the division lands just below 100)."""
    return tuple(max(1, math.floor(c / s + 1e-9)) for c, s in zip(max_extent_mm, spacing_mm, strict=True))  # type: ignore


def plausible_organ_box(labels: np.ndarray, spacing_mm, max_extent_mm) -> tuple[Box | None, list[int]]:
    """Union of the organs' boxes, limited to a plausible physical extent: (box, dropped organ labels).

    `labels` is a label map (z, y, x; 0 = background, every other value an organ), `spacing_mm` its voxel size and
    `max_extent_mm` the largest extent (z, y, x) the union of organ boxes may have (before any margin). The cap in
    voxels is floor(cap_mm / spacing_mm) per axis, at least 1 voxel; a box fits when its stop - start is at most
    that on every axis.

    * Empty map: (None, []).
    * The union of all organ boxes fits (this is `foreground_box(labels)`): it is returned, nothing dropped.
    * Otherwise the subset of organs whose union box fits and whose total voxel count is largest is kept: its union
      box is returned with the sorted labels of the other organs. The search is exact: per axis the candidate
      window starts are the organs' box starts, a window is [start, start + cap), and an organ is kept when its box
      lies inside the windows of all three axes; every combination of starts is tried (at most n_organs**3, about
      2200 for the 13 FLARE organs, with n_organs**4 booleans of memory). Ties in voxel count go to the
      lexicographically smallest sorted label tuple.
    * No organ fits on its own: the organ with the most voxels (ties: the lowest label) is kept, its box shrunk to
      the cap on each axis where it is larger, centred on the box (start + (length - cap) // 2, so an odd excess
      leaves the extra voxel at the end); every other organ is reported dropped. An organ that fits is always
      preferred to an oversized one, whatever their voxel counts.
    """
    if len(max_extent_mm) != 3 or min(max_extent_mm) <= 0 or len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"need three positive spacings and caps, got {spacing_mm} and {max_extent_mm}")
    union = foreground_box(labels)
    if union is None:
        return None, []
    cap = _cap_voxels(max_extent_mm, spacing_mm)
    if all(n <= c for n, c in zip(union.shape, cap, strict=True)):
        return union, []
    counts = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
    organs = [int(k) for k in np.flatnonzero(counts[1:]) + 1]
    boxes = {k: foreground_box(labels == k) for k in organs}
    start = np.array([boxes[k].start for k in organs])  # (n, 3)
    stop = np.array([boxes[k].stop for k in organs])
    voxels = counts[organs].astype(np.int64)
    # inside[a][i, j]: organ j lies inside the window of axis a starting at the i-th candidate start
    inside = []
    for a in range(3):
        cand = np.unique(start[:, a])
        inside.append((start[None, :, a] >= cand[:, None]) & (stop[None, :, a] <= cand[:, None] + cap[a]))
    kept = inside[0][:, None, None, :] & inside[1][None, :, None, :] & inside[2][None, None, :, :]
    totals = kept.astype(np.int64) @ voxels  # (n_z, n_y, n_x)
    best = int(totals.max())
    if best > 0:
        # the lexicographically smallest label tuple among the best subsets (columns follow ascending labels)
        chosen = min(tuple(kept[i, j, k].nonzero()[0].tolist()) for i, j, k in np.argwhere(totals == best))
        box = Box(tuple(int(v) for v in start[list(chosen)].min(axis=0)),  # type: ignore[arg-type]
                  tuple(int(v) for v in stop[list(chosen)].max(axis=0)))  # type: ignore[arg-type]
        return box, [k for j, k in enumerate(organs) if j not in chosen]
    largest = organs[int(np.argmax(voxels))]  # argmax: the first (lowest label) of equal counts
    b = boxes[largest]
    new_start, new_stop = [], []
    for a0, b0, c in zip(b.start, b.stop, cap, strict=True):
        if b0 - a0 > c:
            a0 = a0 + (b0 - a0 - c) // 2
            b0 = a0 + c
        new_start.append(a0)
        new_stop.append(b0)
    return Box(tuple(new_start), tuple(new_stop)), [k for k in organs if k != largest]  # type: ignore[arg-type]


def scale_box(box: Box, from_shape, to_shape) -> Box:
    """Map a box on a grid of `from_shape` to the grid of `to_shape` covering the same extent (outward rounding)."""
    start, stop = [], []
    for a, b, n_from, n_to in zip(box.start, box.stop, from_shape, to_shape, strict=True):
        f = n_to / n_from
        start.append(max(0, int(math.floor(a * f + 1e-9))))
        stop.append(min(int(n_to), int(math.ceil(b * f - 1e-9))))
    return Box(tuple(start), tuple(stop))  # type: ignore[arg-type]


def expand_box(box: Box, margin_mm, spacing_mm, shape) -> Box:
    """Grow `box` by `margin_mm` on each side (rounded up to whole voxels) and clip it to the image."""
    start, stop = [], []
    for a, b, m, s, n in zip(box.start, box.stop, margin_mm, spacing_mm, shape, strict=True):
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


def touched_faces(labels: np.ndarray) -> list[tuple[int, int]]:
    """Faces of the array that hold a non-zero voxel, as (axis, side) with side 0 = low face, 1 = high face."""
    out = []
    for axis in range(labels.ndim):
        for side, index in ((0, 0), (1, labels.shape[axis] - 1)):
            if np.take(labels, index, axis=axis).any():
                out.append((axis, side))
    return out


def grow_faces(box: Box, faces, grow_mm, spacing_mm, shape, max_shape=None) -> Box:
    """Move the listed faces of `box` outward by `grow_mm` (rounded up to whole voxels), clipped to the image
    `shape` and, when given, to `max_shape` voxels per axis (a face that would pass it stops there). A face on
    the image border stays. Inverse-free: growing never shrinks the box."""
    start, stop = list(box.start), list(box.stop)
    for axis, side in faces:
        vox = int(math.ceil(grow_mm / spacing_mm[axis] - 1e-9))
        limit = int(shape[axis]) if max_shape is None else int(max_shape[axis])
        room = max(0, limit - (stop[axis] - start[axis]))
        vox = min(vox, room)
        if side == 0:
            start[axis] = max(0, start[axis] - vox)
        else:
            stop[axis] = min(int(shape[axis]), stop[axis] + vox)
    return Box(tuple(start), tuple(stop))  # type: ignore[arg-type]
