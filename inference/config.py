"""The weights folder format: a JSON model card read into typed, read-only config objects.

Layout of one model::

    weights/<model>/model.json      the card (this module reads and writes it)
    weights/<model>/coarse.pt       torch state_dict of the coarse network   (optional)
    weights/<model>/coarse.onnx     the same network exported to ONNX        (optional)
    weights/<model>/fine.pt / fine.onnx

Every spatial quantity is in numpy ARRAY order of the canonical image, i.e. (z, y, x), exactly as nnU-Net
stores spacings and patch sizes. Every file the card names carries its sha256: a missing or altered file is
refused before any network is built.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from .labels import LATERAL_PAIRS, OUTPUT_SCHEMES
CARD_NAME = "model.json"
FORMAT_VERSION = 1
MODALITIES = ("MRI", "PET")


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


@dataclass(frozen=True)
class RoiConfig:
    """How the coarse labels become the fine stage's region of interest.

    `max_extent_mm` (z, y, x), optional: the largest plausible extent of the union of the organs' boxes before the
    margin. When the coarse organs spread wider (spurious blobs of a poor coarse model, a whole-body scan), the
    ROI is the union of the subset of organs that fits and holds the most voxels (inference.roi.
    plausible_organ_box). None (the default, and what a card without the key reads as): no cap.

    `regrow_mm` > 0: when the fine stage's organs touch a face of the ROI that is not the image border, that face
    moves out by `regrow_mm` and the fine stage runs again, at most `regrow_rounds` times (a coarse stage that saw
    only part of an organ). 0 (the default of older cards): off.
    """

    margin_mm: tuple[float, float, float] = (20.0, 20.0, 20.0)
    largest_component_per_organ: bool = True  # drop stray coarse blobs before taking the union of boxes
    max_extent_mm: tuple[float, float, float] | None = None
    regrow_mm: float = 0.0
    regrow_rounds: int = 2

    def __post_init__(self) -> None:
        if not (isinstance(self.regrow_mm, numbers.Real) and not isinstance(self.regrow_mm, bool)
                and math.isfinite(self.regrow_mm) and self.regrow_mm >= 0):
            raise ModelCardError(f"roi.regrow_mm must be a number >= 0, got {self.regrow_mm!r}")
        if isinstance(self.regrow_rounds, bool) or not isinstance(self.regrow_rounds, int) or self.regrow_rounds < 0:
            raise ModelCardError(f"roi.regrow_rounds must be an integer >= 0, got {self.regrow_rounds!r}")
        object.__setattr__(self, "regrow_mm", float(self.regrow_mm))
        cap = self.max_extent_mm
        if cap is None:
            return
        if not isinstance(cap, (tuple, list)) or len(cap) != 3 or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in cap):
            raise ModelCardError(f"roi.max_extent_mm must be three positive numbers (z, y, x mm) or null, got {cap!r}")
        object.__setattr__(self, "max_extent_mm", tuple(float(v) for v in cap))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RoiConfig":
        return cls(
            margin_mm=tuple(float(v) for v in d.get("margin_mm", (20.0, 20.0, 20.0))),  # type: ignore[arg-type]
            largest_component_per_organ=bool(d.get("largest_component_per_organ", True)),
            max_extent_mm=d.get("max_extent_mm"),  # validated (and made a tuple of floats) by __post_init__
            regrow_mm=d.get("regrow_mm", 0.0),
            regrow_rounds=d.get("regrow_rounds", 2),
        )


# FLARE's left/right organ pairs as (right, left) labels: kidneys, adrenal glands
FLARE_LATERAL_PAIRS: tuple[tuple[int, int], ...] = LATERAL_PAIRS
# (organ, reference): each kidney keeps its largest piece below the liver (right) / spleen (left): FLARE labels
FLARE_CAUDAL_TO: tuple[tuple[int, int], ...] = ((2, 1), (13, 3))


@dataclass(frozen=True)
class PostprocessConfig:
    """Clean-up of the final labels: `lateral_pairs` (right, left) organs relabelled by the side of the body they lie
    on (see postprocess.assign_laterality; empty = off, the default of older cards), then the per-organ largest
    connected component (organs listed; empty tuple = none), for the organs of `caudal_to` (organ, reference) the
    largest one below the reference organ (see postprocess.keep_largest_component; empty = off)."""

    largest_component_organs: tuple[int, ...] = tuple(range(1, 14))
    connectivity: int = 26
    lateral_pairs: tuple[tuple[int, int], ...] = ()
    caudal_to: tuple[tuple[int, int], ...] = ()   # (organ, reference): see postprocess.keep_largest_component

    def __post_init__(self) -> None:
        if self.connectivity not in (6, 18, 26):
            raise ModelCardError(f"connectivity must be 6, 18 or 26, got {self.connectivity}")
        try:
            pairs = tuple((int(r), int(left)) for r, left in self.lateral_pairs)
        except (TypeError, ValueError):
            raise ModelCardError(f"postprocess.lateral_pairs must be [right, left] label pairs, got "
                                 f"{self.lateral_pairs!r}") from None
        flat = [v for pair in pairs for v in pair]
        if any(not 0 < v < 256 for v in flat) or len(set(flat)) != len(flat):
            raise ModelCardError(f"postprocess.lateral_pairs: labels must be distinct and in 1..255, got {pairs}")
        object.__setattr__(self, "lateral_pairs", pairs)
        try:
            caudal = tuple((int(o), int(ref)) for o, ref in self.caudal_to)
        except (TypeError, ValueError):
            raise ModelCardError(f"postprocess.caudal_to must be [organ, reference] label pairs, got "
                                 f"{self.caudal_to!r}") from None
        organs = [o for o, _ in caudal]
        refs = {ref for _, ref in caudal}
        if (any(not 0 < v < 256 for pair in caudal for v in pair) or len(set(organs)) != len(organs)
                or refs & set(organs)):   # also catches an organ that is its own reference
            raise ModelCardError(f"postprocess.caudal_to: labels in 1..255, each organ once, no organ that is also "
                                 f"a reference, got {caudal}")
        if not set(organs) <= set(self.largest_component_organs):
            missing = sorted(set(organs) - set(self.largest_component_organs))
            raise ModelCardError(f"postprocess.caudal_to: organs {missing} are not in largest_component_organs (the "
                                 "rule picks which component to keep)")
        object.__setattr__(self, "caudal_to", caudal)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PostprocessConfig":
        return cls(
            largest_component_organs=tuple(int(v) for v in d.get("largest_component_organs", range(1, 14))),
            connectivity=int(d.get("connectivity", 26)),
            lateral_pairs=d.get("lateral_pairs", ()),  # validated (tuple of int pairs) by __post_init__
            caudal_to=d.get("caudal_to", ()),
        )


@dataclass(frozen=True)
class ModelCard:
    name: str
    description: str
    modalities: tuple[str, ...]
    coarse: StageConfig
    fine: StageConfig
    roi: RoiConfig = RoiConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest
    format_version: int = FORMAT_VERSION
    # modality -> {network (FLARE) label: the value its mask holds}; labels not listed are written as background.
    # A modality not given here uses inference.labels.OUTPUT_SCHEMES (MRI: FLARE numbers; PET: 1, 2, 3, 13 -> 1-4).
    output_labels: dict[str, dict[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ModelCardError(f"card format_version {self.format_version}, this engine reads {FORMAT_VERSION}")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ModelCardError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        try:
            maps = {str(m): {int(k): int(v) for k, v in lut.items()} for m, lut in self.output_labels.items()}
        except (AttributeError, TypeError, ValueError):
            raise ModelCardError(f"output_labels must map modality -> {{label: value}}, got "
                                 f"{self.output_labels!r}") from None
        for m, lut in maps.items():
            if m not in self.modalities:
                raise ModelCardError(f"output_labels.{m}: the card does not serve {m} (modalities {self.modalities})")
            if any(not 0 < v < 256 for kv in lut.items() for v in kv) or len(set(lut.values())) != len(lut):
                raise ModelCardError(f"output_labels.{m}: labels and values in 1..255, values distinct, got {lut}")
        object.__setattr__(self, "output_labels", maps)
        for stage_name, stage in (("coarse", self.coarse), ("fine", self.fine)):
            for backend, fname in stage.files.items():
                if fname not in self.sha256:
                    raise ModelCardError(f"{stage_name}.files[{backend}] = {fname!r} has no sha256 in the card")

    def output_map(self, modality: str) -> dict[int, int]:
        """Network label -> the value written in a `modality` mask."""
        return self.output_labels.get(modality, OUTPUT_SCHEMES[modality])

    def stage(self, name: str) -> StageConfig:
        if name not in ("coarse", "fine"):
            raise KeyError(name)
        return self.coarse if name == "coarse" else self.fine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        try:
            return cls(
                name=str(d["name"]),
                description=str(d.get("description", "")),
                modalities=tuple(str(m) for m in d["modalities"]),
                coarse=StageConfig.from_dict(d["coarse"]),
                fine=StageConfig.from_dict(d["fine"]),
                roi=RoiConfig.from_dict(d.get("roi", {})),
                postprocess=PostprocessConfig.from_dict(d.get("postprocess", {})),
                provenance=dict(d.get("provenance", {})),
                sha256={str(k): str(v) for k, v in d.get("sha256", {}).items()},
                format_version=int(d.get("format_version", FORMAT_VERSION)),
                output_labels=d.get("output_labels", {}),   # validated (ints) by __post_init__
            )
        except KeyError as exc:
            raise ModelCardError(f"model card lacks the field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ModelCardError):
                raise
            raise ModelCardError(f"model card is malformed: {exc}") from None
