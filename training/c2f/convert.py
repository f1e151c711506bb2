"""Step 1: labelled folders -> nnU-Net raw datasets, one per stage, prepared exactly as the engine prepares input.

Every image goes through the engine's own functions (inference.*): canonical orientation, whole-image intensity
statistics, linear resampling to the stage spacing, then normalisation; labels go through the engine's nearest
neighbour `labels_to_shape`. The COARSE dataset holds whole volumes at the coarse spacing; the FINE dataset holds
crops around the organs (ground-truth box + margin, each side jittered, in mm) cut from the canonical image and
then resampled, i.e. in the order the engine crops and resamples the coarse model's ROI.

The raw images are therefore already at the stage spacing and normalised; the plans (planner.py) use that spacing
as target spacing and NoNormalization, so nnU-Net's preprocessing leaves the voxels unchanged (the parity test
proves the chain). Sources (labelled CT, synthetic MRI/PET, pseudo-labelled targets) are merged into one training
set; each case id is prefixed by its source name and dataset.json records the source of every case.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from inference.atomic import write_json
from inference import normalization, orientation, resample, roi
from inference.io import read_image, read_label_map, write_image_atomic

from .config import C2FSpec, StageSpec, dataset_name
from .planner import run_jobs

IMAGE_SUFFIX = "_0000.nii.gz"
LABEL_SUFFIX = ".nii.gz"
FILE_ENDING = ".nii.gz"
CHANNEL_NAME = "noNorm"  # images are already normalised by the engine's normalisation (see module docstring)


@dataclass(frozen=True)
class Source:
    """One labelled set: `<case>_0000.nii.gz` images in `images`, `<case>.nii.gz` labels in `labels`."""

    name: str
    images: Path
    labels: Path

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").isalnum():
            raise ValueError(f"source name {self.name!r} must be alphanumeric (dashes allowed)")

    @classmethod
    def parse(cls, text: str) -> "Source":
        """`NAME=IMAGES_DIR[,LABELS_DIR]` (labels default to the images folder)."""
        if "=" not in text:
            raise ValueError(f"source {text!r} is not NAME=IMAGES_DIR[,LABELS_DIR]")
        name, folders = text.split("=", 1)
        images, *labels = folders.split(",")
        if len(labels) > 1:
            raise ValueError(f"source {text!r} has more than two folders")
        return cls(name=name, images=Path(images), labels=Path(labels[0] if labels else images))

    def cases(self) -> list[tuple[str, Path, Path]]:
        """(case, image, label) for every image that has a label map; raises when there is none."""
        if not self.images.is_dir():
            raise FileNotFoundError(f"source {self.name}: no folder {self.images}")
        out = []
        for img in sorted(self.images.glob("*" + IMAGE_SUFFIX)):
            case = img.name[: -len(IMAGE_SUFFIX)]
            lab = self.labels / (case + LABEL_SUFFIX)
            if lab.is_file():
                out.append((case, img, lab))
        if not out:
            raise FileNotFoundError(f"source {self.name}: no <case>{IMAGE_SUFFIX} with a <case>{LABEL_SUFFIX} label "
                                    f"in {self.images} / {self.labels}")
        return out


@dataclass(frozen=True)
class CanonicalCase:
    """A case in the engine's canonical orientation, with the statistics sample the engine would take."""

    image: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    stats_sample: np.ndarray


def load_canonical(image_path: Path, label_path: Path | None = None) -> CanonicalCase:
    """Read an image (and its labels) as the engine does: inference.io.read_image + canonical orientation."""
    loaded = read_image(image_path)
    orient = orientation.orientation_from_direction(loaded.image.GetDirection())
    canon = orient.apply(loaded.array)
    spacing = orient.spacing(tuple(reversed(loaded.image.GetSpacing())))
    labels = (np.zeros(canon.shape, dtype=np.uint8) if label_path is None else
              np.ascontiguousarray(orient.apply(read_label_map(label_path, reference=loaded.image)[1])))
    # copy: read_image's array may be a view of the SimpleITK image's buffer, freed with `loaded`
    return CanonicalCase(image=np.array(canon, dtype=canon.dtype, order="C", copy=True), labels=labels, spacing_mm=tuple(spacing),
                         stats_sample=normalization.stats_sample(loaded.array))


def stage_arrays(case: CanonicalCase, stage: StageSpec, box: roi.Box | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(normalised float32 image, uint8 labels) of `box` (default: whole image) at the stage spacing.

    The same calls, in the same order, as inference.pipeline.Segmenter._run_stage on roi.crop(canon, box).
    """
    region = case.image if box is None else roi.crop(case.image, box)
    labels = case.labels if box is None else roi.crop(case.labels, box)
    params = normalization.resolve(stage.normalization, case.stats_sample)
    shape = resample.shape_at_spacing(region.shape, case.spacing_mm, stage.spacing_mm)
    x = params.apply(resample.resample_linear(region, shape))
    y = resample.labels_to_shape(labels, shape).astype(np.uint8)
    return x, y


def jittered_box(labels: np.ndarray, spacing_mm, margin_mm, jitter_mm, rng: np.random.Generator) -> roi.Box:
    """Ground-truth organ box + (margin +- uniform jitter) mm on each side, clipped; whole image without organs.

    With zero jitter this is exactly roi.expand_box(foreground_box(labels), margin_mm, ...), the engine's ROI.
    """
    box = roi.foreground_box(labels)
    if box is None:
        return roi.Box.whole(labels.shape)
    # per axis the low side's margin, then the high side's (each its own jitter draw), grown by the engine's rule
    sides = [[max(0.0, m + (rng.uniform(-j, j) if j > 0 else 0.0)) for _ in range(2)]
             for m, j in zip(margin_mm, jitter_mm, strict=True)]
    lo, hi = zip(*sides, strict=True)
    return roi.Box(roi.expand_box(box, lo, spacing_mm, labels.shape).start,
                   roi.expand_box(box, hi, spacing_mm, labels.shape).stop)


def write_volume(arr: np.ndarray, spacing_mm, path: Path) -> None:
    """Write numpy (z, y, x) with identity direction and ITK spacing (x, y, z), via a temporary name."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing_mm)))
    write_image_atomic(img, path, compression_level=-1)   # -1: SimpleITK's default level


def _convert_case(case_id: str, image: Path, label: Path, spec: C2FSpec, out: dict[str, Path]) -> dict[str, list[str]]:
    """Write one case to every stage dataset in `out` (stage -> raw dataset folder); returns written ids."""
    case = load_canonical(image, label)
    bad = sorted(set(np.unique(case.labels).tolist()) - set(spec.label_ids))
    if bad:
        raise ValueError(f"{label}: labels {bad} are not in the dataset's label set {spec.label_ids}")
    written: dict[str, list[str]] = {}
    for stage_name, folder in out.items():
        stage = spec.stage(stage_name)
        if stage_name == "coarse":
            items = [(case_id, None)]
        else:
            rng = np.random.default_rng(zlib.crc32(case_id.encode()))
            # the crop follows the annotated organs, not the ignore label (unannotated voxels)
            organs = case.labels if spec.ignore_label is None else np.where(case.labels == spec.ignore_label, 0,
                                                                            case.labels)
            items = [(f"{case_id}_crop{k}", jittered_box(organs, case.spacing_mm, spec.margin_mm,
                                                        spec.jitter_mm, rng)) for k in range(spec.crops_per_case)]
        for item_id, box in items:
            img_path = folder / "imagesTr" / (item_id + IMAGE_SUFFIX)
            lab_path = folder / "labelsTr" / (item_id + FILE_ENDING)
            if not (img_path.is_file() and lab_path.is_file()):
                x, y = stage_arrays(case, stage, box)
                write_volume(x, stage.spacing_mm, img_path)
                write_volume(y, stage.spacing_mm, lab_path)
            written.setdefault(stage_name, []).append(item_id)
    return written


def convert(sources: list[Source], raw_dir: Path, dataset_id: int, spec: C2FSpec,
            stages: tuple[str, ...] = ("coarse", "fine"), workers: int = 1) -> dict[str, Path]:
    """Write the raw datasets `raw_dir/Dataset<id>_FLAREc2fCoarse` and `Dataset<id+1>_FLAREc2fFine`.

    Resumable: cases whose files exist are not recomputed (files appear only complete, by rename).
    Returns stage -> dataset folder.
    """
    raw_dir = Path(raw_dir)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names repeat: {names}")
    out = {stage: raw_dir / dataset_name(dataset_id, stage) for stage in stages}
    for folder in out.values():
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(f"{src.name}_{case}", img, lab, src.name) for src in sources for case, img, lab in src.cases()]
    case_source: dict[str, dict[str, str]] = {stage: {} for stage in stages}
    with tqdm(total=len(jobs), desc="convert", unit="case") as bar:
        results = run_jobs(_convert_case, [(cid, img, lab, spec, out) for cid, img, lab, _ in jobs], workers, bar)
    for (*_, src), written in zip(jobs, results, strict=True):
        for stage, ids in written.items():
            case_source[stage].update(dict.fromkeys(ids, src))
    for stage, folder in out.items():
        ds = {
            "channel_names": {"0": CHANNEL_NAME},
            "labels": dict(sorted(spec.labels.items(), key=lambda kv: kv[1])),
            "numTraining": len(case_source[stage]),
            "file_ending": FILE_ENDING,
            "name": folder.name,
            "description": f"flare-uda coarse-to-fine, {stage} stage: engine-preprocessed "
                           f"(spacing {spec.stage(stage).spacing_mm} mm, normalised)",
            "c2f": {"stage": stage, "spec": spec.to_dict(),
                    "sources": {s.name: {"images": str(s.images), "labels": str(s.labels)} for s in sources},
                    "case_source": dict(sorted(case_source[stage].items()))},
        }
        write_json(folder / "dataset.json", ds)
    return out
