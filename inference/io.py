"""NIfTI input checks and atomic output (SimpleITK).

`read_image` either returns a 3D image ready to segment (with notes on what was unusual about it) or raises
`InputError` with one sentence naming the problem. `write_labels` writes to a hidden temporary name in the output
folder and renames it, so a crash never leaves a partial mask where the scorer would read it. `read_label_map` is
the one label-map reader of the training tools: one value check and one geometry rule (`grid_difference`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .nifti_check import NiftiContainerError, check_complete, nonfinite_mask, read_layout

MAX_ANISOTROPY = 10.0  # spacing ratio above which a note is attached (the case is still processed)


class InputError(ValueError):
    """The input file cannot be segmented; the message names the problem (the caller adds the file name)."""


@dataclass
class LoadedImage:
    image: sitk.Image  # 3D, scalar
    array: np.ndarray  # numpy view (z, y, x) of `image`'s voxels (float images: non-finite voxels replaced)
    notes: list[str] = field(default_factory=list)
    constant: bool = False  # every voxel has one value: nothing to segment, the mask is all background


def read_image(path: Path) -> LoadedImage:
    """The engine's input: a checked 3D scalar volume (InputError saying what is wrong otherwise), with NaN/Inf
    voxels given the image minimum and notes on what was changed or is unusual."""
    path = Path(path)
    layout = _check_container(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"unreadable NIfTI ({last[:160]})") from None
    notes: list[str] = []
    image = _as_volume(image, notes)
    array = _fill_nonfinite(path, layout, sitk.GetArrayViewFromImage(image), notes)
    lo, hi = array.min(), array.max()
    constant = bool(lo == hi)
    if constant:   # a valid scan with nothing in it: an all-background mask scores correctly, a missing one fails
        notes.append(f"constant image (every voxel is {float(lo):g}): all-background mask written")
    spacing = image.GetSpacing()
    ratio = max(spacing) / min(spacing)
    if ratio > MAX_ANISOTROPY:
        notes.append(f"anisotropic spacing {tuple(round(s, 3) for s in spacing)} (ratio {ratio:.0f})")
    return LoadedImage(image=image, array=array, notes=notes, constant=constant)


def _check_container(path: Path):
    """The file is there, gzip when named so, not empty, and a complete NIfTI container: its layout."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as exc:
        raise InputError(f"cannot open the file ({exc.strerror})") from None
    if path.name.endswith(".gz") and magic != b"\x1f\x8b":
        raise InputError("named .nii.gz but not gzip-compressed" if magic else "empty file")
    if not magic:
        raise InputError("empty file")
    try:
        layout = read_layout(path)
        check_complete(path, layout)
    except NiftiContainerError as exc:
        raise InputError(str(exc)) from None
    return layout


def _as_volume(image: sitk.Image, notes: list[str]) -> sitk.Image:
    """One 3D scalar volume (a 4D file with a single volume becomes 3D) of usable geometry, or InputError."""
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
    return image


def _fill_nonfinite(path: Path, layout, array: np.ndarray, notes: list[str]) -> np.ndarray:
    """ITK reads NaN/Inf as 0: find them in the file itself and give them the background value (image minimum)."""
    try:
        bad = nonfinite_mask(path, layout)
    except NiftiContainerError as exc:
        raise InputError(str(exc)) from None
    if bad is None and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = ~np.isfinite(array).ravel()
    if bad is None:
        return array
    bad = bad[: array.size].reshape(array.shape)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == array.size:
        raise InputError("every voxel is NaN or Inf")
    fill = float(np.min(array[~bad]))
    notes.append(f"{n_bad} NaN/Inf voxels set to the image minimum {fill:g}")
    return np.where(bad, np.asarray(fill, dtype=array.dtype), array)


def read_volume(path: Path, what: str = "image") -> sitk.Image:
    """A 3D single-channel volume as SimpleITK reads it, or a ValueError naming the file (for the training and
    evaluation tools; the engine's `read_image` checks more and says more)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read {what} {path}: {str(exc).strip().splitlines()[-1][:160]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 3D single-channel {what}, got dimension {image.GetDimension()} "
                         f"with {image.GetNumberOfComponentsPerPixel()} components")
    return image


GEOMETRY_ATOL_MM = 1e-3   # the scorer's --strict-geometry tolerance on the voxel-to-world matrix (mm)


def _affine(image: sitk.Image) -> np.ndarray:
    """The 3 x 4 voxel-to-world matrix (direction x spacing | origin), mm."""
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(image.GetSpacing(), dtype=float)
    return np.c_[d, np.asarray(image.GetOrigin(), dtype=float)]


def grid_difference(image: sitk.Image, reference: sitk.Image) -> str | None:
    """None when `image` lies on `reference`'s voxel grid (same size; spacing, direction and origin equal within
    GEOMETRY_ATOL_MM), else what differs, in words."""
    if image.GetSize() != reference.GetSize():
        return f"size {image.GetSize()} differs from {reference.GetSize()}"
    diff = float(np.abs(_affine(image) - _affine(reference)).max())
    if diff > GEOMETRY_ATOL_MM:
        return (f"voxel grid differs by up to {diff:.3g} mm (spacing {image.GetSpacing()} vs "
                f"{reference.GetSpacing()}, origin {image.GetOrigin()} vs {reference.GetOrigin()})")
    return None


def read_label_map(path: Path, reference: sitk.Image | None = None, max_label: int = 255,
                   what: str = "label map") -> tuple[sitk.Image, np.ndarray]:
    """(image, uint8 array z, y, x) of a label map: a 3D single-channel volume of whole numbers 0..`max_label`,
    and, given `reference` (its scan), on the reference's grid (`grid_difference`). Raises ValueError naming the
    file and the problem otherwise."""
    image = read_volume(path, what)
    array = sitk.GetArrayViewFromImage(image)
    if array.size:
        if not np.issubdtype(array.dtype, np.integer) and not np.all(np.isfinite(array) & (np.mod(array, 1) == 0)):
            raise ValueError(f"{path}: {what} holds non-integer values (is this an image, not labels?)")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0 or hi > max_label:
            raise ValueError(f"{path}: {what} values {lo:g}..{hi:g} are outside 0..{max_label}")
    if reference is not None:
        diff = grid_difference(image, reference)
        if diff is not None:
            raise ValueError(f"{path}: {what} is not on its scan's grid: {diff}")
    return image, np.array(array, dtype=np.uint8)


def write_image_atomic(image: sitk.Image, path: Path, compression_level: int = 1) -> None:
    """Write `image` to `path` through a hidden temporary name in the same folder, then rename."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True, int(compression_level))


def write_labels(labels: np.ndarray, reference: sitk.Image, path: Path, compression_level: int = 1) -> None:
    """Write `labels` (numpy z, y, x) as uint8 with `reference`'s geometry to `path`, atomically."""
    if tuple(labels.shape) != tuple(reversed(reference.GetSize())):
        raise ValueError(f"label array {labels.shape} does not match the image size {reference.GetSize()}")
    out = sitk.GetImageFromArray(np.ascontiguousarray(labels, dtype=np.uint8))
    out.CopyInformation(reference)
    write_image_atomic(out, path, compression_level)
