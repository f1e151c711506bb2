"""Where a benchmark row's files are in a work folder, and the row facts every step needs (the lowest module of
the benchmark's own: it imports no other step module).

    WORK/coarse/                 the shared coarse stage (settings, summary, curve, final.pt)
    WORK/rows/<row>/{coarse,fine}/  a row's stages (its own coarse stage when the row has one)
    WORK/pack.npz                the volumes every stage trains on (pack.py)
    WORK/scores/r<row>/          the row's scores (scores.csv or pet_check.csv)
    WORK/models/r<row>/          the row's exported model (export, score, ship; a shipped teacher by seed --model)
    WORK/teachers/r<row>/        a self-training teacher trained here, exported for its predictions (torch only)
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

from . import protocol
from .recipe import Profile, as_profile

# final.pt last: its presence marks a finished stage (train_one, seed_work skip such a stage)
STAGE_FILES = ("settings.json", "summary.json", "curve.csv", "final.pt")


def stage_dirs(work: Path, row: str, own_coarse: bool = False) -> dict[str, Path]:
    """The stage folders of a row: the shared coarse stage (or the row's own) and the row's fine stage."""
    return {"coarse": work / "rows" / row / "coarse" if own_coarse else work / "coarse",
            "fine": work / "rows" / row / "fine"}


def teacher_dir(work: Path, row: str, trained_here: bool) -> Path:
    """Where a self-training row finds its teacher `row`: WORK/teachers/r<row> when the teacher was trained here
    (exported from its stages, torch only, by every pseudo-label step), else WORK/models/r<row> (a shipped model
    put there by `seed --model`). Kept apart so that a pseudo-label step never overwrites an exported model."""
    return work / ("teachers" if trained_here else "models") / f"r{row}"


def machine() -> str:
    """The CPU, its core count and the OS."""
    from training.machine import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}"


def work_pack(work: Path) -> Path:
    """The pack a work folder makes for itself from the real data (`run`; steps.py)."""
    return work / "pack.npz"


def row_label_ids(r, data: Path = protocol.REAL_DATA) -> tuple[int, ...]:
    """The FLARE label of each output channel of row `r`'s networks: its source's organs, and every FLARE organ
    when it also trains on label maps (the FLARE22 maps hold all 13)."""
    if r.label_maps is not None:
        return (0,) + protocol.DATASET_ORGANS["flare_mri"]
    return protocol.BTCV_LABELS if r.source == "btcv_pet" else protocol.source_cases(r.source, data)[1]


def score_file(work: Path, profile: str | Profile, row: str) -> Path:
    """Where a row's scores are: scores.csv (MRI rows) or pet_check.csv (PET rows) in WORK/scores/r<row>/."""
    pet = as_profile(profile).rows[row].modality == "PET"
    return work / "scores" / f"r{row}" / ("pet_check.csv" if pet else "scores.csv")
