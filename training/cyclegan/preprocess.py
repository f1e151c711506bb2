"""Volume preprocessing for the 2D CycleGAN, each transform next to its inverse.

Pipeline (forward), on a volume in SimpleITK array order (numpy; SimpleITK itself only for `prepare_image`):
  reorient   array axes to the engine's canonical (z, y, x), direction ~ identity (inference.orientation: axial
             slices, the same in-plane orientation for every scan)               <-> undo the permutation/flips
  window     intensities to [-1, 1]: CT clipped to a fixed HU window, MRI/PET to per-volume percentiles
                                                                                 <-> scale back (clipped values stay clipped)
  resample   in-plane to a common spacing (bilinear, antialiased; labels nearest), z untouched
                                                                                 <-> resample back to the original in-plane size
  body crop  (optional) in-plane bounding box of the body (+ margin)             <-> pad with the background value (-1)
  pad        slice sides up to a multiple of the networks' divisor               <-> crop the padding off

Arrays are numpy (z, y, x) float32 in [-1, 1] after `prepare_volume`; `restore_volume` maps such an array (a
translated one, say) back onto the original voxel grid, so writing it with the input's geometry is exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from inference.orientation import Orientation, orientation_from_direction

if TYPE_CHECKING:
    import SimpleITK as sitk

BACKGROUND = -1.0          # value of empty space in normalised images
BODY_THRESHOLD = -0.9      # normalised intensity above which a voxel counts as body (5 % of the window)


# ----------------------------------------------------------------------------------------------------------------
# intensity
@dataclass(frozen=True)
class IntensityWindow:
    """Clip to [low, high] and scale linearly to [-1, 1]."""
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"intensity window needs high > low, got ({self.low}, {self.high})")

    def apply(self, array: np.ndarray) -> np.ndarray:
        a = np.clip(array.astype(np.float32), self.low, self.high)
        return ((a - self.low) * (2.0 / (self.high - self.low)) - 1.0).astype(np.float32)

    def invert(self, array: np.ndarray) -> np.ndarray:
        a = np.clip(array.astype(np.float32), -1.0, 1.0)
        return ((a + 1.0) * (0.5 * (self.high - self.low)) + self.low).astype(np.float32)


def percentile_window(array: np.ndarray, percentiles: tuple[float, float]) -> IntensityWindow:
    """Window from the volume's own percentiles (MRI, PET). A constant volume gets a unit-wide window."""
    lo, hi = (float(v) for v in np.percentile(array.astype(np.float32), percentiles))
    return IntensityWindow(lo, hi if hi > lo else lo + 1.0)


def window_for(array: np.ndarray, modality: str, ct_window_hu: tuple[float, float],
               percentiles: tuple[float, float]) -> IntensityWindow:
    if modality == "ct":
        return IntensityWindow(float(ct_window_hu[0]), float(ct_window_hu[1]))
    if modality in ("mri", "pet"):
        return percentile_window(array, percentiles)
    raise ValueError(f"unknown modality {modality!r} (ct, mri or pet)")


# ----------------------------------------------------------------------------------------------------------------
# in-plane resampling
@dataclass(frozen=True)
class InPlaneResample:
    """Resample every axial slice from `shape_yx` to `new_shape_yx` (same field of view)."""
    shape_yx: tuple[int, int]
    new_shape_yx: tuple[int, int]

    @classmethod
    def to_spacing(cls, shape_yx: tuple[int, int], spacing_yx_mm: tuple[float, float],
                   target_mm: float) -> "InPlaneResample":
        new = tuple(max(1, int(round(n * s / target_mm))) for n, s in zip(shape_yx, spacing_yx_mm, strict=True))
        return cls(tuple(int(n) for n in shape_yx), new)

    @staticmethod
    def _image(array: np.ndarray, size: tuple[int, int], chunk: int = 64) -> np.ndarray:
        if tuple(array.shape[1:]) == tuple(size):
            return array.astype(np.float32, copy=True)
        out = np.empty((array.shape[0],) + tuple(size), dtype=np.float32)
        downsampling = size[0] < array.shape[1] or size[1] < array.shape[2]
        for z0 in range(0, array.shape[0], chunk):
            t = torch.from_numpy(np.ascontiguousarray(array[z0:z0 + chunk], dtype=np.float32))[:, None]
            r = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=downsampling)
            out[z0:z0 + chunk] = r[:, 0].numpy()
        return out

    @staticmethod
    def _labels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if tuple(array.shape[1:]) == tuple(size):
            return array.copy()
        # nearest neighbour with pixel-centre alignment (same convention as the bilinear image path)
        iy = np.minimum(((np.arange(size[0]) + 0.5) * array.shape[1] / size[0]).astype(np.int64), array.shape[1] - 1)
        ix = np.minimum(((np.arange(size[1]) + 0.5) * array.shape[2] / size[1]).astype(np.int64), array.shape[2] - 1)
        return array[:, iy][:, :, ix]

    def apply(self, array: np.ndarray) -> np.ndarray:
        return self._image(array, self.new_shape_yx)

    def apply_labels(self, labels: np.ndarray) -> np.ndarray:
        return self._labels(labels, self.new_shape_yx)

    def invert(self, array: np.ndarray) -> np.ndarray:
        return self._image(array, self.shape_yx)

    def invert_labels(self, labels: np.ndarray) -> np.ndarray:
        return self._labels(labels, self.shape_yx)


# ----------------------------------------------------------------------------------------------------------------
# body crop
@dataclass(frozen=True)
class InPlaneCrop:
    """Keep rows y0:y1 and columns x0:x1 of every slice; the inverse pads with `fill`."""
    shape_yx: tuple[int, int]
    y0: int
    y1: int
    x0: int
    x1: int

    @classmethod
    def full(cls, shape_yx: tuple[int, int]) -> "InPlaneCrop":
        return cls(tuple(shape_yx), 0, shape_yx[0], 0, shape_yx[1])

    @classmethod
    def body(cls, normalised: np.ndarray, margin_px: int, threshold: float = BODY_THRESHOLD) -> "InPlaneCrop":
        """Bounding box of the largest connected body region of the slices' maximum projection, plus a margin.

        Falls back to the full slice when nothing is above the threshold."""
        shape = tuple(int(n) for n in normalised.shape[1:])
        mask = (normalised > threshold).any(axis=0)
        if not mask.any():
            return cls.full(shape)
        comp, n = ndimage.label(mask)
        largest = 1 + int(np.argmax(ndimage.sum_labels(mask, comp, index=np.arange(1, n + 1))))
        ys, xs = np.nonzero(comp == largest)
        return cls(shape, max(0, int(ys.min()) - margin_px), min(shape[0], int(ys.max()) + 1 + margin_px),
                   max(0, int(xs.min()) - margin_px), min(shape[1], int(xs.max()) + 1 + margin_px))

    def apply(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array[:, self.y0:self.y1, self.x0:self.x1])

    def invert(self, array: np.ndarray, fill: float = BACKGROUND) -> np.ndarray:
        out = np.full((array.shape[0],) + self.shape_yx, fill, dtype=array.dtype)
        out[:, self.y0:self.y1, self.x0:self.x1] = array
        return out


# ----------------------------------------------------------------------------------------------------------------
# padding to the networks' divisor
@dataclass(frozen=True)
class InPlanePad:
    """Pad slices (centred) so both sides are multiples of `divisor`, or at least `min_size`."""
    shape_yx: tuple[int, int]
    before: tuple[int, int]
    after: tuple[int, int]

    @classmethod
    def to_multiple(cls, shape_yx: tuple[int, int], divisor: int, min_size: int = 0) -> "InPlanePad":
        shape = tuple(int(n) for n in shape_yx)
        extra = [-(-max(n, min_size) // divisor) * divisor - n for n in shape]     # ceil to the divisor, minus n
        return cls(shape, tuple(e // 2 for e in extra), tuple(e - e // 2 for e in extra))

    def apply(self, array: np.ndarray, fill: float = BACKGROUND) -> np.ndarray:
        if not any(self.before) and not any(self.after):
            return array
        return np.pad(array, ((0, 0), (self.before[0], self.after[0]), (self.before[1], self.after[1])),
                      constant_values=fill)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Crop the padding off the last two axes (slices (z, y, x), or network outputs (z, C, y, x))."""
        y, x = self.shape_yx
        return array[..., self.before[0]:self.before[0] + y, self.before[1]:self.before[1] + x]


# ----------------------------------------------------------------------------------------------------------------
# the whole volume
@dataclass(frozen=True)
class VolumeTransform:
    """Everything needed to map a prepared array back onto the original voxel grid."""
    shape_zyx: tuple[int, int, int]     # original SimpleITK array shape
    reorientation: Orientation          # the engine's canonical orientation (inference.orientation)
    window: IntensityWindow
    resample: InPlaneResample
    crop: InPlaneCrop


@dataclass
class PreparedVolume:
    name: str
    image: np.ndarray                   # float32 (z, y, x) in [-1, 1], canonical orientation, common spacing
    label: np.ndarray | None            # uint8 (z, y, x) on the same grid, or None
    transform: VolumeTransform


def prepare_arrays(image: np.ndarray, spacing_xyz: tuple[float, float, float], direction: tuple[float, ...],
                   modality: str, *, spacing_mm: float, ct_window_hu: tuple[float, float],
                   percentiles: tuple[float, float], body_crop: bool = False, body_margin_mm: float = 10.0,
                   label: np.ndarray | None = None, name: str = "volume") -> PreparedVolume:
    """Forward pipeline on a SimpleITK-ordered array (z, y, x) with its spacing (x, y, z) and direction."""
    reo = orientation_from_direction(direction)
    canon = np.ascontiguousarray(reo.apply(image))
    sp_z, sp_y, sp_x = reo.spacing(tuple(reversed(spacing_xyz)))
    window = window_for(canon, modality, ct_window_hu, percentiles)
    normalised = window.apply(canon)
    resample = InPlaneResample.to_spacing(canon.shape[1:], (sp_y, sp_x), spacing_mm)
    normalised = resample.apply(normalised)
    lab = None if label is None else resample.apply_labels(reo.apply(label))
    crop = InPlaneCrop.full(resample.new_shape_yx)
    if body_crop:
        crop = InPlaneCrop.body(normalised, int(round(body_margin_mm / spacing_mm)))
        normalised = crop.apply(normalised)
        lab = None if lab is None else crop.apply(lab)
    transform = VolumeTransform(tuple(int(n) for n in image.shape), reo, window, resample, crop)
    return PreparedVolume(name, normalised.astype(np.float32), lab, transform)


def restore_volume(array: np.ndarray, transform: VolumeTransform,
                   window: IntensityWindow | None = None) -> np.ndarray:
    """Inverse pipeline: a prepared-grid array in [-1, 1] -> intensities on the original grid (SimpleITK order).

    `window` picks the intensity scale of the output (default: the input's own), e.g. the target modality's typical
    window when `array` is a translated image."""
    out = transform.crop.invert(array.astype(np.float32), fill=BACKGROUND)
    out = transform.resample.invert(out)
    out = (window or transform.window).invert(out)
    out = np.ascontiguousarray(transform.reorientation.undo(out))
    if out.shape != transform.shape_zyx:
        raise AssertionError(f"restored shape {out.shape} != original {transform.shape_zyx}")
    return out


def restore_labels(labels: np.ndarray, transform: VolumeTransform) -> np.ndarray:
    """Inverse pipeline for a label map on the prepared grid (nearest neighbour, background outside the crop)."""
    out = transform.crop.invert(labels, fill=0)
    out = transform.resample.invert_labels(out)
    return np.ascontiguousarray(transform.reorientation.undo(out))


def preprocess_kwargs(opts) -> dict:
    """The preprocessing settings of a `CycleGANOptions`, as `prepare_arrays` keywords."""
    return {"spacing_mm": opts.spacing_mm, "ct_window_hu": opts.ct_window_hu, "percentiles": opts.percentiles,
            "body_crop": opts.body_crop, "body_margin_mm": opts.body_margin_mm}


def prepare_image(image: sitk.Image, modality: str, opts, label: sitk.Image | None = None,
                  name: str = "volume") -> PreparedVolume:
    """`prepare_arrays` for SimpleITK images and a `CycleGANOptions`."""
    import SimpleITK as sitk

    return prepare_arrays(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetDirection(), modality,
                          **preprocess_kwargs(opts), label=None if label is None else sitk.GetArrayFromImage(label),
                          name=name)
