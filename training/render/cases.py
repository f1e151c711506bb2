"""Render CT for labelled cases on disk: label map + the body mask of its scan -> `<case>_0000.nii.gz`.

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

from inference.atomic import copy_file
from inference.io import write_image_atomic
from inference.orientation import Orientation, orientation_from_direction

from .ct import RenderConfig, body_mask_from_image, render_ct
from .pet import PetRenderConfig, painter
from .synth import SynthRenderConfig, render_synth
from .variants import case_seed, render_canonical


def _read_with_labels(label_path: Path, other_path: Path) -> tuple[sitk.Image, sitk.Image, Orientation]:
    """A label map, an image on its grid (scan or body mask; sizes must agree), and the canonical orientation of
    the label map (slices along physical z for the in-plane steps, axis 1 anterior -> posterior)."""
    lab_img = sitk.ReadImage(str(label_path))
    other = sitk.ReadImage(str(other_path))
    if lab_img.GetSize() != other.GetSize():
        raise ValueError(f"{other_path}: size {other.GetSize()} differs from its label map {label_path} "
                         f"{lab_img.GetSize()}")
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


def render_case(label_path: Path, body_path: Path, out_image: Path, seed: int = 0,
                config: RenderConfig = RenderConfig()) -> dict:
    """Write the rendered CT of one case from its label map and body mask; returns {case, phase, shape}."""
    lab_img, body_img, orient = _read_with_labels(label_path, body_path)
    spacing = orient.spacing(tuple(reversed(lab_img.GetSpacing())))
    labels = np.ascontiguousarray(orient.apply(sitk.GetArrayFromImage(lab_img)))
    body = np.ascontiguousarray(orient.apply(sitk.GetArrayFromImage(body_img) > 0))
    case = label_path.name[: -len(".nii.gz")]
    hu, phase = render_ct(labels, body, spacing, np.random.default_rng(case_seed(seed, case)), config)
    out = sitk.GetImageFromArray(np.ascontiguousarray(orient.undo(hu)))
    out.CopyInformation(lab_img)
    write_image_atomic(out, out_image)
    return {"case": case, "phase": phase, "shape": list(hu.shape)}


def _case_inputs(labels_dir: Path, body_dir: Path, case: str) -> tuple[Path, Path]:
    """(label map, body mask) of `case`, both required."""
    label, body = Path(labels_dir) / f"{case}.nii.gz", Path(body_dir) / f"{case}.nii.gz"
    for p in (label, body):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (needed to render case {case})")
    return label, body


def render_folder(labels_dir: Path, body_dir: Path, cases: list[str], out_dir: Path, seed: int = 0,
                  config: RenderConfig = RenderConfig()) -> list[dict]:
    """Render `cases` (label maps LABELS/<case>.nii.gz, body masks BODY/<case>.nii.gz) into
    OUT/images/<case>_0000.nii.gz and copy their labels to OUT/labels/<case>.nii.gz; cases already written are kept.
    Returns one record per case rendered now."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    done = []
    for case in cases:
        label, body = _case_inputs(labels_dir, body_dir, case)
        target = out_dir / "images" / f"{case}_0000.nii.gz"
        if not target.exists():
            done.append(render_case(label, body, target, seed, config))
        lab_out = out_dir / "labels" / f"{case}.nii.gz"
        if not lab_out.exists():
            copy_file(label, lab_out)
    return done


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


def render_synth_case(label_path: Path, body_path: Path, out_image: Path, out_label: Path, seed: int = 0,
                      config: SynthRenderConfig = SynthRenderConfig(), pad_mm: tuple[float, float] = (0.0, 0.0)
                      ) -> dict:
    """Write one random-contrast render of a case (float32, about [0, 1]) and its label map."""
    return _render_variant(label_path, body_path, out_image, out_label, seed, pad_mm,
                           lambda lab, body, sp, rng, ext: render_synth(lab, body, sp, rng, config))


def _render_one(kind: str, label: Path, body: Path, image: Path, lab: Path, seed: int, config, pad_mm) -> dict:
    if kind == "pet":
        return render_pet_case(label, body, image, lab, seed, config or PetRenderConfig())
    return render_synth_case(label, body, image, lab, seed, config or SynthRenderConfig(), pad_mm)


def render_variants_folder(labels_dir: Path, body_dir: Path, cases: list[str], out_dir: Path, seed: int = 0,
                           variants: int = 1, kind: str = "pet", config=None, pad_mm=(0.0, 0.0),
                           workers: int = 1) -> list[dict]:
    """`variants` renders of each case, each its own draw, as OUT/images/<case>_<kind><k>_0000.nii.gz with
    OUT/labels/<case>_<kind><k>.nii.gz: `kind` "pet" (render_pet_case; config PetRenderConfig) or "synth"
    (render_synth_case; config SynthRenderConfig, body extension `pad_mm`). Renders already written are kept.
    `workers` > 1 renders that many at once in worker processes (each render is seeded by its own name, so the
    files are the same either way). Returns one record per render made now, in case and variant order."""
    if kind not in ("pet", "synth"):
        raise ValueError(f"kind must be 'pet' or 'synth', got {kind!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    jobs = []
    for case in cases:
        label, body = _case_inputs(labels_dir, body_dir, case)
        for k in range(variants):
            name = f"{case}_{kind}{k}"
            image = out_dir / "images" / f"{name}_0000.nii.gz"
            lab = out_dir / "labels" / f"{name}.nii.gz"
            if not (image.exists() and lab.exists()):
                jobs.append((kind, label, body, image, lab, seed, config, pad_mm))
    if workers == 1 or len(jobs) < 2:
        return [_render_one(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_render_one, *job) for job in jobs]
        return [f.result() for f in futures]


def render_pet_folder(labels_dir: Path, body_dir: Path, cases: list[str], out_dir: Path, seed: int = 0,
                      variants: int = 1, config: PetRenderConfig = PetRenderConfig(), workers: int = 1) -> list[dict]:
    """`variants` PET renders of each case (`render_variants_folder` with kind "pet")."""
    return render_variants_folder(labels_dir, body_dir, cases, out_dir, seed, variants, "pet", config, workers=workers)
