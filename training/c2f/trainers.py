"""A small nnU-Net trainer subclass: AdamW, cosine learning rate, seed epochs, a checkpoint every epoch, an epoch
progress bar and a time budget, all through nnU-Net's hooks (its `run_training` loop runs as it is). Dice + CE with
deep supervision and nnU-Net's augmentation (minus left-right mirroring) are inherited unchanged.

`nnUNetTrainerC2F` follows the seed (AdamW, cosine, 200 epochs, lr 1e-5); other learning rates come from
`training.c2f train --lr` (e.g. 3e-4 from scratch, the seed's 1e-6 for self-training), not from subclasses.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.optim.lr_scheduler import _LRScheduler
from tqdm import tqdm

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from training.budget import epochs_within_budget

__all__ = ["CosineLRScheduler", "nnUNetTrainerC2F"]


class CosineLRScheduler(_LRScheduler):
    """lr(epoch) = min_lr + (initial_lr - min_lr) * (1 + cos(pi * epoch / max_steps)) / 2.

    Like nnU-Net's PolyLRScheduler, `step(current_step)` takes the epoch explicitly (so resuming is exact).
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, min_lr: float = 0.0, current_step: int = None):
        self.initial_lr = initial_lr
        self.max_steps = max(1, int(max_steps))
        self.min_lr = min_lr
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, step: int) -> float:
        t = min(max(step, 0), self.max_steps) / self.max_steps
        return self.min_lr + (self.initial_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr for _ in self.optimizer.param_groups]


LR_AXIS = 2  # canonical (z, y, x): x runs from the patient's right to left


class nnUNetTrainerC2F(nnUNetTrainer):
    """AdamW + cosine schedule; checkpoint_latest every epoch (resumable); tqdm bar over iterations."""

    c2f_initial_lr = 1e-5
    c2f_weight_decay = 1e-4
    c2f_num_epochs = 200
    c2f_iterations_per_epoch = 250
    c2f_val_iterations_per_epoch = 50

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 - nnU-Net's trainer signature
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.c2f_initial_lr
        self.weight_decay = self.c2f_weight_decay
        self.num_epochs = self.c2f_num_epochs
        self.num_iterations_per_epoch = self.c2f_iterations_per_epoch
        self.num_val_iterations_per_epoch = self.c2f_val_iterations_per_epoch
        self.save_every = 1
        self.time_budget_s: float | None = None  # wall-clock budget of this run (None: run every epoch)

    def _fit_epochs_to_budget(self, started: float, epoch_seconds: list[float]) -> None:
        """Set num_epochs so the run ends within `time_budget_s` (training.budget), never more than the requested
        count (`requested_epochs`); num_epochs == current_epoch ends the run. The cosine schedule is rescaled to
        the new length."""
        if self.time_budget_s is None or not epoch_seconds:
            return
        elapsed = time.monotonic() - started
        new = epochs_within_budget(self.time_budget_s, elapsed, epoch_seconds, self.current_epoch,
                                   self.requested_epochs)
        if new != self.num_epochs:
            self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s: {elapsed:.0f} s used by "
                                   f"{len(epoch_seconds)} epochs -> {new} epochs (requested {self.requested_epochs})")
            self.num_epochs = new
            if isinstance(self.lr_scheduler, CosineLRScheduler):
                self.lr_scheduler.max_steps = max(1, new)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """nnU-Net's augmentation geometry without left-right mirroring. FLARE labels the right and left kidneys
        (2, 13) and adrenal glands (7, 8): a left-right mirror shows the net a right kidney on the left, so it learns
        to give both kidneys one label. The arrays are in the engine's canonical order (z, y, x), x = the patient's
        right-to-left axis (LPS), so axis LR_AXIS is never mirrored, in training or in nnU-Net's own inference."""
        rotation, dummy_2d, initial_patch_size, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        mirror_axes = tuple(a for a in mirror_axes if a != LR_AXIS)
        self.inference_allowed_mirroring_axes = mirror_axes
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # nnU-Net's own loop (`run_training`) runs unchanged; these hooks add the epoch bar and the time budget
    def on_train_start(self):
        super().on_train_start()
        self._started = time.monotonic()
        self._epoch_seconds: list[float] = []
        self.requested_epochs = self.num_epochs
        self._bar = tqdm(desc=f"{self.configuration_name} epochs", unit="epoch", initial=self.current_epoch,
                         total=self.num_epochs, disable=self.local_rank != 0)

    def on_epoch_start(self):
        if self.current_epoch >= self.num_epochs:   # the time budget shortened the run (on_epoch_end)
            raise _BudgetReached
        self._t_epoch = time.monotonic()
        super().on_epoch_start()

    def on_epoch_end(self):
        super().on_epoch_end()   # logs, checkpoints, increments current_epoch
        self._epoch_seconds.append(time.monotonic() - self._t_epoch)
        self._fit_epochs_to_budget(self._started, self._epoch_seconds)
        self._bar.total = self.num_epochs
        self._bar.set_postfix(loss=float(np.round(self.logger.my_fantastic_logging["train_losses"][-1], 4)))
        self._bar.update(1)

    def on_train_end(self):
        super().on_train_end()
        self._bar.close()

    def run_training(self):
        """nnU-Net's loop; a time budget that ends it early stops it before the next epoch's first step."""
        try:
            super().run_training()
        except _BudgetReached:
            self.on_train_end()


class _BudgetReached(Exception):
    """Raised by on_epoch_start once the time budget has set num_epochs to the epochs already run."""
