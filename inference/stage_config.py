"""One network stage of a model card (inference.config): its grid, patch, normalisation, network and labels, as
typed, read-only config objects. Every spatial quantity is in numpy ARRAY order of the canonical image (z, y, x),
exactly as nnU-Net stores spacings and patch sizes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ModelCardError(ValueError):
    """The weights folder is unusable: missing file, bad hash, malformed card."""


@dataclass(frozen=True)
class Architecture:
    """PlainConvUNet description in the dynamic-network-architectures vocabulary (nnU-Net v2 plans)."""

    input_channels: int
    n_stages: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    strides: tuple[tuple[int, int, int], ...]
    n_conv_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    conv_bias: bool = True
    norm: str = "InstanceNorm3d"
    norm_eps: float = 1e-5
    norm_affine: bool = True
    nonlin: str = "LeakyReLU"
    nonlin_negative_slope: float = 1e-2
    name: str = "PlainConvUNet"

    def __post_init__(self) -> None:
        if self.name != "PlainConvUNet":
            raise ModelCardError(f"unsupported architecture {self.name!r} (only PlainConvUNet)")
        n = self.n_stages
        for key in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"):
            if len(getattr(self, key)) != n:
                raise ModelCardError(f"architecture.{key} has {len(getattr(self, key))} entries, n_stages is {n}")
        if len(self.n_conv_per_stage_decoder) != n - 1:
            raise ModelCardError("architecture.n_conv_per_stage_decoder must have n_stages - 1 entries")
        if self.norm not in ("InstanceNorm3d", "BatchNorm3d"):
            raise ModelCardError(f"unsupported norm {self.norm!r}")
        if self.nonlin not in ("LeakyReLU", "ReLU"):
            raise ModelCardError(f"unsupported nonlin {self.nonlin!r}")

    @property
    def total_stride(self) -> tuple[int, int, int]:
        """Product of the strides per axis: every patch edge must be a multiple of it."""
        out = [1, 1, 1]
        for s in self.strides:
            out = [o * int(v) for o, v in zip(out, s, strict=True)]
        return tuple(out)  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Architecture":
        d = dict(d)
        d["features_per_stage"] = tuple(int(v) for v in d["features_per_stage"])
        d["kernel_sizes"] = tuple(tuple(int(k) for k in ks) for ks in d["kernel_sizes"])
        d["strides"] = tuple(tuple(int(k) for k in ks) for ks in d["strides"])
        d["n_conv_per_stage"] = tuple(int(v) for v in d["n_conv_per_stage"])
        d["n_conv_per_stage_decoder"] = tuple(int(v) for v in d["n_conv_per_stage_decoder"])
        return cls(**d)


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation of one stage's input.

    scheme "zscore": clip to the image's [lower, upper] percentiles, subtract the image mean, divide by its std
    (statistics over the clipped image). scheme "fixed": clip to [clip_low, clip_high], subtract `mean`, divide by
    `std` (CT-style, dataset-wide constants). scheme "none": cast to float32 only.
    """

    scheme: str = "zscore"
    percentiles: tuple[float, float] = (0.5, 99.5)
    clip_low: float = 0.0
    clip_high: float = 0.0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in ("zscore", "fixed", "none"):
            raise ModelCardError(f"unknown normalisation scheme {self.scheme!r}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ModelCardError(f"normalisation percentiles {self.percentiles} are not 0 <= low < high <= 100")
        if self.scheme == "fixed" and not (self.std > 0 and self.clip_high > self.clip_low):
            raise ModelCardError("fixed normalisation needs std > 0 and clip_high > clip_low")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        d = dict(d)
        if "percentiles" in d:
            d["percentiles"] = tuple(float(v) for v in d["percentiles"])
        return cls(**d)


@dataclass(frozen=True)
class TTA:
    """Mirror test-time augmentation over `axes` (array axes of the patch, 0=z, 1=y, 2=x).

    mode "all": every subset of `axes` (nnU-Net's 2**len(axes) passes). mode "joint": the identity plus ONE pass
    flipped over all `axes` at once (2 passes). No axes: a single pass.
    """

    axes: tuple[int, ...] = ()
    mode: str = "all"

    def __post_init__(self) -> None:
        if self.mode not in ("all", "joint"):
            raise ModelCardError(f"unknown TTA mode {self.mode!r}")
        if any(a not in (0, 1, 2) for a in self.axes) or len(set(self.axes)) != len(self.axes):
            raise ModelCardError(f"TTA axes must be distinct values of 0, 1, 2, got {self.axes}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TTA":
        return cls(axes=tuple(int(a) for a in d.get("axes", ())), mode=d.get("mode", "all"))


@dataclass(frozen=True)
class StageConfig:
    """One network stage (coarse or fine).

    `spacing_mm` (z, y, x): the grid the network runs on; None on an axis keeps the input's own spacing there (an
    in-plane stage, patch size 1 along z and (1, 3, 3) kernels, runs on the scan's own slices like nnU-Net's 2d
    configuration, with no interpolation between slices). `min_slice_mm`, for such a stage only: a scan whose
    slices are thinner (a coronal or sagittal acquisition read as axial slices, a thin-slice volume) is resampled
    along z to this slice spacing first, so the network runs on fewer slices; its labels come back to every slice
    by nearest neighbour. None: every slice, whatever the spacing."""

    spacing_mm: tuple[float | None, float | None, float | None]
    patch_size: tuple[int, int, int]
    normalization: Normalization
    architecture: Architecture
    label_ids: tuple[int, ...]  # FLARE label written for each output channel; channel 0 is background (0)
    tta: TTA = TTA()
    step_size: float = 0.5
    files: dict[str, str] = field(default_factory=dict)  # backend -> file name inside the model folder
    min_slice_mm: float | None = None

    def __post_init__(self) -> None:
        if self.min_slice_mm is not None and (self.spacing_mm[0] is not None or not self.min_slice_mm > 0):
            raise ModelCardError(f"min_slice_mm must be a positive number and needs spacing_mm null along z (an "
                                 f"in-plane stage), got {self.min_slice_mm} with spacing_mm {self.spacing_mm}")
        if len(self.spacing_mm) != 3 or any(v is not None and not v > 0 for v in self.spacing_mm) or all(
                v is None for v in self.spacing_mm):
            raise ModelCardError(f"spacing_mm must be three positive numbers (null: keep the input's spacing on that "
                                 f"axis, not on all three), got {self.spacing_mm}")
        if len(self.patch_size) != 3 or min(self.patch_size) <= 0:
            raise ModelCardError(f"patch_size must be three positive integers, got {self.patch_size}")
        ts = self.architecture.total_stride
        if any(p % t for p, t in zip(self.patch_size, ts, strict=True)):
            raise ModelCardError(f"patch_size {self.patch_size} is not a multiple of the network stride {ts}")
        if not self.label_ids or self.label_ids[0] != 0:
            raise ModelCardError("label_ids must start with 0 (background)")
        if len(set(self.label_ids)) != len(self.label_ids):
            raise ModelCardError(f"label_ids repeat a label: {self.label_ids}")
        if not 0 < self.step_size <= 1:
            raise ModelCardError(f"step_size must be in (0, 1], got {self.step_size}")
        unknown = set(self.files) - {"torch", "onnx"}
        if unknown:
            raise ModelCardError(f"unknown backend(s) in files: {sorted(unknown)}")

    @property
    def num_classes(self) -> int:
        return len(self.label_ids)

    def grid_spacing(self, spacing_mm) -> tuple[float | None, float | None, float | None]:
        """The spacing this stage runs a scan of canonical spacing `spacing_mm` (z, y, x) at: `spacing_mm` of the
        card, with z raised to `min_slice_mm` where the scan's slices are thinner."""
        if self.min_slice_mm is not None and spacing_mm[0] < self.min_slice_mm:
            return (self.min_slice_mm,) + tuple(self.spacing_mm[1:])
        return self.spacing_mm

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageConfig":
        return cls(
            spacing_mm=tuple(None if v is None else float(v) for v in d["spacing_mm"]),  # type: ignore[arg-type]
            patch_size=tuple(int(v) for v in d["patch_size"]),  # type: ignore[arg-type]
            normalization=Normalization.from_dict(d.get("normalization", {})),
            architecture=Architecture.from_dict(d["architecture"]),
            label_ids=tuple(int(v) for v in d["label_ids"]),
            tta=TTA.from_dict(d.get("tta", {})),
            step_size=float(d.get("step_size", 0.5)),
            files=dict(d.get("files", {})),
            min_slice_mm=None if d.get("min_slice_mm") is None else float(d["min_slice_mm"]),
        )
