"""Resampling between a voxel grid and a grid at another spacing, with the half-voxel convention.

Output voxel o along an axis of n_in -> n_out voxels samples input coordinate (o + 0.5) * n_in / n_out - 0.5
(the convention of torch's interpolate(align_corners=False) and of skimage's resize), so both grids cover the same
physical extent. Images use separable linear interpolation; labels use nearest neighbour with the same mapping,
which is how network-resolution labels go back to the input grid (`labels_to_shape`).
"""
from __future__ import annotations

import numpy as np


def shape_at_spacing(shape, spacing_mm, target_spacing_mm) -> tuple[int, int, int]:
    """Number of voxels covering the same extent at `target_spacing_mm` (at least 1 per axis); a target of None
    keeps the axis as it is (no resampling along it)."""
    return tuple(int(n) if t is None else max(1, int(round(n * s / t)))  # type: ignore
                 for n, s, t in zip(shape, spacing_mm, target_spacing_mm, strict=True))


def spacing_of_shape(shape, spacing_mm, grid_shape) -> tuple[float, float, float]:
    """The true voxel size (mm) of a grid of `grid_shape` spanning a region of `shape` voxels of `spacing_mm`: the
    inverse of `shape_at_spacing`, which rounds, so not exactly the spacing asked for there."""
    return tuple(n * s / m for n, s, m in zip(shape, spacing_mm, grid_shape, strict=True))  # type: ignore[return-value]


def _linear_axis(arr: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = arr.shape[axis]
    if n_in == n_out:
        return arr.astype(np.float32, copy=False)
    coords = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    coords = np.clip(coords, 0.0, n_in - 1)
    i0 = np.floor(coords).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (coords - i0).astype(np.float32)
    shape = [1] * arr.ndim
    shape[axis] = n_out
    w = w.reshape(shape)
    lo = np.take(arr, i0, axis=axis).astype(np.float32, copy=False)
    hi = np.take(arr, i1, axis=axis).astype(np.float32, copy=False)
    lo *= 1.0 - w
    hi *= w
    lo += hi
    return lo


def resample_linear(arr: np.ndarray, out_shape) -> np.ndarray:
    """Trilinear resampling of a 3D array to `out_shape` (float32).

    Axes are processed in order of decreasing reduction so intermediate arrays stay small for large inputs.
    """
    out_shape = tuple(int(v) for v in out_shape)
    order = sorted(range(arr.ndim), key=lambda a: out_shape[a] / arr.shape[a])
    out = arr
    for axis in order:
        out = _linear_axis(out, axis, out_shape[axis])
    return np.ascontiguousarray(out, dtype=np.float32)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of `n_out` output voxels under the half-voxel convention."""
    idx = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def labels_to_shape(labels: np.ndarray, out_shape, out: np.ndarray | None = None,
                    slab_voxels: int = 1 << 24) -> np.ndarray:
    """Nearest-neighbour resampling of a label map (any integer dtype) to `out_shape`.

    With `out` (an array or a writable view of `out_shape`), results are written into it slab by slab along axis
    0, so no temporary of the full output size is made.
    """
    out_shape = tuple(int(n) for n in out_shape)
    idx = [nearest_indices(n_in, n_out) for n_in, n_out in zip(labels.shape, out_shape, strict=True)]
    if out is None:
        out = np.empty(out_shape, dtype=labels.dtype)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {out.shape}, expected {out_shape}")
    rows = max(1, slab_voxels // max(1, out_shape[1] * out_shape[2]))
    for z0 in range(0, out_shape[0], rows):
        out[z0:z0 + rows] = labels[np.ix_(idx[0][z0:z0 + rows], idx[1], idx[2])]
    return out
