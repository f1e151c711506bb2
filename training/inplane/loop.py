"""Training of one 2D stage: AdamW, cosine learning rate over the run's progress, Dice + cross-entropy.

Progress is max(iterations done / iterations, seconds trained / time budget): a run that a budget cuts short still
ends with a decayed learning rate. With `swa_from` (stochastic weight averaging) the rate stays at its value there
and the weights after every later iteration are averaged: final.pt is that mean, the curve follows the running
weights, and summary.json holds the mean's Dice beside the last curve row's. Resumable: a checkpoint (network,
optimiser, progress, random states, weight mean) is written every `checkpoint_every_s` under a temporary name and
renamed; `train_stage` picks it up and goes on. Every `eval_every_s` the current network is scored on the
evaluation volumes (Dice per organ on the stage grid) and a row goes to curve.csv, the learning curve committed with
the results.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn
from torch.optim.swa_utils import AveragedModel

from eval.dice import dice_per_label
from inference.atomic import atomic_path, write_csv, write_json

from .augment import make_batch
from .data import IGNORE, PARTIAL, SliceBank, Volume
from .recipe import Appearance, Spatial, StageRecipe


def build_net2d(features, num_classes: int, input_channels: int = 1) -> PlainConvUNet:
    """dynamic-network-architectures' PlainConvUNet in 2D (its module tree is the engine's network's, so the weights
    map one to one onto the card's (1, 3, 3)-kernel 3D net: export.to_card_state)."""
    n = len(features)
    return PlainConvUNet(
        input_channels=input_channels, n_stages=n, features_per_stage=list(features), conv_op=nn.Conv2d,
        kernel_sizes=[[3, 3]] * n, strides=[[1, 1]] + [[2, 2]] * (n - 1), n_conv_per_stage=[2] * n,
        num_classes=num_classes, n_conv_per_stage_decoder=[2] * (n - 1), conv_bias=True,
        norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU, nonlin_kwargs={"negative_slope": 1e-2, "inplace": True}, deep_supervision=False)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, partial_channels: tuple[int, ...] = ()) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice over the batch, mean over the organ channels), as nnU-Net's batch Dice;
    pixels labelled IGNORE count in neither term. Pixels labelled PARTIAL (the background of a source that does not
    annotate the organs of `partial_channels`) are background for the other organs: their cross-entropy is that of
    "background or one of those organs" (the marginal likelihood of partial-label training), and they count in no
    Dice term of those organs."""
    valid = (target != IGNORE)
    if not valid.any():
        return logits.sum() * 0.0
    partial = target == PARTIAL
    if partial_channels and partial.any():
        target = torch.where(partial, torch.zeros_like(target), target)
        logp = logits.log_softmax(1)
        merged = logp.clone()
        merged[:, 0] = torch.where(partial, torch.logsumexp(logp[:, [0, *partial_channels]], 1), logp[:, 0])
        ce = F.nll_loss(merged, target, ignore_index=IGNORE)
    elif partial.any():
        raise ValueError("PARTIAL labels need the network channels they may hide (partial_channels)")
    else:
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    keep = valid[:, None].to(logits.dtype)
    prob = logits.softmax(1)[:, 1:] * keep
    if partial_channels:
        known = (~partial)[:, None].to(prob.dtype)
        prob = torch.cat([prob[:, c - 1:c] * known if c in partial_channels else prob[:, c - 1:c]
                          for c in range(1, logits.shape[1])], 1)
    onehot = F.one_hot(target * valid, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return ce + (1 - dice.mean())


NEW_LABEL_BIAS_DROP = 4.0   # recipe.HEAD_GROWTH names this rule in the stage settings


def remap_head(state: dict[str, torch.Tensor], from_ids, to_ids) -> dict[str, torch.Tensor]:
    """2D network weights trained for the labels `from_ids` (channel -> FLARE label) made to output `to_ids`: the
    segmentation layers' rows follow their labels; a label new to the network starts with zero weights and the
    background's bias lowered by NEW_LABEL_BIAS_DROP: a constant logit, so its first gradients come from its own
    voxels alone (a copy of the background row, the first rule, kept the new label tied to the background: row
    RAd's duodenum row stayed at cosine 0.93 to it after 2,500 iterations and never won a voxel)."""
    from_ids, to_ids = tuple(from_ids), tuple(to_ids)
    if from_ids[0] != 0 or to_ids[0] != 0:
        raise ValueError("label lists start with the background (0)")
    rows = [from_ids.index(lab) if lab in from_ids else None for lab in to_ids]
    out = {}
    for key, value in state.items():
        if ".seg_layers." not in key:
            out[key] = value
            continue
        if value.shape[0] != len(from_ids):
            raise ValueError(f"{key}: {value.shape[0]} output channels, the labels {from_ids} need {len(from_ids)}")
        new = torch.stack([value[0 if r is None else r] for r in rows])
        fresh = [i for i, r in enumerate(rows) if r is None]
        if key.endswith(".bias"):
            new[fresh] -= NEW_LABEL_BIAS_DROP
        else:
            new[fresh] = 0.0
        out[key] = new
    return out


def slice_logits(net: nn.Module, vol: Volume, device: str = "cpu"):
    """batch_logits of every slice of `vol`, the volume z-scored over its voxels as the engine does."""
    img = vol.image.astype(np.float32)
    yield from batch_logits(net, ((img - img.mean()) / max(float(img.std()), 1e-3))[:, None], device)


@torch.no_grad()
def batch_logits(net: nn.Module, x: np.ndarray, device: str = "cpu"):
    """The network's logits of every slice of `x` (n, C, h, w; float32), 8 slices at a time: (first slice, logits
    (n, classes, h, w)) pairs (zero-padded to the network stride and cut back). The network is in eval mode
    meanwhile, in training mode again afterwards."""
    net.eval()
    h, w = x.shape[2:]
    stride = 2 ** (len(net.encoder.stages) - 1)   # the 2D U-Net's total stride (one halving per stage after the first)
    pad = ((0, 0), (0, 0), (0, (-h) % stride), (0, (-w) % stride))
    try:
        for z0 in range(0, x.shape[0], 8):
            yield z0, net(torch.from_numpy(np.pad(x[z0:z0 + 8], pad)).to(device))[:, :, :h, :w]
    finally:
        net.train()


def predict_volume(net: nn.Module, vol: Volume, device: str = "cpu") -> np.ndarray:
    """Channel labels of every slice of `vol` (slice_logits' argmax)."""
    out = np.zeros(vol.labels.shape, dtype=np.uint8)
    for z0, logits in slice_logits(net, vol, device):
        out[z0:z0 + len(logits)] = logits.argmax(1).cpu().numpy()
    return out


def evaluate(net, net_label_ids, volumes: list[Volume], scored_labels, device: str) -> dict[int, float]:
    """Mean Dice over `volumes` per FLARE label of `scored_labels` (on the stage grid, no clean-up); the network's
    channels and each volume's channels are compared as FLARE labels."""
    per = {lab: [] for lab in scored_labels}
    to_flare = np.asarray(net_label_ids, dtype=np.uint8)
    for vol in volumes:
        pred = to_flare[predict_volume(net, vol, device)]
        ref = np.asarray(vol.label_ids, dtype=np.uint8)[vol.labels]
        for lab, d in dice_per_label(ref, pred, scored_labels).items():
            per[lab].append(d)
    # an organ in no volume nor prediction: NaN (eval.dice's rule), written to the curve as such
    return {lab: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for lab, v in per.items()}


def _save(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_stage(out: Path, bank: SliceBank, recipe: StageRecipe, spatial: Spatial, appearance: Appearance,
                label_ids: tuple[int, ...], eval_volumes: list[Volume] = (), scored_labels=(), seed: int = 0,
                device: str = "cpu", progress: bool = True, init: Path | None = None, init_label_ids=None,
                partial_channels: tuple[int, ...] = ()) -> nn.Module:
    """Train (or resume) one stage into `out` (checkpoint.pt, curve.csv, final.pt, summary.json) with
    `recipe.threads` torch threads (the caller's count is restored afterwards); `init`: weights (a final.pt of
    the same network) to start from instead of a random initialisation, trained for `init_label_ids` (None: these
    `label_ids`; others: `remap_head`). `partial_channels`: the channels PARTIAL labels may hide (dice_ce_loss)."""
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train(out, bank, recipe, spatial, appearance, label_ids, eval_volumes, scored_labels, seed, device,
                      progress, (init, init_label_ids), tuple(partial_channels))
    finally:
        torch.set_num_threads(threads)


def _restore(ckpt: Path, net, opt, rng, gen, start, label_ids, device, averaging: bool):
    """Load the checkpoint (network, optimiser, random states, weight mean) or else the start weights into the
    objects given: (iteration, seconds trained, the weight mean: torch's AveragedModel, or None)."""
    if not ckpt.is_file():
        if start[0] is not None:
            state = torch.load(start[0], map_location=device, weights_only=True)
            if start[1] is not None and tuple(start[1]) != tuple(label_ids):
                state = remap_head(state, start[1], label_ids)
            net.load_state_dict(state)
        return 0, 0.0, AveragedModel(net) if averaging else None
    state = torch.load(ckpt, map_location=device, weights_only=False)
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    rng.bit_generator.state = state["rng"]
    gen.set_state(state["gen"])
    swa = AveragedModel(net) if averaging else None
    if swa is not None and "swa" in state:
        swa.load_state_dict(state["swa"])
    return state["iteration"], state["trained_s"], swa


def _train(out, bank, recipe, spatial, appearance, label_ids, eval_volumes, scored_labels, seed, device, progress,
           start, partial_channels):
    from tqdm import tqdm

    torch.manual_seed(seed)   # the network's initial weights
    net = build_net2d(recipe.features, len(label_ids)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    losses = []
    ckpt = out / "checkpoint.pt"
    if (out / "final.pt").is_file():
        net.load_state_dict(torch.load(out / "final.pt", map_location=device, weights_only=True))
        return net
    it, trained_s, swa = _restore(ckpt, net, opt, rng, gen, start, label_ids, device, recipe.swa_from is not None)
    curve = out / "curve.csv"
    if curve.is_file():  # rows written after the checkpoint we resume from are done again: drop them
        with open(curve, newline="") as fh:
            rows = list(csv.reader(fh))
        if rows:
            write_csv(curve, rows[0], [r for r in rows[1:] if int(r[0]) <= it])
        else:   # killed before its header was written
            curve.unlink()
    new_curve = not curve.is_file()
    budget = recipe.time_budget_s or math.inf

    def progress_of(i: int, s: float) -> float:
        return max(i / recipe.iterations, s / budget)

    def checkpoint() -> None:
        _save(ckpt, {"net": net.state_dict(), "opt": opt.state_dict(), "iteration": it, "trained_s": trained_s,
                     "rng": rng.bit_generator.state, "gen": gen.get_state(),
                     **({"swa": swa.state_dict()} if swa is not None else {})})

    def lr_at(p: float) -> float:   # cosine over the run; held from swa_from on
        p = min(p, recipe.swa_from) if swa is not None else p
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * p))

    with open(curve, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_curve:
            writer.writerow(["iteration", "seconds", "lr", "loss"] + [f"dice_{lab}" for lab in scored_labels])
        bar = tqdm(total=100, desc=f"train {out.name}", unit="%", disable=not progress,
                   initial=int(100 * progress_of(it, trained_s)))
        last_eval = last_ckpt = trained_s
        net.train()
        while progress_of(it, trained_s) < 1:
            t0 = time.perf_counter()
            p = progress_of(it, trained_s)
            lr = lr_at(p)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = make_batch(bank, spatial, appearance, recipe.patch, recipe.batch, rng, gen, recipe.roi_mask,
                              device)
            loss = dice_ce_loss(net(x), y, partial_channels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            opt.step()
            if swa is not None and p >= recipe.swa_from:
                swa.update_parameters(net)
            losses.append(float(loss.detach()))
            it += 1
            trained_s += time.perf_counter() - t0
            bar.update(int(100 * progress_of(it, trained_s)) - bar.n)
            done = progress_of(it, trained_s) >= 1
            if trained_s - last_eval >= recipe.eval_every_s or done:
                scores = evaluate(net, label_ids, eval_volumes, scored_labels, device) if eval_volumes else {}
                writer.writerow([it, round(trained_s, 1), f"{lr:.3g}", round(float(np.mean(losses[-50:])), 4)]
                                + [round(scores[lab], 4) for lab in scored_labels if lab in scores])
                fh.flush()
                if scores:
                    bar.set_postfix(dice=round(float(np.mean(list(scores.values()))), 3))
                last_eval = trained_s
            if trained_s - last_ckpt >= recipe.checkpoint_every_s:
                checkpoint()
                last_ckpt = trained_s
        bar.close()
    checkpoint()
    summary = {"iterations": it, "trained_s": round(trained_s, 1),
               "seconds_per_iteration": round(trained_s / max(it, 1), 3),
               "recipe": asdict(recipe), "appearance": asdict(appearance), "spatial": asdict(spatial),
               "label_ids": list(label_ids), "slices": len(bank), "volumes": bank.names,
               "init": str(start[0]) if start[0] else None, "partial_channels": list(partial_channels),
               "torch": torch.__version__, "device": device, "threads": recipe.threads}
    if swa is not None and int(swa.n_averaged):   # final.pt: the mean of the weights, scored like a curve row
        net.load_state_dict(swa.module.state_dict())
        scores = evaluate(net, label_ids, eval_volumes, scored_labels, device) if eval_volumes else {}
        summary["swa"] = {"from_progress": recipe.swa_from, "iterations_averaged": int(swa.n_averaged),
                          "dice": {str(lab): round(v, 4) for lab, v in scores.items()}}
    write_json(out / "summary.json", summary)
    _save(out / "final.pt", net.state_dict())   # last: final.pt marks a finished stage
    return net
