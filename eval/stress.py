"""The contrast-stress set: each CHAOS T2 test scan under fixed intensity transforms that change its contrast the
way another MRI sequence or centre would. Decided before any model was trained on it, never trained or selected on.

Every transform is deterministic (no randomness but a noise field drawn from a fixed seed per scan), keeps the
scan's grid and geometry (so the scan's own label map scores it) and works on the image scaled to [0, 1] between
its 0.5 and 99.5 percentiles; the result is written back in that intensity range as float32.

| name     | what it imitates | transform of t in [0, 1] |
|----------|------------------|--------------------------|
| invert   | T1 against T2: fluid dark, fat bright (SPIR's dark fat turns bright) | inside the body 1 - t, air stays 0 |
| curve    | another weighting / contrast phase: organ brightness reordered | a fixed non-monotone piecewise-linear curve through 0 |
| bias     | a surface coil of another centre: strong smooth shading, other gamma | t * exp(0.6 ramp_ap + 0.3 ramp_lr), then ^ 0.6 |
| lowres   | a low-resolution noisy sequence (DWI-like) | Gaussian blur (1.5 pixels in-plane), Rician noise of 0.06 |

"ramp_ap" / "ramp_lr" run from -1 to 1 across the image along its first / second in-plane array axis.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from inference.atomic import atomic_path

TRANSFORMS = ("invert", "curve", "bias", "lowres")
CURVE_KNOTS = (0.0, 0.55, 0.25, 0.85, 0.45, 1.0)   # values at t = 0, 0.2, ..., 1
PERCENTILES = (0.5, 99.5)


def _body(t: np.ndarray) -> np.ndarray:
    """The body on each slice (array axis 0): above 5 % of the window, holes filled, largest piece."""
    from scipy import ndimage

    out = np.zeros(t.shape, dtype=bool)
    for z in range(t.shape[0]):
        lab, n = ndimage.label(ndimage.binary_fill_holes(t[z] > 0.05))
        if n:
            out[z] = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    return out


def _ramp(n: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def transform(t: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """One stress transform of an image `t` (z, y, x) scaled to [0, 1]; returns float32 in [0, 1]."""
    from scipy import ndimage

    t = np.clip(t.astype(np.float32), 0.0, 1.0)
    if name == "invert":
        out = np.where(_body(t), 1.0 - t, 0.0)
    elif name == "curve":
        out = np.interp(t, np.linspace(0.0, 1.0, len(CURVE_KNOTS)), CURVE_KNOTS)
    elif name == "bias":
        field = np.exp(0.6 * _ramp(t.shape[1])[None, :, None] + 0.3 * _ramp(t.shape[2])[None, None, :])
        out = t * field
        out = (out / max(float(out.max()), 1e-6)) ** 0.6
    elif name == "lowres":
        blurred = ndimage.gaussian_filter(t, sigma=(0.0, 1.5, 1.5))
        rng = np.random.default_rng(seed)
        n1, n2 = (rng.normal(0.0, 0.06, t.shape).astype(np.float32) for _ in range(2))
        out = np.sqrt((blurred + n1) ** 2 + n2 ** 2)
    else:
        raise ValueError(f"unknown stress transform {name!r} (known: {', '.join(TRANSFORMS)})")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def stress_image(image, name: str, case: str):
    """A SimpleITK image -> its stressed copy (same grid and geometry, float32)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    low, high = (float(v) for v in np.percentile(arr, PERCENTILES))
    width = max(high - low, 1e-6)
    out = transform((arr - low) / width, name, seed=zlib.crc32(f"{case}:{name}".encode()))
    result = sitk.GetImageFromArray(low + out * width)
    result.CopyInformation(image)
    return result


def with_labels(images: list[Path], labels: Path) -> list[tuple[Path, str, Path]]:
    """(image, case, label map) for every `<case>_0000.nii.gz` of `images`, its label map `labels/<case>.nii.gz`;
    FileNotFoundError naming the first one missing."""
    out = []
    for path in images:
        case = path.name.split("_0000.nii")[0]
        label = labels / f"{case}.nii.gz"
        if not label.is_file():
            raise FileNotFoundError(f"{label}: label map of {path} missing")
        out.append((path, case, label))
    return out


def make_stress_set(images: list[Path], labels: Path, out: Path, transforms=TRANSFORMS) -> list[Path]:
    """out/images/<case>_<transform>_0000.nii.gz and out/labels/<case>_<transform>.nii.gz (the scan's own label
    map, linked) for every image `<case>_0000.nii.gz` and transform. Existing files are kept; each file is written
    to a temporary name and renamed. Returns the images."""
    import SimpleITK as sitk

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    made = []
    for path, case, label in with_labels(images, labels):
        image = None
        for name in transforms:
            dst = out / "images" / f"{case}_{name}_0000.nii.gz"
            if not dst.is_file():
                image = image if image is not None else sitk.ReadImage(str(path))
                with atomic_path(dst) as tmp:
                    sitk.WriteImage(stress_image(image, name, case), str(tmp), useCompression=True)
            link = out / "labels" / f"{case}_{name}.nii.gz"
            if not link.exists():
                link.symlink_to(label.resolve())
            made.append(dst)
    return made
