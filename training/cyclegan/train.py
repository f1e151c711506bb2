"""Training loop: data caching, epochs with tqdm, resumable checkpoints, quality numbers at the end.

Output folder:
    options.json                   the options of the run
    checkpoints/latest.pt          written after every epoch (resume point; `translate --checkpoint` takes it)
    checkpoints/epoch_<N>.pt       every `save_every` epochs and after the last one (weights only)
    loss_log.jsonl                 one line per iteration: epoch, step, lr, losses
    cache/{ct,target}/             preprocessed volumes (.npy), reused across runs with the same preprocessing
    quality.json, grids/*.png      at the end (see quality.py)
    quality_curve.csv              the quality numbers every `quality_every` epochs and at the end: the learning
                                   curve (grids of each of those epochs in grids/epoch_<N>/)

A run whose folder already holds `checkpoints/latest.pt` resumes from it when its options match the checkpoint's
(the run-length ones, epochs, iterations_per_epoch, ..., may grow); other options train again from scratch, saying
so (training.resume's rule; the preprocessing cache stays: it is keyed by its own settings).
"""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from inference.atomic import atomic_path, write_csv, write_json, write_text
from training.budget import epochs_within_budget
from training.resume import say_restart

from .data import AnyCase, UnpairedSliceDataset, cache_cases, find_cases, split_cases, typical_window
from .model import OrganAttentionCycleGAN
from .options import CycleGANOptions
from .quality import evaluate
from .translate import CHECKPOINT_FORMAT


def save_checkpoint(model: OrganAttentionCycleGAN, path: Path, *, epoch: int, step: int,
                    target_window: tuple[float, float], with_training: bool = True, extra: dict | None = None) -> None:
    """Weights + options (+ optimizer and pool state with `with_training`, needed to resume, ~3x the weights)."""
    state = {"format": CHECKPOINT_FORMAT, "options": model.opts.to_dict(), "epoch": epoch, "step": step,
             "target_window": [float(target_window[0]), float(target_window[1])],
             "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **(extra or {})}
    if with_training:
        state["training"] = model.training_state()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _truncate_log(path: Path, last_step: int) -> None:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in lines if json.loads(line).get("step", 0) <= last_step]
    if len(keep) != len(lines):
        write_text(path, "".join(line + "\n" for line in keep))


CURVE_FIELDS = ("epoch", "step", "trained_s", "segmentation_dice", "structure_preservation", "cycle_mae_hu")


def append_curve(path: Path, epoch: int, step: int, trained_s: float, quality: dict) -> None:
    """One row of quality_curve.csv (rows of later epochs, left by an interrupted run, are dropped first)."""
    import csv

    rows = []
    if path.exists():
        with open(path, newline="") as fh:
            rows = [[r[f] for f in CURVE_FIELDS] for r in csv.DictReader(fh) if int(r["epoch"]) < epoch]

    def mean(key: str):
        v = quality.get(key)
        return "" if not v or v.get("mean") is None else round(float(v["mean"]), 4)

    rows.append([epoch, step, round(trained_s, 1), *(mean(key) for key in CURVE_FIELDS[3:])])
    write_csv(path, CURVE_FIELDS, rows)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _fit_to_budget(opts: CycleGANOptions, requested: int, started: float, epoch_seconds: list[float],
                   epoch: int) -> CycleGANOptions:
    """Total epochs that end the run within `opts.time_budget_s` (training.budget), never more than `requested`;
    the linear decay keeps its length (capped at the new total) and ends at the new last epoch."""
    if opts.time_budget_s <= 0 or not epoch_seconds:
        return opts
    fit = epochs_within_budget(opts.time_budget_s, time.perf_counter() - started, epoch_seconds, epoch, requested)
    return opts if fit == opts.epochs else opts.replace(epochs=fit, decay_epochs=min(opts.decay_epochs, fit))


def train(ct_images: Path, ct_labels: Path, target_images: Path, out_dir: Path, opts: CycleGANOptions, *,
          device: str | torch.device = "cpu", target_labels: Path | None = None, progress: bool = True) -> dict:
    """Train (or resume) one model for `opts.target_modality` on FLARE folders; returns the quality numbers (also
    in quality.json). The folders are checked (every CT image has its label, ...) before anything is written."""
    return train_cases(find_cases(ct_images, ct_labels), find_cases(target_images), out_dir, opts, device=device,
                       target_eval=find_cases(target_images, target_labels) if target_labels is not None else None,
                       progress=progress)


def train_cases(ct_cases: list[AnyCase], target_cases: list[AnyCase], out_dir: Path, opts: CycleGANOptions, *,
                device: str | torch.device = "cpu", target_eval: list[AnyCase] | None = None,
                progress: bool = True) -> dict:
    """Train (or resume) one model from labelled CT cases and unlabelled target cases, files (`data.Case`) or
    in memory (`data.ArrayCase`); `target_eval`: labelled target cases for the target_dice quality number.
    Returns the quality numbers (also in quality.json)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    latest = ckpt_dir / "latest.pt"
    resume = None
    if latest.exists():
        resume = torch.load(latest, map_location="cpu", weights_only=False)
        diff = opts.differences(CycleGANOptions.from_dict(resume["options"]))
        if diff:   # training.resume's rule: other settings train again from scratch, saying so
            say_restart(out_dir, diff)
            resume = None
            for stale in (ckpt_dir, out_dir / "grids"):
                shutil.rmtree(stale, ignore_errors=True)
            for stale in ("loss_log.jsonl", "quality.json", "quality_curve.csv"):
                (out_dir / stale).unlink(missing_ok=True)
            ckpt_dir.mkdir(parents=True)
    opts.save(out_dir / "options.json")

    fit_cases, val_cases = split_cases(ct_cases, opts.val_fraction, opts.seed)
    ct_cache = cache_cases(fit_cases, "ct", opts, out_dir / "cache" / "ct", progress)
    tgt_cache = cache_cases(target_cases, opts.target_modality, opts, out_dir / "cache" / "target", progress)
    window = typical_window(tgt_cache)

    dataset = UnpairedSliceDataset(ct_cache, tgt_cache, opts.slice_size,
                                   length=opts.iterations_per_epoch * opts.batch_size)
    _seed_everything(opts.seed)
    model = OrganAttentionCycleGAN(opts, device)
    start_epoch, step, trained_s = 0, 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["weights"])
        model.load_training_state(resume["training"])
        start_epoch, step = int(resume["epoch"]), int(resume["step"])
        trained_s = float(resume.get("trained_s", 0.0))
        del resume
    held_out = bool(val_cases)
    eval_cases = val_cases or fit_cases
    curve_path = out_dir / "quality_curve.csv"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    log_path = out_dir / "loss_log.jsonl"
    if log_path.exists():
        _truncate_log(log_path, step)        # drop the iterations of an interrupted epoch (they are redone)
    with open(log_path, "a") as log:
        started = time.perf_counter()
        requested = opts.epochs
        epoch_seconds: list[float] = []
        epoch = start_epoch
        while epoch < opts.epochs:
            _seed_everything(opts.seed + 1000 * (epoch + 1))       # same batches whether resumed or not
            lr = model.set_epoch(epoch)
            model.train()
            loader = DataLoader(dataset, batch_size=opts.batch_size, shuffle=not dataset.length,
                                drop_last=len(dataset) >= opts.batch_size, num_workers=opts.num_workers,
                                pin_memory=device.type == "cuda", persistent_workers=False)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{opts.epochs}", disable=not progress, leave=False)
            t0 = time.perf_counter()
            for batch in bar:
                model.set_input(batch)
                losses = model.optimize_parameters()
                step += 1
                log.write(json.dumps({"epoch": epoch + 1, "step": step, "lr": lr,
                                      **{k: round(v, 5) for k, v in losses.items()}}) + "\n")
                bar.set_postfix({k: f"{losses[k]:.3f}" for k in ("G", "D_A", "S") if k in losses})
            log.flush()
            seconds = time.perf_counter() - t0
            trained_s += seconds
            save_checkpoint(model, latest, epoch=epoch + 1, step=step, target_window=(window.low, window.high),
                            extra={"epoch_seconds": seconds, "trained_s": trained_s})
            if (epoch + 1) % opts.save_every == 0 or epoch + 1 == opts.epochs:
                save_checkpoint(model, ckpt_dir / f"epoch_{epoch + 1}.pt", epoch=epoch + 1, step=step,
                                target_window=(window.low, window.high), with_training=False)
            if progress:
                tqdm.write(f"epoch {epoch + 1}/{opts.epochs}: {len(loader)} iterations in {seconds:.1f} s, lr {lr:.2e}")
            if opts.quality_every and (epoch + 1) % opts.quality_every == 0 and epoch + 1 < opts.epochs:
                q = evaluate(model, eval_cases, held_out=held_out, grid_dir=out_dir / "grids" / f"epoch_{epoch + 1}",
                             batch_size=max(1, opts.batch_size * 2), progress=False)
                append_curve(curve_path, epoch + 1, step, trained_s, q)
                if progress:
                    tqdm.write(f"epoch {epoch + 1}: segmentation Dice on translated held-out CT "
                               f"{q['segmentation_dice']['mean'] if q['segmentation_dice'] else None}")
            epoch += 1
            epoch_seconds.append(seconds)
            opts = _fit_to_budget(opts, requested, started, epoch_seconds, epoch)
            model.opts = opts

    quality = evaluate(model, eval_cases, held_out=held_out, target_cases=target_eval, grid_dir=out_dir / "grids",
                       batch_size=max(1, opts.batch_size * 2), progress=progress)
    quality.update({"epochs": opts.epochs, "steps": step, "trained_s": round(trained_s, 1),
                    "checkpoint": str(latest)})
    append_curve(curve_path, opts.epochs, step, trained_s, quality)
    write_json(out_dir / "quality.json", quality)
    return quality
