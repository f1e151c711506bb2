"""NIfTI input checks and atomic output (SimpleITK).

`read_image` either returns a 3D image ready to segment (with notes on what was unusual about it) or raises
`InputError` with one sentence naming the problem. `write_labels` writes to a hidden temporary name in the output
folder and renames it, so a crash never leaves a partial mask where the scorer would read it.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

MAX_ANISOTROPY = 10.0  # spacing ratio above which a note is attached (the case is still processed)


class InputError(ValueError):
    """The input file cannot be segmented; the message names the problem (the caller adds the file name)."""


@dataclass
class LoadedImage:
    image: sitk.Image  # 3D, scalar
    array: np.ndarray  # numpy view (z, y, x) of `image`'s voxels (float images: non-finite voxels replaced)
    notes: list[str] = field(default_factory=list)


def _diagnose_unreadable(path: Path, exc: Exception) -> str:
    """Why SimpleITK could not read `path`, in words."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot open the file ({e.strerror})"
    if len(head) == 0:
        return "empty file"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                header = g.read(348)
                while g.read(1 << 24):
                    pass
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
            return "truncated or corrupt gzip stream"
    else:
        with open(path, "rb") as f:
            header = f.read(348)
    if len(header) < 348 or struct.unpack("<i", header[:4])[0] not in (348, 540) and \
            struct.unpack(">i", header[:4])[0] not in (348, 540):
        return "not a NIfTI file (no NIfTI header)"
    first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return f"unreadable NIfTI ({first_line[:160]})"


def read_image(path: Path) -> LoadedImage:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as exc:
        raise InputError(f"cannot open the file ({exc.strerror})") from None
    if path.name.endswith(".gz") and magic != b"\x1f\x8b":
        raise InputError("named .nii.gz but not gzip-compressed" if magic else "empty file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(_diagnose_unreadable(path, exc)) from None

    notes: list[str] = []
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"multi-component image ({image.GetNumberOfComponentsPerPixel()} values per voxel)")
    dim = image.GetDimension()
    if dim == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(f"4D image of size {size}: one 3D volume per file expected")
        image = sitk.Extract(image, list(size[:3]) + [0], [0, 0, 0, 0])
        notes.append("4D file with a single volume read as 3D")
    elif dim != 3:
        raise InputError(f"{dim}D image of size {image.GetSize()}: a 3D volume is expected")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"2D image: size {size} has an axis of {min(size)} voxel")
    spacing = image.GetSpacing()
    if min(spacing) <= 0 or not all(np.isfinite(spacing)):
        raise InputError(f"invalid voxel spacing {spacing}")
    if not np.all(np.isfinite(image.GetDirection())) or abs(np.linalg.det(
            np.reshape(image.GetDirection(), (3, 3)))) < 1e-3:
        raise InputError(f"degenerate direction matrix {image.GetDirection()}")

    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            n_bad = int(array.size - np.count_nonzero(finite))
            if n_bad == array.size:
                raise InputError("every voxel is NaN or Inf")
            fill = float(np.min(array[finite]))
            array = np.where(finite, array, np.asarray(fill, dtype=array.dtype))
            notes.append(f"{n_bad} NaN/Inf voxels set to the image minimum {fill:g}")
        del finite
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise InputError(f"constant image (every voxel is {float(lo):g}): nothing to segment")
    ratio = max(spacing) / min(spacing)
    if ratio > MAX_ANISOTROPY:
        notes.append(f"anisotropic spacing {tuple(round(s, 3) for s in spacing)} (ratio {ratio:.0f})")
    return LoadedImage(image=image, array=array, notes=notes)


def write_labels(labels: np.ndarray, reference: sitk.Image, path: Path, compression_level: int = 1) -> None:
    """Write `labels` (numpy z, y, x) as uint8 with `reference`'s geometry to `path`, atomically."""
    path = Path(path)
    if tuple(labels.shape) != tuple(reversed(reference.GetSize())):
        raise ValueError(f"label array {labels.shape} does not match the image size {reference.GetSize()}")
    out = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint8))
    out.CopyInformation(reference)
    tmp = path.with_name(f".{path.name[:-len('.nii.gz')] if path.name.endswith('.nii.gz') else path.stem}"
                         f".partial-{os.getpid()}.nii.gz")
    try:
        sitk.WriteImage(out, str(tmp), True, int(compression_level))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
