"""Cases from folders of NIfTI (FLARE naming) or from memory, their preprocessing into a cache, and the unpaired
slice dataset.

Folder conventions: images `<case>_0000.nii.gz`, labels `<case>.nii.gz` (uint8, FLARE organ numbering).
`ArrayCase` holds a volume in memory (numpy, SimpleITK array order); every function taking cases takes either kind,
and SimpleITK is imported only where a file is read (training runs from arrays on a machine without it).
Preprocessed volumes are cached as `.npy` (float16 images, uint8 labels) and memory-mapped by the dataset, so
the number of training volumes is bounded by disk, not RAM.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from inference.atomic import atomic_path, write_json

from .options import CycleGANOptions
from .preprocess import BACKGROUND, IntensityWindow, PreparedVolume, prepare_arrays, preprocess_kwargs

if TYPE_CHECKING:
    import SimpleITK as sitk

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
CHANNEL_TAG = "_0000"


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True, eq=False)
class ArrayCase:
    """A case in memory: `image` in SimpleITK array order (z, y, x), SimpleITK's (x, y, z) spacing and row-major
    3 x 3 direction, optional `label` on the same grid (FLARE organ numbering). Equality is identity."""
    name: str
    image: np.ndarray
    spacing_xyz: tuple[float, float, float]
    direction: tuple[float, ...]
    label: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = np.shape(self.image)
        if len(shape) != 3:
            raise ValueError(f"{self.name}: image must be 3D (z, y, x), got shape {shape}")
        if len(self.spacing_xyz) != 3 or not all(float(s) > 0 for s in self.spacing_xyz):
            raise ValueError(f"{self.name}: spacing must be 3 positive numbers (x, y, z), got {self.spacing_xyz}")
        if len(self.direction) != 9:
            raise ValueError(f"{self.name}: direction must be 9 numbers (3 x 3, row-major), got {self.direction}")
        if self.label is not None and np.shape(self.label) != shape:
            raise ValueError(f"{self.name}: label shape {np.shape(self.label)} != image shape {shape}")
        object.__setattr__(self, "spacing_xyz", tuple(float(v) for v in self.spacing_xyz))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))


AnyCase = Union[Case, ArrayCase]


def _strip_suffix(filename: str) -> str | None:
    return next((filename[: -len(s)] for s in IMAGE_SUFFIXES if filename.endswith(s)), None)


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
        name = stem.removesuffix(CHANNEL_TAG)
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


def checked_labels(labels: np.ndarray, what: str, num_classes: int | None = None) -> np.ndarray:
    """`labels` as uint8 after checking they are integers in [0, num_classes) (0..255 without num_classes)."""
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError(f"label {what} has non-integer values")
    top = 255 if num_classes is None else num_classes - 1
    if arr.min() < 0 or arr.max() > top:
        raise ValueError(f"label {what} has values in [{arr.min()}, {arr.max()}], expected 0..{top}")
    return arr.astype(np.uint8)


def read_case(case: Case, num_classes: int | None = None) -> tuple[sitk.Image, sitk.Image | None]:
    """Image and label of a case, checked against each other: the label must have the image's size and integer
    values in [0, num_classes); a geometry difference (spacing/origin/direction) only warns, the label's voxels
    are then taken on the image's grid (nnU-Net does the same)."""
    import SimpleITK as sitk

    from inference.io import read_volume      # a ValueError naming the file on any failure

    image = read_volume(case.image)
    if case.label is None:
        return image, None
    label = read_volume(case.label)
    if label.GetSize() != image.GetSize():
        raise ValueError(f"label {case.label} has size {label.GetSize()} but image {case.image} has size "
                         f"{image.GetSize()}")
    if not (np.allclose(label.GetSpacing(), image.GetSpacing(), rtol=1e-3, atol=1e-4)
            and np.allclose(label.GetOrigin(), image.GetOrigin(), atol=1e-2)
            and np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3)):
        warnings.warn(f"label {case.label} geometry differs from image {case.image}; using the image's",
                      stacklevel=2)
    fixed = sitk.GetImageFromArray(checked_labels(sitk.GetArrayFromImage(label), str(case.label), num_classes))
    fixed.CopyInformation(image)
    return image, fixed


def array_case(name: str, image: sitk.Image, label: sitk.Image | None = None) -> ArrayCase:
    """The ArrayCase of SimpleITK images (the label's voxels as they are: read_case puts them on the image grid)."""
    import SimpleITK as sitk

    return ArrayCase(name, sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetDirection(),
                     None if label is None else sitk.GetArrayFromImage(label))


def load_case(case: AnyCase, num_classes: int | None = None) -> ArrayCase:
    """The arrays of either kind of case, its label checked and uint8: a file case is read (`read_case`), an
    in-memory one has its label checked (`checked_labels`)."""
    if isinstance(case, Case):
        return array_case(case.name, *read_case(case, num_classes))
    if case.label is None:
        return case
    return dataclasses.replace(case, label=checked_labels(case.label, case.name, num_classes))


def case_source(case: AnyCase) -> str:
    """How messages name a case: its image file, or an in-memory case's name."""
    return str(case.image) if isinstance(case, Case) else case.name


def prepare_case(case: AnyCase, modality: str, opts: CycleGANOptions) -> PreparedVolume:
    """Preprocess either kind of case (with its label when it has one); errors name the case (`case_source`)."""
    arrays = load_case(case, opts.num_classes)
    source = case_source(case)
    try:
        return prepare_arrays(arrays.image, arrays.spacing_xyz, arrays.direction, modality, **preprocess_kwargs(opts),
                              label=arrays.label, name=source)
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith(source) else f"{source}: {exc}") from exc


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


def _source_key(case: AnyCase) -> dict:
    """What tells whether a cached case is still fresh: a file case's paths, sizes and mtimes; an in-memory case's
    content hash (image, label, spacing, direction), so it is preprocessed again only when its arrays changed."""
    if isinstance(case, Case):
        return {"image": str(case.image), "label": str(case.label) if case.label else None,
                "stat": [[p.stat().st_size, p.stat().st_mtime_ns] for p in (case.image, case.label) if p]}
    digest = hashlib.blake2b(repr((case.spacing_xyz, case.direction)).encode(), digest_size=16)
    for tag, arr in (("image", case.image), ("label", case.label)):
        if arr is not None:
            arr = np.ascontiguousarray(arr)
            digest.update(f"{tag} {arr.dtype.str} {arr.shape}".encode())
            digest.update(memoryview(arr).cast("B"))
    return {"array": digest.hexdigest()}


def cache_cases(cases: list[AnyCase], modality: str, opts: CycleGANOptions, cache_dir: Path,
                progress: bool = True) -> list[CachedVolume]:
    """Preprocess each case (file or in memory) once into `cache_dir` (reused when the preprocessing options and
    the case are unchanged, see `_source_key`)."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = {"modality": modality,
           **{k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_kwargs(opts).items()}}
    out = []
    for case in tqdm(cases, desc=f"preprocess {modality}", disable=not progress, leave=False):
        meta_path = cache_dir / f"{case.name}.json"
        img_path = cache_dir / f"{case.name}_img.npy"
        lab_path = cache_dir / f"{case.name}_lab.npy" if case.label is not None else None
        source = _source_key(case)
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        fresh = (meta is not None and meta.get("key") == key and meta.get("source") == source
                 and img_path.exists() and (lab_path is None or lab_path.exists()))
        if not fresh:
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
    low, high = np.median([v.window for v in volumes], axis=0)
    return IntensityWindow(float(low), float(high))


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
        label = None if label is None else np.pad(label, pads, constant_values=0)
        h, w = image.shape
    y = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    x = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    window = (slice(y, y + size), slice(x, x + size))
    return image[window], None if label is None else label[window]


class UnpairedSliceDataset(Dataset):
    """Item i: CT slice i (with its label) and a random target slice, both randomly cropped to `slice_size`.

    `length` > 0 draws CT slices at random instead (an epoch of fixed size)."""

    def __init__(self, ct: list[CachedVolume], target: list[CachedVolume], slice_size: int, length: int = 0):
        if not ct or not target:
            raise ValueError("need at least one CT and one target volume")
        if any(v.label_path is None for v in ct):
            raise ValueError("every CT volume needs a label map")
        self.ct, self.target, self.slice_size, self.length = ct, target, slice_size, length
        self.ct_index = [(v, z) for v, vol in enumerate(ct) for z in range(vol.num_slices)]
        self.target_index = [(v, z) for v, vol in enumerate(target) for z in range(vol.num_slices)]

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


def split_cases(cases: list[AnyCase], val_fraction: float, seed: int) -> tuple[list[AnyCase], list[AnyCase]]:
    """Held-out CT cases for the quality numbers: round(fraction * n), at least one when n >= 2, none when n < 2."""
    n = len(cases)
    n_val = 0 if n < 2 or val_fraction <= 0 else min(n - 1, max(1, int(round(val_fraction * n))))
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val], [cases[i] for i in val]
