"""Resampling between a voxel grid and a grid at another spacing, with the half-voxel convention.

Output voxel o along an axis of n_in -> n_out voxels samples input coordinate (o + 0.5) * n_in / n_out - 0.5
(the convention of torch's interpolate(align_corners=False) and of skimage's resize), so both grids cover the same
physical extent. Images use separable linear interpolation; labels use nearest neighbour with the same mapping,
which is how network-resolution labels go back to the input grid (`labels_to_shape`), or, where a card asks for
it, class probabilities are interpolated linearly and their argmax taken (`probabilities_to_labels`).
"""
from __future__ import annotations

import itertools

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


def _linear_coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output voxel along one axis: the lower and upper source index and the upper one's weight under the
    half-voxel convention; the upper index is the lower one where its weight is 0 (a grid point on a source voxel)."""
    coords = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(coords).astype(np.intp)
    w = coords - i0
    i1 = np.where(w > 0, np.minimum(i0 + 1, n_in - 1), i0)
    return i0, i1, w.astype(np.float32)


def _linear_axis(arr: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = arr.shape[axis]
    if n_in == n_out:
        return arr.astype(np.float32, copy=False)
    i0, i1, w = _linear_coords(n_in, n_out)
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


def probabilities_to_labels(probs: np.ndarray, channels: np.ndarray, values: np.ndarray, out_shape,
                            out: np.ndarray | None = None, slab_voxels: int = 1 << 22) -> np.ndarray:
    """A label map of `out_shape` from class probabilities on a coarser (or finer) grid: nnU-Net's way back
    (probabilities resampled linearly, then argmax) instead of `labels_to_shape`'s nearest labels.

    `probs` (C, z, y, x) float, `channels` (z, y, x) the channel each source voxel is labelled with (the argmax of
    `probs`, or a cleaned-up map whose changes `probs` holds as one-hot vectors), `values` (C,) the label written
    for each channel. Half-voxel convention as `resample_linear`. Exact, at the cost of the boundary only: where
    every source voxel with a weight in an output voxel has the same channel, the interpolated probabilities have
    that argmax too (a convex combination keeps a common maximum), which is the nearest label; only the other
    voxels are interpolated. There the label is the argmax unless no weighted source voxel carries it (two
    neighbours' second choice, e.g. between liver and background): then the nearest label, so no label appears
    where none of its source voxels is. Results are written slab by slab along axis 0 (into `out`, an array or a
    writable view, when given)."""
    out_shape = tuple(int(n) for n in out_shape)
    values = np.asarray(values, dtype=np.uint8)
    if probs.shape[1:] != channels.shape or probs.shape[0] != len(values):
        raise ValueError(f"probabilities {probs.shape}, channels {channels.shape} and {len(values)} values disagree")
    if out is None:
        out = np.empty(out_shape, dtype=np.uint8)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {out.shape}, expected {out_shape}")
    axes = [_linear_coords(n_in, n_out) for n_in, n_out in zip(channels.shape, out_shape, strict=True)]
    near = [nearest_indices(n_in, n_out) for n_in, n_out in zip(channels.shape, out_shape, strict=True)]
    # mixed[a, b, c]: the source cell from voxel (a, b, c) to its upper neighbours (along the resampled axes) holds
    # more than one channel
    mixed = np.zeros(channels.shape, dtype=bool)
    moved = [ax for ax, (_, _, w) in enumerate(axes) if (w > 0).any()]
    for corner in itertools.product((0, 1), repeat=len(moved)):
        shifted = channels
        for ax, step in zip(moved, corner, strict=True):
            if step:
                shifted = np.take(shifted, np.minimum(np.arange(1, channels.shape[ax] + 1), channels.shape[ax] - 1),
                                  axis=ax)
        mixed |= shifted != channels
    rows = max(1, slab_voxels // max(1, out_shape[1] * out_shape[2]))
    for z0 in range(0, out_shape[0], rows):
        zs = slice(z0, z0 + rows)
        slab = values[channels[np.ix_(near[0][zs], near[1], near[2])]]
        where = np.nonzero(mixed[np.ix_(axes[0][0][zs], axes[1][0], axes[2][0])])
        if len(where[0]):
            oz = where[0] + z0
            picks = [(ax[0][o], ax[1][o], ax[2][o]) for ax, o in zip(axes, (oz, where[1], where[2]), strict=True)]
            slab[where] = _interpolated(probs, channels, values, picks, moved, slab[where])
        out[zs] = slab
    return out


def _interpolated(probs, channels, values, picks, moved, nearest) -> np.ndarray:
    """The labels of the output voxels whose source indices and weights per axis are `picks` ((i0, i1, w) each;
    axes not in `moved` are not resampled: i1 = i0): the argmax of the linearly interpolated probabilities where
    a weighted source voxel carries it, else `nearest`."""
    total = np.zeros((probs.shape[0], len(nearest)), dtype=np.float32)
    corner_channels, corner_weights = [], []
    for corner in itertools.product(*[(0, 1) if ax in moved else (0,) for ax in range(3)]):
        idx = tuple(p[1] if c else p[0] for p, c in zip(picks, corner, strict=True))
        weight = np.ones(len(nearest), dtype=np.float32)
        for p, c in zip(picks, corner, strict=True):
            weight *= p[2] if c else 1.0 - p[2]
        total += probs[(slice(None),) + idx].astype(np.float32) * weight
        corner_channels.append(channels[idx])
        corner_weights.append(weight)
    best = np.argmax(total, axis=0)
    carried = np.zeros(len(nearest), dtype=bool)
    for ch, weight in zip(corner_channels, corner_weights, strict=True):
        carried |= (ch == best) & (weight > 0)
    return np.where(carried, values[best], nearest)
