"""Sliding-window prediction with Gaussian blending, bounded in memory, returning labels (argmax).

Geometry follows nnU-Net v2: windows of `patch` with a target step of `step_size * patch`, spread evenly so the
first starts at 0 and the last ends at the image border; images smaller than a patch are zero-padded
symmetrically (zero = the normalised mean). Logits of overlapping windows are summed with a Gaussian weight
(sigma = patch / 8); the argmax of that sum is the argmax of nnU-Net's weight-normalised average, so no weight
map is accumulated. Windows are visited row by row along axis 0 and the accumulator only spans one row of
windows: voxels no later window can reach are turned into labels at once, so float logits are never held for the
whole volume.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]  # (1, channels, *patch) float32 -> (C, *patch) float32 logits


def compute_steps(image_size, patch_size, step_size: float) -> list[list[int]]:
    """Window start positions per axis (nnU-Net's compute_steps_for_sliding_window; a step is at least one voxel,
    which changes nothing for patches of 2 or more voxels at step sizes >= 0.5)."""
    if not 0 < step_size <= 1:
        raise ValueError("step_size must be in (0, 1]")
    steps = []
    for n, p in zip(image_size, patch_size, strict=True):
        if n < p:
            raise ValueError(f"image size {n} is smaller than the patch {p}: pad first")
        target = max(1.0, p * step_size)  # a step under one voxel would only repeat windows (a patch of 1 slice)
        num = int(np.ceil((n - p) / target)) + 1
        if num > 1:
            actual = (n - p) / (num - 1)
            steps.append([int(np.round(actual * i)) for i in range(num)])
        else:
            steps.append([0])
    return steps


def gaussian_weights(patch_size, sigma_scale: float = 1.0 / 8, dtype=np.float32) -> np.ndarray:
    """Separable Gaussian importance map centred on the patch (max 1, no zeros)."""
    g = np.ones((), dtype=np.float64)
    for p in patch_size:
        sigma = p * sigma_scale
        x = np.arange(p, dtype=np.float64) - p // 2
        g = np.multiply.outer(g, np.exp(-0.5 * (x / sigma) ** 2))
    g /= g.max()
    return g.astype(dtype)


def pad_to_patch(arr: np.ndarray, patch_size) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad each axis shorter than the patch (nnU-Net's split: floor below, rest above).

    Returns the padded array and the slices that cut the original back out (`unpad`).
    """
    pads, slicer = [], []
    for n, p in zip(arr.shape, patch_size, strict=True):
        diff = max(0, int(p) - n)
        below, above = diff // 2, diff - diff // 2
        pads.append((below, above))
        slicer.append(slice(below, below + n))
    if not any(b or a for b, a in pads):
        return arr, tuple(slicer)
    return np.pad(arr, pads, mode="constant", constant_values=0), tuple(slicer)


def unpad(arr: np.ndarray, slicer: tuple[slice, ...]) -> np.ndarray:
    return arr[slicer]


def sliding_window_labels(image: np.ndarray, patch_size, step_size: float, num_classes: int,
                          predict: PredictFn) -> np.ndarray:
    """Channel index (uint8) of the blended logits for every voxel of a normalised 3D `image` (z, y, x), or of a
    multi-channel one (C, z, y, x: every channel is fed to the network, windows cut over the last three axes)."""
    patch_size = tuple(int(p) for p in patch_size)
    image = np.asarray(image, dtype=np.float32)
    image = image[None] if image.ndim == 3 else image
    padded, slicer = pad_to_patch(image, (image.shape[0],) + patch_size)
    slicer, shape = slicer[1:], padded.shape[1:]
    steps = compute_steps(shape, patch_size, step_size)
    out = np.empty(shape, dtype=np.uint8)
    pz = patch_size[0]
    windows_per_row = list(itertools.product(steps[1], steps[2]))
    single = len(steps[0]) == 1 and len(windows_per_row) == 1
    weights = None if single else gaussian_weights(patch_size)
    acc = None if single else np.zeros((num_classes, pz) + shape[1:], dtype=np.float32)
    acc_start = 0
    for zs in steps[0]:
        if acc is not None and zs > acc_start:  # rows only move forward: [acc_start, zs) is final
            n = zs - acc_start
            out[acc_start:zs] = np.argmax(acc[:, :n], axis=0)
            acc[:, : pz - n] = acc[:, n:]
            acc[:, pz - n:] = 0
            acc_start = zs
        for ys, xs in windows_per_row:
            window = padded[:, zs:zs + pz, ys:ys + patch_size[1], xs:xs + patch_size[2]]
            logits = predict(window[None])
            if logits.shape != (num_classes,) + patch_size:
                raise RuntimeError(f"network returned {logits.shape}, expected {(num_classes,) + patch_size}")
            if acc is None:
                out[:] = np.argmax(logits, axis=0)
            else:
                acc[:, :, ys:ys + patch_size[1], xs:xs + patch_size[2]] += logits * weights
    if acc is not None:
        out[acc_start:acc_start + pz] = np.argmax(acc, axis=0)
    return np.ascontiguousarray(unpad(out, slicer))
