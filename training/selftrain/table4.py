"""The paper's Table 4: how many target scans survive each filter stage, per target set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # for annotations only: filtering imports this module
    from .filtering import CaseResult


@dataclass(frozen=True)
class Table4Row:
    """Samples surviving each filter, cumulatively (the paper's Table 4), for one target set."""

    target_set: str
    total: int
    class_number: int  # + class number
    relative_volume: int  # + relative volume
    top_k_dice: int  # + top-k Dice
    above_threshold: int  # passing (a), (b) and the threshold before the top-k cut (not a column of the paper)
    dice_threshold: float
    top_k: int | None


TABLE4_HEADER = ("target set", "total", "+ class number", "+ relative volume", "+ top-k Dice")


def format_table4(rows: list[Table4Row]) -> str:
    """Markdown table with the paper's columns, one row per target set, and each row's k and threshold."""
    lines = ["| " + " | ".join(TABLE4_HEADER) + " |", "|" + "---|" * len(TABLE4_HEADER)]
    lines += [f"| {r.target_set} | {r.total} | {r.class_number} | {r.relative_volume} | {r.top_k_dice} |" for r in rows]
    lines += [f"{r.target_set}: Dice threshold {r.dice_threshold:g}, k = {'all' if r.top_k is None else r.top_k}, "
              f"{r.above_threshold} above the threshold before the top-k cut" for r in rows]
    return "\n".join(lines)


def table4_row(target_set: str, results: list[CaseResult], threshold: float, top_k: int | None) -> Table4Row:
    return Table4Row(target_set=target_set, total=len(results),
                     class_number=sum(r.passed_class for r in results),
                     relative_volume=sum(r.passed_volume for r in results),
                     top_k_dice=sum(r.selected for r in results),
                     above_threshold=sum(r.above_threshold for r in results),
                     dice_threshold=threshold, top_k=top_k)
