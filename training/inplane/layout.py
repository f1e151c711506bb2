"""Where a benchmark row's files are in a work folder, and the row facts every step needs (the lowest module of
the benchmark's own: it imports no other step module).

    WORK/coarse/                 the shared coarse stage (settings, summary, curve, final.pt)
    WORK/rows/<row>/{coarse,fine}/  a row's stages (its own coarse stage when the row has one)
    WORK/pack.npz                the volumes every stage trains on (pack.py)
    WORK/scores/r<row>/          the row's scores (scores.csv or pet_check.csv)
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
