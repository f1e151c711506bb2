"""Canonical orientation: a pure axis permutation + flips of the voxel array, and its exact inverse.

The canonical frame is ITK's identity direction (index i, j, k along physical +x, +y, +z, i.e. LPS), so every
network sees anatomy the same way round whatever the scanner wrote. For oblique scans the nearest axis-aligned
frame is used (the residual rotation is reported, never resampled away): the transform stays a lossless
permutation, so `undo(apply(a)) == a` bit for bit and the output keeps the input's geometry exactly.
Arrays are numpy order (z, y, x) = ITK index (k, j, i).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Orientation:
    axes_order: tuple[int, int, int]  # canonical array axis a takes original array axis axes_order[a]
    flip_axes: tuple[int, ...]  # canonical array axes flipped after the permutation
    oblique_deg: float  # largest angle between an index axis and the physical axis it was assigned to

    @property
    def is_identity(self) -> bool:
        return self.axes_order == (0, 1, 2) and not self.flip_axes

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Original array -> canonical array (a view where numpy allows)."""
        out = np.transpose(arr, self.axes_order)
        return np.flip(out, self.flip_axes) if self.flip_axes else out

    def undo(self, arr: np.ndarray) -> np.ndarray:
        """Canonical array -> original array order; exact inverse of `apply`."""
        out = np.flip(arr, self.flip_axes) if self.flip_axes else arr
        return np.transpose(out, np.argsort(self.axes_order))

    def spacing(self, spacing_zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Voxel spacing (array order) of the canonical array."""
        return tuple(float(spacing_zyx[a]) for a in self.axes_order)  # type: ignore[return-value]

    def describe(self) -> str:
        names = "zyx"
        parts = []
        if self.axes_order != (0, 1, 2):
            parts.append("axes permuted " + "".join(names[a] for a in self.axes_order) + "->zyx")
        if self.flip_axes:
            parts.append("flipped " + ",".join(names[a] for a in self.flip_axes))
        if self.oblique_deg > 0.5:
            parts.append(f"oblique {self.oblique_deg:.1f} deg (segmented in the nearest axis-aligned frame)")
        return "; ".join(parts)


def orientation_from_direction(direction: tuple[float, ...] | np.ndarray) -> Orientation:
    """The permutation/flip that brings an image with ITK `direction` (row-major 3x3) nearest to identity."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)  # d[p, i]: physical axis p of index axis i
    best = max(itertools.permutations(range(3)), key=lambda perm: sum(abs(d[p, perm[p]]) for p in range(3)))
    # best[p] = index axis (ITK order) assigned to physical axis p
    cosines = [abs(d[p, best[p]]) / max(np.linalg.norm(d[:, best[p]]), 1e-12) for p in range(3)]
    oblique = max(math.degrees(math.acos(min(1.0, c))) for c in cosines)
    # array axis a <-> ITK index axis 2 - a
    axes_order = tuple(2 - best[2 - a] for a in range(3))
    flips = tuple(a for a in range(3) if d[2 - a, best[2 - a]] < 0)
    return Orientation(axes_order=axes_order, flip_axes=flips, oblique_deg=oblique)  # type: ignore[arg-type]
