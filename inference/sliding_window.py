"""Sliding-window prediction with Gaussian blending, bounded in memory, returning labels (argmax).

Geometry follows nnU-Net v2: windows of `patch` with a target step of `step_size * patch`, spread evenly so the
first starts at 0 and the last ends at the image border; images smaller than a patch are zero-padded
symmetrically (zero = the normalised mean). Logits of overlapping windows are summed with a Gaussian weight
(sigma = patch / 8); the argmax of that sum is the argmax of nnU-Net's weight-normalised average, so the
labels need no weight map (the probabilities do). Windows are visited row by row along axis 0 and the accumulator
only spans one row of windows: voxels no later window can reach are turned into labels at once, so float logits
are never held for the whole volume (`sliding_window_probabilities` also keeps each voxel's class probabilities,
float16, for a linear way back to the input grid).
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
    return _blend(image, patch_size, step_size, num_classes, predict, probabilities=False)[0]


def sliding_window_probabilities(image: np.ndarray, patch_size, step_size: float, num_classes: int,
                                 predict: PredictFn) -> tuple[np.ndarray, np.ndarray]:
    """`sliding_window_labels` (the same labels, bit for bit) and the class probabilities behind them: the softmax
    of nnU-Net's weight-normalised average of the overlapping windows' logits, float16 (num_classes, z, y, x),
    kept for a linear way back to another grid (resample.probabilities_to_labels)."""
    return _blend(image, patch_size, step_size, num_classes, predict, probabilities=True)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 (float32, numerically stable)."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    e /= e.sum(axis=0, keepdims=True)
    return e


def _flush_tiny(p: np.ndarray) -> np.ndarray:
    """`p` with the values under float16's smallest normal number (2**-14) set to 0 (in place): casting float16's
    subnormal range is ~20 times slower than the rest (measured on the 2-core AMD EPYC), and a probability of
    6e-5 decides no argmax."""
    p[p < np.float32(2.0 ** -14)] = 0
    return p


def _blend(image, patch_size, step_size, num_classes, predict, probabilities: bool):
    """Labels and, with `probabilities`, the float16 probabilities (else None) of the Gaussian-blended windows."""
    patch_size = tuple(int(p) for p in patch_size)
    image = np.asarray(image, dtype=np.float32)
    image = image[None] if image.ndim == 3 else image
    padded, slicer = pad_to_patch(image, (image.shape[0],) + patch_size)
    slicer, shape = slicer[1:], padded.shape[1:]
    steps = compute_steps(shape, patch_size, step_size)
    out = np.empty(shape, dtype=np.uint8)
    probs = np.empty((num_classes,) + shape, dtype=np.float16) if probabilities else None
    pz = patch_size[0]
    windows_per_row = list(itertools.product(steps[1], steps[2]))
    single = len(steps[0]) == 1 and len(windows_per_row) == 1
    weights = None if single else gaussian_weights(patch_size)
    acc = None if single else np.zeros((num_classes, pz) + shape[1:], dtype=np.float32)
    # the sum of the windows' weights, for the probabilities only (an argmax needs no normalisation)
    wsum = None if single or not probabilities else np.zeros((pz,) + shape[1:], dtype=np.float32)

    def finish(z0: int, n: int) -> None:   # rows [z0, z0 + n) of the accumulator are final
        out[z0:z0 + n] = np.argmax(acc[:, :n], axis=0)
        if probs is not None:
            probs[:, z0:z0 + n] = _flush_tiny(softmax(acc[:, :n] / wsum[:n]))

    acc_start = 0
    for zs in steps[0]:
        if acc is not None and zs > acc_start:  # rows only move forward: [acc_start, zs) is final
            n = zs - acc_start
            finish(acc_start, n)
            acc[:, : pz - n] = acc[:, n:]
            acc[:, pz - n:] = 0
            if wsum is not None:
                wsum[: pz - n] = wsum[n:]
                wsum[pz - n:] = 0
            acc_start = zs
        for ys, xs in windows_per_row:
            window = padded[:, zs:zs + pz, ys:ys + patch_size[1], xs:xs + patch_size[2]]
            logits = predict(window[None])
            if logits.shape != (num_classes,) + patch_size:
                raise RuntimeError(f"network returned {logits.shape}, expected {(num_classes,) + patch_size}")
            if acc is None:
                out[:] = np.argmax(logits, axis=0)
                if probs is not None:
                    probs[:] = _flush_tiny(softmax(np.asarray(logits, dtype=np.float32)))
            else:
                acc[:, :, ys:ys + patch_size[1], xs:xs + patch_size[2]] += logits * weights
                if wsum is not None:
                    wsum[:, ys:ys + patch_size[1], xs:xs + patch_size[2]] += weights
    if acc is not None:
        finish(acc_start, pz)
    labels = np.ascontiguousarray(unpad(out, slicer))
    return labels, (None if probs is None else np.ascontiguousarray(probs[(slice(None),) + slicer]))
