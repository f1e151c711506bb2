"""Tiny synthetic labelled volumes (ellipsoid organs, image painted from the labels) for the tests (moved here from
training/c2f: the package ships no test-data generator)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from training.c2f.config import C2FSpec, NetworkSpec, StageSpec

# organ -> (centre as a fraction of the (z, y, x) extent, semi-axes in mm, intensity)
ORGANS: dict[int, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    1: ((0.45, 0.40, 0.30), (18.0, 20.0, 20.0), 120.0),  # liver (image left = patient right)
    3: ((0.45, 0.45, 0.72), (14.0, 14.0, 12.0), 60.0),  # spleen
    2: ((0.60, 0.72, 0.30), (12.0, 10.0, 9.0), 200.0),  # right kidney
    13: ((0.60, 0.72, 0.68), (12.0, 10.0, 9.0), 170.0),  # left kidney
}


def synthetic_case(shape=(24, 48, 48), spacing_mm=(3.0, 2.0, 2.0), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) in numpy (z, y, x); organ centres jitter with `seed`."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    coords = [zz * spacing_mm[0], yy * spacing_mm[1], xx * spacing_mm[2]]
    extent = [n * s for n, s in zip(shape, spacing_mm)]
    labels = np.zeros(shape, dtype=np.uint8)
    image = np.zeros(shape, dtype=np.float32)
    body = sum(((c - e / 2) / (0.48 * e)) ** 2 for c, e in zip(coords[1:], extent[1:])) <= 1.0
    image[body] = 30.0
    for organ, (centre, axes, value) in ORGANS.items():
        c = [(f + rng.uniform(-0.04, 0.04)) * e for f, e in zip(centre, extent)]
        inside = sum(((co - ci) / a) ** 2 for co, ci, a in zip(coords, c, axes)) <= 1.0
        labels[inside] = organ
        image[inside] = value
    image += rng.normal(0.0, 8.0, shape).astype(np.float32)
    return image, labels


def write_synthetic_source(folder: Path, n_cases: int, seed: int = 0, shape=(24, 48, 48),
                           spacing_mm=(3.0, 2.0, 2.0), flip_every: int = 2) -> Path:
    """`<case>_0000.nii.gz` + `<case>.nii.gz` files; every `flip_every`-th case is stored x-flipped (direction
    -1 on x) so the canonical reorientation is exercised."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        image, labels = synthetic_case(shape, spacing_mm, seed + i)
        direction = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
        if flip_every and i % flip_every == 1:
            image, labels = image[:, :, ::-1].copy(), labels[:, :, ::-1].copy()
            direction = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
        for arr, name in ((image, f"case{i:02d}_0000.nii.gz"), (labels, f"case{i:02d}.nii.gz")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(tuple(float(s) for s in reversed(spacing_mm)))
            img.SetDirection(direction)
            sitk.WriteImage(img, str(folder / name))
    return folder


def tiny_spec(crops_per_case: int = 2) -> C2FSpec:
    """Small grids and 3-stage nets (CPU tests: a training iteration takes a fraction of a second)."""
    net = NetworkSpec((4, 8, 16), ((1, 1, 1), (2, 2, 2), (2, 2, 2)), n_conv_per_stage=1, n_conv_per_stage_decoder=1)
    coarse = StageSpec(spacing_mm=(6.0, 6.0, 6.0), patch_size=(8, 16, 16), network=net, batch_size=2)
    fine_net = NetworkSpec((8, 16, 32), ((1, 1, 1), (2, 2, 2), (2, 2, 2)))
    fine = StageSpec(spacing_mm=(3.0, 2.0, 2.0), patch_size=(16, 32, 32), network=fine_net, batch_size=2)
    return C2FSpec(coarse=coarse, fine=fine, margin_mm=(6.0, 6.0, 6.0), jitter_mm=(3.0, 3.0, 3.0),
                   crops_per_case=crops_per_case)
