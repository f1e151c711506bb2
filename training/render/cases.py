"""Render labelled cases on disk: label map + the body mask of its scan -> FDG-PET-like renders
`<case>_pet<k>_0000.nii.gz` with their label maps (row P's labelled PET source).

Each case is rendered in the canonical frame (inference.orientation: LPS, array axis 1 anterior -> posterior, so
the vertebra sits behind the organs) and written back in the label file's own voxel order and geometry. The
generator is seeded from (seed, case name), so a case renders the same whatever else is in the folder.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.io import grid_difference, read_label_map, read_volume, write_image_atomic
from inference.orientation import Orientation, orientation_from_direction

from .body import body_mask_from_image
from .pet import PetRenderConfig, painter
from .variants import render_canonical


def _read_with_labels(label_path: Path, other_path: Path) -> tuple[sitk.Image, sitk.Image, Orientation]:
    """A label map, an image on its grid (scan or body mask; sizes must agree), and the canonical orientation of
    the label map (slices along physical z for the in-plane steps, axis 1 anterior -> posterior)."""
    lab_img = read_label_map(label_path, max_label=13, what="FLARE label map")[0]
    other = read_volume(other_path, "scan or body mask")
    diff = grid_difference(other, lab_img)
    if diff is not None:
        raise ValueError(f"{other_path}: not on the grid of its label map {label_path}: {diff}")
    return lab_img, other, orientation_from_direction(lab_img.GetDirection())


def write_body_mask(scan_path: Path, label_path: Path, out_path: Path) -> None:
    """The binary body mask of a scan (organs of its label map always inside), uint8, the label map's geometry.
    This mask is all the renderer takes from the scan."""
    lab_img, scan, orient = _read_with_labels(label_path, scan_path)
    spacing = orient.spacing(tuple(reversed(scan.GetSpacing())))
    body = body_mask_from_image(orient.apply(sitk.GetArrayFromImage(scan)), spacing,
                                orient.apply(sitk.GetArrayFromImage(lab_img)))
    out = sitk.GetImageFromArray(np.ascontiguousarray(orient.undo(body.astype(np.uint8))))
    out.CopyInformation(lab_img)
    write_image_atomic(out, out_path)


def _case_inputs(labels_dir: Path, body_dir: Path, case: str) -> tuple[Path, Path]:
    """(label map, body mask) of `case`, both required."""
    label, body = Path(labels_dir) / f"{case}.nii.gz", Path(body_dir) / f"{case}.nii.gz"
    for p in (label, body):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (needed to render case {case})")
    return label, body


def _z_axis(image: sitk.Image) -> int:
    """The image index axis closest to physical z (head-feet)."""
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(np.argmax(np.abs(d[2])))


def _render_variant(label_path: Path, body_path: Path, out_image: Path, out_label: Path, seed: int,
                    pad_mm: tuple[float, float], paint) -> dict:
    """One render of a labelled case (variants.render_canonical in the canonical frame; with `pad_mm` > 0 the
    written grid has more slices than the label map): image (float32) and label map written on the label file's
    own voxel order and geometry, extended along its axis closest to physical z."""
    lab_img, body_img, orient = _read_with_labels(label_path, body_path)
    stem = Path(out_image).name[: -len("_0000.nii.gz")]
    spacing = orient.spacing(tuple(reversed(lab_img.GetSpacing())))
    image, labels, drawn, pads = render_canonical(
        np.ascontiguousarray(orient.apply(sitk.GetArrayFromImage(lab_img))),
        np.ascontiguousarray(orient.apply(sitk.GetArrayFromImage(body_img) > 0)), spacing, stem, seed, pad_mm, paint)
    axis = _z_axis(lab_img)
    # canonical axis 0 is the file's z axis, reversed when the orientation flips it
    first, last = (pads[1], pads[0]) if 0 in orient.flip_axes else (pads[0], pads[1])
    lower, upper = [0, 0, 0], [0, 0, 0]
    lower[axis], upper[axis] = first, last
    lab_img = sitk.ConstantPad(lab_img, lower, upper, 0)
    if orient.apply(sitk.GetArrayViewFromImage(lab_img)).shape != labels.shape:
        raise AssertionError(f"{label_path}: the padded grid does not match the render")
    img = sitk.GetImageFromArray(np.ascontiguousarray(orient.undo(image)))
    img.CopyInformation(lab_img)
    for path in (out_image, out_label):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_image_atomic(img, out_image)
    write_image_atomic(lab_img, out_label)
    return {"case": stem, "shape": list(image.shape), "pad_slices": pads, **{str(k): v for k, v in drawn.items()}}


def render_pet_case(label_path: Path, body_path: Path, out_image: Path, out_label: Path, seed: int = 0,
                    config: PetRenderConfig = PetRenderConfig()) -> dict:
    """Write one FDG-PET-like render of a case (float32 SUV) and its label map (`config.pad_mm`: the body
    extension, see `_render_variant`)."""
    return _render_variant(label_path, body_path, out_image, out_label, seed, config.pad_mm, painter(config))


def render_pet_folder(labels_dir: Path, body_dir: Path, cases: list[str], out_dir: Path, seed: int = 0,
                      variants: int = 1, config: PetRenderConfig = PetRenderConfig(), workers: int = 1) -> list[dict]:
    """`variants` PET renders of each case, each its own draw, as OUT/images/<case>_pet<k>_0000.nii.gz with
    OUT/labels/<case>_pet<k>.nii.gz (render_pet_case). Renders already written are kept. `workers` > 1 renders
    that many at once in worker processes (each render is seeded by its own name, so the files are the same either
    way). Returns one record per render made now, in case and variant order."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    jobs = []
    for case in cases:
        label, body = _case_inputs(labels_dir, body_dir, case)
        for k in range(variants):
            image = out_dir / "images" / f"{case}_pet{k}_0000.nii.gz"
            lab = out_dir / "labels" / f"{case}_pet{k}.nii.gz"
            if not (image.exists() and lab.exists()):
                jobs.append((label, body, image, lab, seed, config))
    if workers == 1 or len(jobs) < 2:
        return [render_pet_case(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(render_pet_case, *job) for job in jobs]
        return [f.result() for f in futures]
