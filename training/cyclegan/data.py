"""Cases from folders of NIfTI (FLARE naming), their preprocessing into a cache, and the unpaired slice dataset.

Folder conventions: images `<case>_0000.nii.gz`, labels `<case>.nii.gz` (uint8, FLARE organ numbering).
Preprocessed volumes are cached as `.npy` (float16 images, uint8 labels) and memory-mapped by the dataset, so
the number of training volumes is bounded by disk, not RAM.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from inference.atomic import atomic_path, write_json
from inference.io import read_volume

from .options import CycleGANOptions
from .preprocess import BACKGROUND, IntensityWindow, PreparedVolume, prepare_image

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
CHANNEL_TAG = "_0000"


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path | None = None


def _strip_suffix(filename: str) -> str | None:
    for suffix in IMAGE_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def find_cases(images_dir: Path, labels_dir: Path | None = None) -> list[Case]:
    """Cases of a FLARE-style folder pair; every image needs its label when `labels_dir` is given."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {images_dir}")
    cases = []
    for path in sorted(images_dir.iterdir()):
        stem = _strip_suffix(path.name)
        if stem is None or path.name.startswith("."):
            continue
        name = stem[: -len(CHANNEL_TAG)] if stem.endswith(CHANNEL_TAG) else stem
        label = None
        if labels_dir is not None:
            candidates = [Path(labels_dir) / (name + s) for s in IMAGE_SUFFIXES]
            found = [c for c in candidates if c.exists()]
            if not found:
                raise FileNotFoundError(f"no label for image {path}: expected {candidates[0]}")
            label = found[0]
        cases.append(Case(name, path, label))
    if not cases:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    return cases


def read_image(path: Path) -> sitk.Image:
    """Read a volume; any failure is a ValueError naming the file."""
    return read_volume(path)


def read_case(case: Case, num_classes: int | None = None) -> tuple[sitk.Image, sitk.Image | None]:
    """Image and label of a case, checked against each other: the label must have the image's size and integer
    values in [0, num_classes); a geometry difference (spacing/origin/direction) only warns, the label's voxels
    are then taken on the image's grid (nnU-Net does the same)."""
    image = read_image(case.image)
    if case.label is None:
        return image, None
    label = read_image(case.label)
    if label.GetSize() != image.GetSize():
        raise ValueError(f"label {case.label} has size {label.GetSize()} but image {case.image} has size "
                         f"{image.GetSize()}")
    if not (np.allclose(label.GetSpacing(), image.GetSpacing(), rtol=1e-3, atol=1e-4)
            and np.allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-2)
            and np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3)):
        warnings.warn(f"label {case.label} geometry differs from image {case.image}; using the image's",
                      stacklevel=2)
    arr = sitk.GetArrayFromImage(label)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"label {case.label} has non-integer values")
    if arr.min() < 0 or (num_classes is not None and arr.max() >= num_classes):
        raise ValueError(f"label {case.label} has values in [{arr.min()}, {arr.max()}], expected 0..{num_classes - 1}")
    fixed = sitk.GetImageFromArray(arr.astype(np.uint8))
    fixed.CopyInformation(image)
    return image, fixed


def prepare_case(case: Case, modality: str, opts: CycleGANOptions) -> PreparedVolume:
    image, label = read_case(case, opts.num_classes)
    try:
        return prepare_image(image, modality, opts, label=label, name=str(case.image))
    except ValueError as exc:
        raise ValueError(f"{case.image}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# cache
@dataclass(frozen=True)
class CachedVolume:
    name: str
    image_path: Path
    label_path: Path | None
    num_slices: int
    window: tuple[float, float]

    def image(self) -> np.ndarray:
        return np.load(self.image_path, mmap_mode="r")

    def label(self) -> np.ndarray | None:
        return None if self.label_path is None else np.load(self.label_path, mmap_mode="r")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def cache_cases(cases: list[Case], modality: str, opts: CycleGANOptions, cache_dir: Path,
                progress: bool = True) -> list[CachedVolume]:
    """Preprocess each case once into `cache_dir` (reused when the preprocessing options are unchanged)."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = {"modality": modality, "spacing_mm": opts.spacing_mm, "ct_window_hu": list(opts.ct_window_hu),
           "percentiles": list(opts.percentiles), "body_crop": opts.body_crop, "body_margin_mm": opts.body_margin_mm}
    out = []
    for case in tqdm(cases, desc=f"preprocess {modality}", disable=not progress, leave=False):
        meta_path = cache_dir / f"{case.name}.json"
        img_path = cache_dir / f"{case.name}_img.npy"
        lab_path = cache_dir / f"{case.name}_lab.npy" if case.label is not None else None
        source = {"image": str(case.image), "label": str(case.label) if case.label else None,
                  "stat": [[p.stat().st_size, p.stat().st_mtime_ns] for p in (case.image, case.label) if p]}
        meta = None
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            fresh = (meta.get("key") == key and meta.get("source") == source
                     and img_path.exists() and (lab_path is None or lab_path.exists()))
            if not fresh:
                meta = None
        if meta is None:
            vol = prepare_case(case, modality, opts)
            _save_npy(img_path, vol.image.astype(np.float16))
            if lab_path is not None:
                _save_npy(lab_path, vol.label.astype(np.uint8))
            meta = {"key": key, "source": source, "num_slices": int(vol.image.shape[0]),
                    "window": [vol.transform.window.low, vol.transform.window.high]}
            write_json(meta_path, meta, indent=None)
        out.append(CachedVolume(case.name, img_path, lab_path, int(meta["num_slices"]), tuple(meta["window"])))
    return out


def typical_window(volumes: list[CachedVolume]) -> IntensityWindow:
    """Median intensity window of the target volumes: the scale written into translated images."""
    lows = [v.window[0] for v in volumes]
    highs = [v.window[1] for v in volumes]
    return IntensityWindow(float(np.median(lows)), float(np.median(highs)))


# ----------------------------------------------------------------------------------------------------------------
# slices
def random_crop_or_pad(image: np.ndarray, label: np.ndarray | None, size: int,
                       generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Random `size` x `size` window of a 2D slice, padded with background (-1 / label 0) where the slice is smaller."""
    h, w = image.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image = np.pad(image, pads, constant_values=BACKGROUND)
        if label is not None:
            label = np.pad(label, pads, constant_values=0)
        h, w = image.shape
    y = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    x = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    image = image[y:y + size, x:x + size]
    if label is not None:
        label = label[y:y + size, x:x + size]
    return image, label


class UnpairedSliceDataset(Dataset):
    """Item i: CT slice i (with its label) and a random target slice, both randomly cropped to `slice_size`.

    `length` > 0 draws CT slices at random instead (an epoch of fixed size)."""

    def __init__(self, ct: list[CachedVolume], target: list[CachedVolume], slice_size: int, length: int = 0):
        if not ct or not target:
            raise ValueError("need at least one CT and one target volume")
        if any(v.label_path is None for v in ct):
            raise ValueError("every CT volume needs a label map")
        self.ct, self.target, self.slice_size = ct, target, slice_size
        self.ct_index = [(v, z) for v, vol in enumerate(ct) for z in range(vol.num_slices)]
        self.target_index = [(v, z) for v, vol in enumerate(target) for z in range(vol.num_slices)]
        self.length = length

    def __len__(self) -> int:
        return self.length or len(self.ct_index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.length:
            i = int(torch.randint(0, len(self.ct_index), (1,)))
        v, z = self.ct_index[i]
        ct_img, ct_lab = random_crop_or_pad(np.asarray(self.ct[v].image()[z], dtype=np.float32),
                                            np.asarray(self.ct[v].label()[z]), self.slice_size)
        tv, tz = self.target_index[int(torch.randint(0, len(self.target_index), (1,)))]
        tg_img, _ = random_crop_or_pad(np.asarray(self.target[tv].image()[tz], dtype=np.float32), None,
                                       self.slice_size)
        return {"A": torch.from_numpy(np.ascontiguousarray(ct_img))[None],
                "A_label": torch.from_numpy(np.ascontiguousarray(ct_lab).astype(np.int64)),
                "B": torch.from_numpy(np.ascontiguousarray(tg_img))[None]}


def split_cases(cases: list[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Held-out CT cases for the quality numbers: round(fraction * n), at least one when n >= 2, none when n < 2."""
    n = len(cases)
    n_val = 0 if n < 2 or val_fraction <= 0 else min(n - 1, max(1, int(round(val_fraction * n))))
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val], [cases[i] for i in val]
