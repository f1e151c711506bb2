"""Typed configuration of the coarse-to-fine training: what each stage sees and which network it trains.

All spatial values are in numpy array order of the canonical image (z, y, x), like nnU-Net's plans and the
engine's model card (inference.config). A `C2FSpec` is written into each converted dataset's dataset.json (key
"c2f"), so the planner and the exporter read the exact settings the data were prepared with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from inference.config import Architecture, Normalization
from inference.labels import FLARE_KEYS

# nnU-Net dataset.json labels: the organizers' short names (inference/labels.py)
FLARE_LABELS: dict[str, int] = {"background": 0, **{key: label for label, key in FLARE_KEYS.items()}}
STAGES = ("coarse", "fine")


def dataset_name(dataset_id: int, stage: str) -> str:
    """nnU-Net's name of a stage's dataset: `dataset_id` is the coarse dataset's id, the fine dataset's is id + 1."""
    return f"Dataset{dataset_id + (0 if stage == 'coarse' else 1):03d}_FLAREc2f{stage.capitalize()}"


@dataclass(frozen=True)
class NetworkSpec:
    """PlainConvUNet of one stage (3x3x3 kernels everywhere)."""

    features_per_stage: tuple[int, ...]
    strides: tuple[tuple[int, int, int], ...]
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2

    def __post_init__(self) -> None:
        if len(self.features_per_stage) != len(self.strides) or len(self.strides) < 2:
            raise ValueError("features_per_stage and strides need the same length (>= 2)")
        if tuple(self.strides[0]) != (1, 1, 1):
            raise ValueError("the first stage must not downsample (stride 1,1,1)")

    def architecture(self, input_channels: int = 1) -> Architecture:
        n = len(self.features_per_stage)
        return Architecture(
            input_channels=input_channels, n_stages=n, features_per_stage=tuple(self.features_per_stage),
            kernel_sizes=tuple((3, 3, 3) for _ in range(n)), strides=tuple(tuple(s) for s in self.strides),
            n_conv_per_stage=(self.n_conv_per_stage,) * n, n_conv_per_stage_decoder=(self.n_conv_per_stage_decoder,) * (n - 1))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NetworkSpec":
        return cls(features_per_stage=tuple(int(v) for v in d["features_per_stage"]),
                   strides=tuple(tuple(int(k) for k in s) for s in d["strides"]),  # type: ignore[misc]
                   n_conv_per_stage=int(d.get("n_conv_per_stage", 2)),
                   n_conv_per_stage_decoder=int(d.get("n_conv_per_stage_decoder", 2)))


@dataclass(frozen=True)
class StageSpec:
    """One stage's data grid, normalisation and network."""

    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    network: NetworkSpec
    batch_size: int = 2
    normalization: Normalization = Normalization("zscore", (0.5, 99.5))

    def __post_init__(self) -> None:
        arch = self.network.architecture()
        if any(p % s for p, s in zip(self.patch_size, arch.total_stride, strict=True)):
            raise ValueError(f"patch {self.patch_size} is not a multiple of the network stride {arch.total_stride}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageSpec":
        return cls(spacing_mm=tuple(float(v) for v in d["spacing_mm"]),  # type: ignore[arg-type]
                   patch_size=tuple(int(v) for v in d["patch_size"]),  # type: ignore[arg-type]
                   network=NetworkSpec.from_dict(d["network"]), batch_size=int(d.get("batch_size", 2)),
                   normalization=Normalization.from_dict(d.get("normalization", {})))


@dataclass(frozen=True)
class C2FSpec:
    """Both stages plus how fine-stage crops are cut: ground-truth organ box + margin_mm +- jitter_mm per side.

    `margin_mm` is also the engine's RoiConfig.margin_mm at export, so training crops match inference crops;
    the jitter (uniform per side) covers the coarse model's box error. `crops_per_case` jittered crops are cut
    from each labelled case.
    """

    coarse: StageSpec
    fine: StageSpec
    margin_mm: tuple[float, float, float] = (20.0, 20.0, 20.0)
    jitter_mm: tuple[float, float, float] = (10.0, 10.0, 10.0)
    crops_per_case: int = 2
    labels: dict[str, int] = field(default_factory=lambda: dict(FLARE_LABELS))

    def __post_init__(self) -> None:
        if self.crops_per_case < 1:
            raise ValueError("crops_per_case must be >= 1")
        if any(j < 0 for j in self.jitter_mm) or any(m < 0 for m in self.margin_mm):
            raise ValueError("margin_mm and jitter_mm must be >= 0")
        if self.labels.get("background") != 0:
            raise ValueError("labels must map 'background' to 0")
        if self.ignore_label is not None and self.ignore_label != max(self.class_ids) + 1:
            raise ValueError(f"the 'ignore' label must be the highest label, max class + 1 (nnU-Net's rule): "
                             f"{max(self.class_ids) + 1}, got {self.ignore_label}")

    def stage(self, name: str) -> StageSpec:
        return {"coarse": self.coarse, "fine": self.fine}[name]

    @property
    def label_ids(self) -> tuple[int, ...]:
        """Every value a label map may hold (classes and, when declared, the ignore label)."""
        return tuple(sorted(self.labels.values()))

    @property
    def ignore_label(self) -> int | None:
        """nnU-Net's ignore label (`labels["ignore"]`): voxels excluded from the loss; None when not declared."""
        return self.labels.get("ignore")

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The network's output classes: `label_ids` without the ignore label."""
        return tuple(sorted(v for k, v in self.labels.items() if k != "ignore"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "C2FSpec":
        return cls(coarse=StageSpec.from_dict(d["coarse"]), fine=StageSpec.from_dict(d["fine"]),
                   margin_mm=tuple(float(v) for v in d.get("margin_mm", (20.0,) * 3)),  # type: ignore[arg-type]
                   jitter_mm=tuple(float(v) for v in d.get("jitter_mm", (10.0,) * 3)),  # type: ignore[arg-type]
                   crops_per_case=int(d.get("crops_per_case", 2)),
                   labels={str(k): int(v) for k, v in d.get("labels", FLARE_LABELS).items()})


def default_spec() -> C2FSpec:
    """The project's defaults: coarse 5 mm whole volume, 5-stage net (5.65M parameters, but on ~1/8 of the fine
    patch's voxels); fine 2.5x1.5x1.5 mm crops, patch 96x192x192, batch 1 like the seed, 5.6M parameters.

    The coarse net was a 4-stage (8..64 features, 0.35M parameters) one until a probe on an H200 (UDA benchmark
    data, 140 s per variant, benchmarks/results/coarse-probe-h200/) showed it collapsing to background (pseudo
    Dice 0 for every organ) where the 5-stage 16..256 net reached liver 0.85 / spleen 0.50 (mean of the last 3
    epochs) in the same time."""
    coarse = StageSpec(spacing_mm=(5.0, 5.0, 5.0), patch_size=(48, 96, 96), batch_size=2,
                       network=NetworkSpec((16, 32, 64, 128, 256),
                                           ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))))
    fine = StageSpec(spacing_mm=(2.5, 1.5, 1.5), patch_size=(96, 192, 192), batch_size=1,
                     network=NetworkSpec((16, 32, 64, 128, 256),
                                         ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))))
    return C2FSpec(coarse=coarse, fine=fine)
