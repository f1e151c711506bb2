"""The weights folder format: a JSON model card read into typed, read-only config objects.

Layout of one model::

    weights/<model>/model.json      the card (this module reads and writes it)
    weights/<model>/coarse.pt       torch state_dict of the coarse network   (optional)
    weights/<model>/coarse.onnx     the same network exported to ONNX        (optional)
    weights/<model>/fine.pt / fine.onnx
    weights/<model>/context.pt / context.onnx   the optional context stage (inference.context)

Every spatial quantity is in numpy ARRAY order of the canonical image, i.e. (z, y, x), exactly as nnU-Net
stores spacings and patch sizes. Every file the card names carries its sha256: a missing or altered file is
refused before any network is built.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

from .context import ContextConfig
from .labels import LATERAL_PAIRS, OUTPUT_SCHEMES
from .stage_config import TTA, Architecture, ModelCardError, Normalization, StageConfig

__all__ = ["CARD_NAME", "FLARE_CAUDAL_TO", "FLARE_LATERAL_PAIRS", "TTA", "Architecture", "ContextConfig",
           "ModelCard", "ModelCardError", "Normalization", "PostprocessConfig", "RoiConfig", "StageConfig"]

CARD_NAME = "model.json"
FORMAT_VERSION = 1
MODALITIES = ("MRI", "PET")
BACK_TO_INPUT = ("labels", "probabilities")   # PostprocessConfig.back_to_input


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
    largest one below the reference organ (see postprocess.keep_largest_component; empty = off).

    `back_to_input`: how the fine grid's cleaned labels come back to the input grid. "labels" (the default, and
    what older cards read as): nearest neighbour. "probabilities": the fine stage's class probabilities, with the
    clean-up's changes written into them as one-hot vectors, interpolated linearly and their argmax taken
    (resample.probabilities_to_labels; nnU-Net's export resamples its logits the same way)."""

    largest_component_organs: tuple[int, ...] = tuple(range(1, 14))
    connectivity: int = 26
    lateral_pairs: tuple[tuple[int, int], ...] = ()
    caudal_to: tuple[tuple[int, int], ...] = ()   # (organ, reference): see postprocess.keep_largest_component
    back_to_input: str = "labels"

    def __post_init__(self) -> None:
        if self.back_to_input not in BACK_TO_INPUT:
            raise ModelCardError(f"postprocess.back_to_input must be one of {BACK_TO_INPUT}, got "
                                 f"{self.back_to_input!r}")
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
            back_to_input=d.get("back_to_input", "labels"),
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
    # optional third stage: one organ from the fine stage's other organs (inference.context); None: none
    context: ContextConfig | None = None

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
        if self.context is not None:
            self.context.check_fits(self.fine)
        for stage_name in self.stage_names:
            for backend, fname in self.stage(stage_name).files.items():
                if fname not in self.sha256:
                    raise ModelCardError(f"{stage_name}.files[{backend}] = {fname!r} has no sha256 in the card")

    def output_map(self, modality: str) -> dict[int, int]:
        """Network label -> the value written in a `modality` mask."""
        return self.output_labels.get(modality, OUTPUT_SCHEMES[modality])

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The networks this card runs, in order: coarse, fine and, when the card has one, context."""
        return ("coarse", "fine") + (("context",) if self.context is not None else ())

    def stage(self, name: str) -> StageConfig:
        if name not in self.stage_names:
            raise KeyError(name)
        return {"coarse": self.coarse, "fine": self.fine}.get(name) or self.context.stage

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
                context=None if d.get("context") is None else ContextConfig.from_dict(d["context"]),
            )
        except KeyError as exc:
            raise ModelCardError(f"model card lacks the field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ModelCardError):
                raise
            raise ModelCardError(f"model card is malformed: {exc}") from None
