"""Wall-clock training budgets: how many epochs in total still fit (shared by C2F and CycleGAN training)."""
from __future__ import annotations


def epochs_within_budget(budget_s: float, elapsed_s: float, epoch_seconds: list[float], current: int,
                         requested: int) -> int:
    """Total epochs that end the run within `budget_s`: `current` epochs done, plus those that fit in the remaining
    time at the pace of the recent epochs (the first, slower one counts only while it is the only one); never more
    than `requested`, never fewer than `current` (== current: stop now)."""
    recent = epoch_seconds[1:][-3:] or epoch_seconds
    pace = max(sum(recent) / len(recent), 1e-6)
    remaining = max(budget_s - elapsed_s, 0.0)
    return max(current, min(requested, current + int(remaining // pace)))
