"""The project's one phantom generator: organs as shapes (ellipsoids, elliptic cylinders that may taper, boxes)
painted in order into a label map, and an image painted from it (a value per organ, an optional body, a background,
Gaussian noise), numpy (z, y, x). Each user's layout is data: the demo's and the benchmarks' MR-like volumes
(`synthetic_mr`, below) and the tests' layouts (tests/phantoms.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import SimpleITK as sitk

INF = float("inf")


@dataclass(frozen=True)
class Ellipsoid:
    """sum(((coord - centre) / (radius * taper)) ** 2) <= 1 over (z, y, x) in the caller's coordinates; a radius
    of INF leaves that axis unbounded (an elliptic cylinder); `taper` (per z slice, broadcast as (z, 1, 1)) scales
    every radius, e.g. organs that shrink towards the ends of the volume."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]

    def mask(self, coords: Sequence[np.ndarray], taper: np.ndarray | float = 1.0) -> np.ndarray:
        return sum(((c - m) / (r * taper)) ** 2 for c, m, r in zip(coords, self.centre, self.radii, strict=True)) <= 1.0


@dataclass(frozen=True)
class Box:
    """Voxel index ranges [start, stop) along z, y, x."""

    z: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]

    def mask(self, coords: Sequence[np.ndarray], taper: np.ndarray | float = 1.0) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(*(np.shape(c) for c in coords)), dtype=bool)
        out[slice(*self.z), slice(*self.y), slice(*self.x)] = True
        return out


Shape = Union[Ellipsoid, Box]


def index_grid(shape: Sequence[int], offset: Sequence[float] = (0.0, 0.0, 0.0),
               divisor: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, ...]:
    """Coordinates (z, y, x) of each voxel, (index + offset) / divisor, as open (broadcasting) float64 arrays."""
    return tuple((a.astype(np.float64) + o) / d for a, o, d in zip(np.ogrid[tuple(slice(0, n) for n in shape)],
                                                                   offset, divisor, strict=True))


def label_map(shape: Sequence[int], organs: Sequence[tuple[int, Shape]], coords=None,
              taper: np.ndarray | float = 1.0) -> np.ndarray:
    """uint8 labels: each (label, shape) painted in order (a later organ covers an earlier one)."""
    coords = index_grid(shape) if coords is None else coords
    out = np.zeros(tuple(shape), dtype=np.uint8)
    for label, shape_ in organs:
        out[np.broadcast_to(shape_.mask(coords, taper), out.shape)] = label
    return out


def paint(labels: np.ndarray, values: Mapping[int, float], background: float = 0.0, body: np.ndarray | None = None,
          body_value: float = 0.0, noise: float = 0.0, rng: np.random.Generator | None = None,
          dtype=np.float32) -> np.ndarray:
    """Image of `labels`: `background`, `body_value` inside `body`, values[label] on each organ, plus N(0, noise)
    drawn from `rng` (cast to `dtype` before it is added)."""
    image = np.full(labels.shape, background, dtype=dtype)
    if body is not None:
        image[np.broadcast_to(body, labels.shape)] = body_value
    for label, value in values.items():
        image[labels == label] = value
    if noise:
        image += (rng or np.random.default_rng()).normal(0.0, noise, labels.shape).astype(dtype)
    return image


def synthetic_mr(size_xyz, seed: int = 0) -> sitk.Image:
    """MR-like volume of any size (demo inputs when no real scan is at hand, engine benchmarks): a body ellipse, a
    liver, a spleen and two kidneys as bright ellipsoids, noise (int16); about 420 mm across."""
    x, y, z = size_xyz
    coords = index_grid((z, y, x), offset=(-z / 2, -y / 2, -x / 2), divisor=(z / 2, y / 2, x / 2))  # -1 .. 1
    organs = [(1, Ellipsoid((0.1, -0.1, -0.35), (0.35,) * 3)), (3, Ellipsoid((0.0, 0.2, 0.4), (0.2,) * 3)),
              (2, Ellipsoid((-0.3, 0.35, -0.3), (0.12,) * 3)), (13, Ellipsoid((-0.3, 0.35, 0.3), (0.12,) * 3))]
    labels = label_map((z, y, x), organs, coords)
    body = Ellipsoid((0.0, 0.0, 0.0), (INF, 0.6 ** 0.5, 0.85 ** 0.5)).mask(coords)
    arr = paint(labels, {1: 500.0, 3: 650.0, 2: 800.0, 13: 800.0}, body=body, body_value=300.0, noise=20.0,
                rng=np.random.default_rng(seed), dtype=np.float64)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((420.0 / max(x, y), 420.0 / max(x, y), float(np.clip(350.0 / z, 1.0, 8.0))))
    return img
