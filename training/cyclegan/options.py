"""Every tunable of the Organ Attention CycleGAN in one typed, read-only dataclass.

Defaults are the seed authors' FLARE 2025 settings (2D, 288x288 slices at 0.78 mm in-plane, ResNet generator with
9 blocks and 64 filters, PatchGAN discriminators, LSGAN, cycle 10, identity 5, local discriminator 0.5,
segmentation 5, Adam beta1 0.5, lr 1e-4, 130 constant + 15 linearly decaying epochs, image pool 50, batch 2).
Tests override the network sizes with tiny ones.

Options are saved inside every checkpoint and as `options.json` next to it; `from_dict` rejects unknown keys so a
typo in an options file is an error, not a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

TARGET_MODALITIES = ("mri", "pet")

# Options that only say how long or how fast to run: a resumed run may change them freely.
RUN_LENGTH_FIELDS = frozenset({"epochs", "decay_epochs", "iterations_per_epoch", "num_workers", "save_every",
                               "grid_cases", "grid_slices", "time_budget_s", "quality_every"})


@dataclass(frozen=True)
class CycleGANOptions:
    # --- domain and classes ---
    target_modality: str = "mri"          # "mri" or "pet": the intensity scheme of domain B
    num_classes: int = 14                 # background + 13 FLARE organs (label values 0..num_classes-1)

    # --- preprocessing ---
    spacing_mm: float = 0.78              # common in-plane spacing (x and y); slices keep their z position
    slice_size: int = 288                 # training crop (square, pixels)
    ct_window_hu: tuple[float, float] = (-600.0, 600.0)
    percentiles: tuple[float, float] = (0.1, 99.9)   # MRI / PET clipping, per volume
    body_crop: bool = False               # crop each volume in-plane to the body's bounding box (+ margin)
    body_margin_mm: float = 10.0

    # --- networks ---
    ngf: int = 64                         # generator filters
    n_blocks: int = 9                     # generator residual blocks
    ndf: int = 64                         # discriminator filters
    n_layers_d: int = 3                   # PatchGAN depth (70x70 receptive field at 3)
    seg_filters: int = 32                 # U-Net filters at full resolution
    seg_depth: int = 4                    # U-Net poolings

    # --- losses ---
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0          # = the seed's identity 0.5 x cycle lambda 10
    lambda_local: float = 0.5             # local (attention) discriminator, both in the G and the D loss
    lambda_seg: float = 5.0               # segmenter loss on G_A(CT) that reaches the generator
    attention: bool = True                # False: plain CycleGAN (no local D, no segmentation loss on G)
    probe_segmenter: bool = True          # plain mode only: still train S on detached fakes, for quality numbers

    # --- optimisation and schedule ---
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    amsgrad: bool = True
    batch_size: int = 2
    pool_size: int = 50
    epochs: int = 145                     # total epochs; the last min(decay_epochs, epochs) decay the lr linearly
    decay_epochs: int = 15
    iterations_per_epoch: int = 0         # 0: one pass over the training CT slices
    num_workers: int = 2
    seed: int = 0
    time_budget_s: float = 0.0            # > 0: fewer epochs (decay kept at the end) when they would overrun this

    # --- bookkeeping ---
    save_every: int = 10                  # keep epoch_<N>.pt every N epochs (latest.pt is written every epoch)
    val_fraction: float = 0.1             # CT cases held out for the quality numbers (at least 1 when >= 2 cases)
    grid_cases: int = 2                   # held-out cases drawn in PNG grids
    grid_slices: int = 3                  # slices per grid
    quality_every: int = 0                # > 0: quality numbers (+ grids) every N epochs -> quality_curve.csv

    def __post_init__(self) -> None:
        if self.target_modality not in TARGET_MODALITIES:
            raise ValueError(f"target_modality must be one of {TARGET_MODALITIES}, got {self.target_modality!r}")
        if self.num_classes < 2:
            raise ValueError("num_classes must be >= 2 (background + at least one organ)")
        if self.spacing_mm <= 0:
            raise ValueError("spacing_mm must be > 0")
        if self.slice_size % self.divisor != 0:
            raise ValueError(f"slice_size {self.slice_size} must be a multiple of {self.divisor} "
                             "(generator and U-Net downsampling)")
        if not self.ct_window_hu[0] < self.ct_window_hu[1]:
            raise ValueError("ct_window_hu must be (low, high) with low < high")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        if self.decay_epochs < 0:
            raise ValueError("decay_epochs must be >= 0 (runs shorter than it decay over all their epochs)")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if self.quality_every < 0:
            raise ValueError("quality_every must be >= 0 (0: quality numbers at the end only)")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")

    @property
    def uses_segmenter(self) -> bool:
        return self.attention or self.probe_segmenter

    @property
    def divisor(self) -> int:
        """Slice sides must be multiples of this for the generator and the U-Net."""
        return 2 ** max(self.seg_depth, 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CycleGANOptions":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown CycleGAN option(s): {', '.join(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})

    @classmethod
    def load(cls, path: Path) -> "CycleGANOptions":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read options file {path}: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        from inference.atomic import write_json

        write_json(Path(path), self.to_dict())

    def replace(self, **changes: Any) -> "CycleGANOptions":
        return dataclasses.replace(self, **changes)

    def differences(self, other: "CycleGANOptions", ignore: frozenset[str] = RUN_LENGTH_FIELDS) -> list[str]:
        """Names of the fields (outside `ignore`) whose values differ."""
        return [f.name for f in fields(self)
                if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)]
