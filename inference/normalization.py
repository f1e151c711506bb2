"""Intensity normalisation from whole-image statistics, applied to each stage's resampled input."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Normalization

STATS_SAMPLE_VOXELS = 4_000_000


def stats_sample(arr: np.ndarray, max_voxels: int = STATS_SAMPLE_VOXELS) -> np.ndarray:
    """A deterministic regular sub-grid of `arr` (float64, flat) with at most about `max_voxels` voxels."""
    stride = 1
    while np.prod([-(-n // stride) for n in arr.shape]) > max_voxels:
        stride += 1
    return np.asarray(arr[(slice(None, None, stride),) * arr.ndim], dtype=np.float64).ravel()


@dataclass(frozen=True)
class IntensityParams:
    """Resolved clip window and affine map: x -> (clip(x, low, high) - mean) / std."""

    low: float
    high: float
    mean: float
    std: float

    def apply(self, arr: np.ndarray) -> np.ndarray:
        out = np.clip(arr, self.low, self.high).astype(np.float32, copy=False)
        out -= np.float32(self.mean)
        out /= np.float32(self.std)
        return out

    def as_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std}


def resolve(norm: Normalization, sample: np.ndarray) -> IntensityParams:
    """The normalisation of `norm` for an image whose statistics sample is `sample`."""
    if norm.scheme == "none":
        return IntensityParams(-np.inf, np.inf, 0.0, 1.0)
    if norm.scheme == "fixed":
        return IntensityParams(norm.clip_low, norm.clip_high, norm.mean, norm.std)
    low, high = (float(v) for v in np.percentile(sample, norm.percentiles))
    clipped = np.clip(sample, low, high)
    std = float(clipped.std())
    return IntensityParams(low, high, float(clipped.mean()), std if std > 1e-8 else 1.0)
