"""The real CT -> MRI benchmark (BTCV CT -> CHAOS T2), fixed: case lists and label sets never change between runs.

Source, labelled: the 30 BTCV abdominal CT scans with 12 manual FLARE organs (no duodenum, label 12).
Target, unlabelled: CHAOS T2 TARGET_CASES; their labels are read only by the upper-bound row (4).
Test: CHAOS T2 TEST_CASES, scored on liver, right kidney, spleen, left kidney (FLARE 1, 2, 3, 13). Nothing is tuned
on them: the learning curves that show test Dice during training are evidence of convergence, never a choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.labels import DATASET_ORGANS

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
# the 50 manual FLARE22 label maps (all 13 organs, no images): label-map synthesis, the 13-organ filter statistics
FLARE22_MAPS = Path("flare22_labels") / "labelsTr"

BTCV_CASES = tuple(f"btcv_{i:04d}" for i in list(range(1, 11)) + list(range(21, 41)))
TARGET_CASES = tuple(f"chaos_t2_{i:02d}" for i in (1, 2, 5, 8, 10, 15, 19, 20, 22, 31))
TEST_CASES = ("chaos_t2_33", "chaos_t2_34", "chaos_t2_37", "chaos_t2_38")
NAME = "BTCV CT -> CHAOS T2 (training/inplane/protocol.py)"   # as model cards record the benchmark
SCORED_ORGANS = DATASET_ORGANS["chaos"]
# network output channel -> FLARE label, per source (channel 0 is background)
BTCV_LABELS = (0,) + DATASET_ORGANS["btcv"]
CHAOS_LABELS = (0,) + DATASET_ORGANS["chaos"]


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path


def btcv_case(name: str, root: Path = REAL_DATA) -> Case:
    d = root / "ct_btcv"
    return Case(name, d / "imagesTr" / f"{name}_0000.nii.gz", d / "labelsTr" / f"{name}.nii.gz")


def chaos_case(name: str, root: Path = REAL_DATA) -> Case:
    d = root / "mr_chaos_t2"
    return Case(name, d / "images" / f"{name}_0000.nii.gz", d / "labels" / f"{name}.nii.gz")


def source_cases(source: str, root: Path = REAL_DATA) -> tuple[list[Case], tuple[int, ...]]:
    """The labelled training cases of a row's source and the FLARE label of each network output channel."""
    if source == "btcv":
        return [btcv_case(c, root) for c in BTCV_CASES], BTCV_LABELS
    if source == "chaos_target":
        return [chaos_case(c, root) for c in TARGET_CASES], CHAOS_LABELS
    raise ValueError(f"unknown source {source!r} (btcv, chaos_target)")


def test_cases(root: Path = REAL_DATA) -> list[Case]:
    return [chaos_case(c, root) for c in TEST_CASES]
