"""The fixed protocol (case lists never change between runs) and the run profile (how long / how big).

Source (labelled "CT"): CT rendered from the CHAOS label maps of SOURCE_CASES (training.render: label map + body
mask only) and the real TotalSegmentator CT crops TS_CT_CASES with their labels. Target (unlabelled): CHAOS
TARGET_CASES; their labels are read by row 4 only (the upper bound). Test: CHAOS TEST_CASES, scored on liver,
right kidney, spleen and left kidney (FLARE labels 1, 2, 3, 13).

PET rows. (P): the same source, translated by an Organ Attention CycleGAN towards the two real whole-body FDG PET
scans PET_CASES (unlabelled: no PET annotation exists here). Those two scans are both the CycleGAN's target domain
and the row's check set: with no labels, the check is plausibility (labels within the PET scheme {0..4}, organ
volumes within PET_PLAUSIBLE_ML), not a Dice score. (PR): FDG-PET-like images rendered from the label maps and
body masks of SOURCE_CASES (training.render.pet: randomised uptake per organ, hot non-organ structures, the body
extended above and below the labels, PSF and noise), `pet_render_variants` renders per case; same check.

Extra MRI row (R), scored like the others: C2F on random-contrast renders of the source label maps
(training.render.synth: every tissue class a random intensity, bias field, gamma, blur, noise; SynthSeg-style),
no CycleGAN and no target image at all: a baseline for what the appearance translation buys over randomisation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inference.labels import DATASET_ORGANS
from training.profiles import find_profile, read_profile

SOURCE_CASES = ("chaos_t2_01", "chaos_t2_02", "chaos_t2_05", "chaos_t2_08", "chaos_t2_10", "chaos_t2_15")
TARGET_CASES = ("chaos_t2_19", "chaos_t2_20", "chaos_t2_22", "chaos_t2_31")
TEST_CASES = ("chaos_t2_33", "chaos_t2_34", "chaos_t2_37", "chaos_t2_38")
TS_CT_CASES = ("ts_ct_dicom", "ts_ct_sm")
SCORED_ORGANS = DATASET_ORGANS["chaos"]
MRI_ROWS = ("1", "2", "2b", "3", "4", "R")
PET_ROWS = ("P", "PR")
ROWS = MRI_ROWS + PET_ROWS
ROW_TITLES = {
    "1": "(1) C2F, source CT only",
    "2": "(2) + Organ Attention CycleGAN synthetic MRI",
    "2b": "(2b) + plain CycleGAN synthetic MRI (no attention)",
    "3": "(3) + dual-stage filtered pseudo-labels (self-training)",
    "4": "(4) C2F with the target cases' true labels (upper bound)",
    "R": "(R) C2F on random-contrast renders of the source label maps (SynthSeg-style, no CycleGAN)",
    "P": "(P) PET: C2F on source CT + Organ Attention CycleGAN synthetic FDG PET",
    "PR": "(PR) PET: C2F on FDG PET rendered from the source label maps (domain randomisation, no CycleGAN)",
}
PROFILE_DIR = Path(__file__).with_name("profiles")


@dataclass(frozen=True)
class StageRun:
    """How long one nnU-Net training runs: epochs x iterations, cut short by `time_budget_s` when set."""

    epochs: int
    iterations: int
    val_iterations: int = 5
    time_budget_s: float | None = None

    def args(self) -> list[str]:
        out = ["--epochs", str(self.epochs), "--iterations", str(self.iterations),
               "--val-iterations", str(self.val_iterations)]
        if self.time_budget_s is not None:
            out += ["--time-budget", str(self.time_budget_s)]
        return out


@dataclass(frozen=True)
class Profile:
    """Run length and model size of one benchmark run (the protocol itself is fixed)."""

    name: str
    spec: dict[str, Any]                     # training.c2f C2FSpec as JSON (both stages, labels, crop margins)
    coarse: StageRun
    fine: StageRun
    selftrain: StageRun                      # both stages of the self-training retraining
    selftrain_lr: float = 1e-4
    trainer: str = "nnUNetTrainerC2F"
    lr: float = 3e-4                         # C2F training from scratch (the trainer's own 1e-5 is the seed's)
    cyclegan: dict[str, Any] = field(default_factory=dict)  # CycleGANOptions fields
    render_seed: int = 0
    da_workers: int = 2                      # nnU-Net augmentation processes per training
    workers: int = 2                         # conversion / preprocessing processes
    cyclegan_cpu_threads: int = 1            # torch threads of a CycleGAN step on the CPU (it often runs alone)
    pet_render_variants: int = 4             # row PR: PET renders per source case
    synth_render_variants: int = 5           # row R: random-contrast renders per source case
    engine_tta: bool = True
    dice_threshold: float | None = None      # self-training filter (None: the set's default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Profile":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown profile keys: {unknown}")
        d = dict(d)
        for k in ("coarse", "fine", "selftrain"):
            d[k] = StageRun(**d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (training/uda_bench/profiles/<name>.json) or by path, its `extends` chain resolved."""
    p = find_profile(name_or_path, PROFILE_DIR, PROFILE_DIR)
    try:
        return Profile.from_dict(read_profile(p, PROFILE_DIR))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: not a valid profile: {exc}") from None
