"""Small synthetic labelled phantoms (CT-like and MRI-like) for the tests of the pipeline (moved here from
training/cyclegan).

An elliptic body with a liver (1), right kidney (2), spleen (3) and left kidney (13) per axial slice, written with
an arbitrary spacing / origin / direction so that geometry handling is exercised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

# (label, centre y, centre x, radius y, radius x) as fractions of the slice, patient's right on the image's left
ORGANS = ((1, 0.42, 0.35, 0.18, 0.20), (2, 0.62, 0.33, 0.08, 0.06), (3, 0.45, 0.70, 0.10, 0.08),
          (13, 0.62, 0.66, 0.08, 0.06))
INTENSITY = {"ct": {"air": -1000.0, "body": 40.0, 1: 60.0, 2: 160.0, 3: 50.0, 13: 160.0},
             "mri": {"air": 0.0, "body": 300.0, 1: 150.0, 2: 500.0, 3: 400.0, 13: 500.0}}


def phantom(shape_zyx: tuple[int, int, int], modality: str = "ct", seed: int = 0,
            noise: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) arrays in SimpleITK order (z, y, x)."""
    rng = np.random.default_rng(seed)
    z, h, w = shape_zyx
    yy, xx = np.mgrid[0:h, 0:w]
    yy = (yy + 0.5) / h
    xx = (xx + 0.5) / w
    values = INTENSITY[modality]
    image = np.full(shape_zyx, values["air"], dtype=np.float32)
    label = np.zeros(shape_zyx, dtype=np.uint8)
    body = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.46) ** 2 <= 1
    for k in range(z):
        scale = 1.0 - 0.3 * abs(k - (z - 1) / 2) / max(1.0, z / 2)      # organs shrink towards the ends
        image[k][body] = values["body"]
        for lab, cy, cx, ry, rx in ORGANS:
            m = ((yy - cy) / (ry * scale)) ** 2 + ((xx - cx) / (rx * scale)) ** 2 <= 1
            image[k][m] = values[lab]
            label[k][m] = lab
    image += rng.normal(0, noise, image.shape).astype(np.float32)
    return image, label


def write_case(images_dir: Path, labels_dir: Path | None, name: str, shape_zyx: tuple[int, int, int],
               modality: str = "ct", spacing: tuple[float, float, float] = (1.5, 1.5, 4.0),
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
               direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1), seed: int = 0) -> tuple[Path, Path | None]:
    """Write `<name>_0000.nii.gz` (and `<name>.nii.gz` into `labels_dir`); returns the paths."""
    image, label = phantom(shape_zyx, modality, seed)
    if modality == "ct":
        image = np.round(image).astype(np.int16)
    paths = []
    for arr, folder, fname in ((image, images_dir, f"{name}_0000.nii.gz"), (label, labels_dir, f"{name}.nii.gz")):
        if folder is None:
            paths.append(None)
            continue
        Path(folder).mkdir(parents=True, exist_ok=True)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection(tuple(float(d) for d in direction))
        path = Path(folder) / fname
        sitk.WriteImage(img, str(path))
        paths.append(path)
    return paths[0], paths[1]
