"""Wall-clock budgets of C2F and CycleGAN training: the epochs that still fit at the recent pace, analytically."""
from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from training.c2f.trainers import CosineLRScheduler, nnUNetTrainerC2F
from training.cyclegan.options import CycleGANOptions
from training.cyclegan.train import _fit_to_budget


def _trainer(budget, current, requested, num):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    log: list[str] = []
    return SimpleNamespace(time_budget_s=budget, current_epoch=current, requested_epochs=requested, num_epochs=num,
                           lr_scheduler=CosineLRScheduler(opt, 1.0, num), print_to_log_file=log.append, log=log)


def _fit(t, elapsed, epoch_seconds):
    nnUNetTrainerC2F._fit_epochs_to_budget(t, time.monotonic() - elapsed, epoch_seconds)


def test_c2f_budget_uses_recent_pace_and_remaining_time():
    t = _trainer(budget=100.0, current=4, requested=50, num=50)
    _fit(t, 38.0, [16.0, 8.0, 8.0, 8.0])  # first epoch slow (start-up): pace 8 s, 62 s left -> 7 more
    assert t.num_epochs == 4 + 7 and t.lr_scheduler.max_steps == 11 and "11 epochs" in t.log[-1]
    _fit(t, 38.0, [16.0, 8.0, 4.0, 4.0, 4.0])  # faster now: pace 4 s -> 15 more, back up
    assert t.num_epochs == 4 + 15


def test_c2f_budget_never_exceeds_request_and_stops_when_spent():
    t = _trainer(budget=1000.0, current=2, requested=10, num=10)
    _fit(t, 5.0, [2.0, 2.0])
    assert t.num_epochs == 10 and not t.log  # plenty of time: unchanged
    t = _trainer(budget=30.0, current=3, requested=10, num=10)
    _fit(t, 31.0, [10.0, 10.0, 11.0])  # over budget: the run ends now
    assert t.num_epochs == 3
    t = _trainer(budget=None, current=3, requested=10, num=10)
    _fit(t, 1e6, [1.0])
    assert t.num_epochs == 10


def test_cyclegan_budget_keeps_decay_within_the_new_length():
    opts = CycleGANOptions(epochs=100, decay_epochs=10, time_budget_s=60.0)
    started = time.perf_counter() - 18.0
    new = _fit_to_budget(opts, 100, started, [6.0, 4.0, 4.0, 4.0, 4.0], epoch=5)  # 42 s left at 4 s -> 10 more
    assert new.epochs == 15 and new.decay_epochs == 10
    new2 = _fit_to_budget(opts, 100, time.perf_counter() - 58.0, [6.0, 4.0], epoch=2)
    assert new2.epochs == 2 and new2.decay_epochs == 2
    assert _fit_to_budget(CycleGANOptions(epochs=7), 7, started, [1.0], epoch=1).epochs == 7  # no budget
