"""The context stage's training (inference/context.py): the duodenum from the other organs' masks, learnt from the
manual FLARE22 label maps alone (no image: the same network on every sequence).

Each sample is one axial slice of a map on the fine stage's grid (2 mm in-plane), cut to a patch around its organs
(jittered, zoomed 0.85-1.15). The input is what the fine stage would give on a real scan: the duodenum gone
(background), in half of the samples taken over by a grown pancreas, stomach, vena cava or liver (on T1 MRI the
pancreas wins most duodenum voxels: benchmarks/label_probe.py), and every other organ at random eroded, dilated
or missing. The target is the map's duodenum. The last `holdout` maps (file order) are never trained on: the
learning curve's Dice is theirs (input: the map without its duodenum). Resumable (checkpoint.pt).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from inference import roi
from inference.atomic import atomic_path, write_csv, write_json
from inference.config import ContextConfig, Normalization
from inference.context import context_channels
from inference.labels import ORGANS

from .data import label_map
from .labelmaps import label_map_files, map_volume
from .loop import batch_logits, build_net2d, dice_ce_loss
from .recipe import StageRecipe

_LABEL = {o.short: o.label for o in ORGANS}
DUODENUM = _LABEL["duodenum"]
INPUTS = tuple(o.label for o in ORGANS if o.label != DUODENUM)
# the neighbours that take the duodenum's voxels in a fine stage's labels
BLEEDERS = tuple(_LABEL[k] for k in ("pancreas", "stomach", "ivc", "liver"))
# the engine runs the stage around the pancreas only (ContextConfig.near): its box + how far the duodenum reaches
# beyond it in the training maps (reach_mm: at most 40 / 24 / 32 mm in z / y / x on the 50 FLARE22 maps) + SLACK_MM
# for a fine-stage pancreas that is smaller than the true one
NEAR = (_LABEL["pancreas"],)
SLACK_MM = 10.0


@dataclass(frozen=True)
class ContextRecipe:
    stage: StageRecipe = field(default_factory=lambda: StageRecipe(
        spacing_mm=(None, 2.0, 2.0), patch=(96, 96), features=(16, 32, 64, 128), batch=12, iterations=3000,
        eval_every_s=0.0, checkpoint_every_s=300.0))
    adds: int = DUODENUM
    inputs: tuple[int, ...] = INPUTS
    holdout: int = 10
    eval_every: int = 250          # iterations between learning-curve rows
    seed: int = 0


def corrupt(lab: np.ndarray, adds: int, inputs, rng: np.random.Generator) -> np.ndarray:
    """A fine stage's likely labels for the map slice `lab`: `adds` gone, at random taken over by its neighbours,
    every organ at random eroded, dilated or missing."""
    lab = lab.copy()
    target = lab == adds
    lab[target] = 0
    if rng.uniform() < 0.5:
        for org in rng.permutation(BLEEDERS):
            lab[ndimage.binary_dilation(lab == org, iterations=int(rng.integers(1, 6))) & target & (lab == 0)] = org
    for org in inputs:
        m = lab == org
        u = rng.uniform()
        if not m.any() or u >= 0.45:
            continue
        if u < 0.05:
            lab[m] = 0
        elif u < 0.25:
            lab[m & ~ndimage.binary_erosion(m)] = 0
        else:
            lab[ndimage.binary_dilation(m) & (lab == 0)] = org
    return lab


def sample(maps: list[np.ndarray], recipe: ContextRecipe, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: input channels (context_channels) and the target (1 on `adds`) of a random patch."""
    lab = maps[int(rng.integers(len(maps)))]
    near = (lab == recipe.adds) if rng.uniform() < 0.8 else (lab > 0)
    z = int(rng.choice(np.nonzero(near.any((1, 2)))[0]))
    p = recipe.stage.patch[0]
    ys, xs = np.nonzero(lab[z] > 0)
    cy, cx = (int(c.mean()) + int(rng.integers(-20, 21)) for c in (ys, xs))
    half = int(p / 2 / rng.uniform(0.85, 1.15))
    crop = np.pad(lab[z], half)[cy:cy + 2 * half, cx:cx + 2 * half]
    crop = ndimage.zoom(crop, p / (2 * half), order=0)[:p, :p]
    crop = np.pad(crop, ((0, p - crop.shape[0]), (0, p - crop.shape[1])))
    return context_channels(corrupt(crop, recipe.adds, recipe.inputs, rng), recipe.inputs), \
        (crop == recipe.adds).astype(np.int64)


def predict_maps(net, lab: np.ndarray, recipe: ContextRecipe) -> np.ndarray:
    """Where `net` finds `adds` on every slice of `lab` (whole slices: loop.batch_logits)."""
    x = context_channels(lab, recipe.inputs).transpose(1, 0, 2, 3)
    return np.concatenate([logits.argmax(1).numpy() for _, logits in batch_logits(net, x)]) == 1


def holdout_dice(net, maps: list[np.ndarray], recipe: ContextRecipe) -> float:
    """Mean Dice of `adds` over `maps`, each with its `adds` removed from the input."""
    scores = []
    for lab in maps:
        ref = lab == recipe.adds
        found = predict_maps(net, np.where(ref, 0, lab), recipe)
        scores.append(2 * (found & ref).sum() / max(found.sum() + ref.sum(), 1))
    return round(float(np.mean(scores)), 4)


def load_maps(data: Path, spacing_mm) -> tuple[list[str], list[np.ndarray], list[tuple[float, float, float]]]:
    """The FLARE22 maps' file names, label maps on the grid of `spacing_mm` and their voxel sizes (z, y, x mm)."""
    files = label_map_files(data)
    vols = [map_volume(f, spacing_mm) for f in files]
    return [f.name for f in files], [label_map(v) for v in vols], [v.spacing_mm for v in vols]


def reach_mm(maps: list[np.ndarray], spacings, adds: int, near) -> tuple[float, float, float]:
    """How far (mm, per axis z, y, x, either side) `adds` reaches beyond the box of the `near` labels, at most over
    `maps` (those holding both): the margin a context stage's search box needs."""
    reach = np.zeros(3)
    for lab, sp in zip(maps, spacings, strict=True):
        a, b = roi.foreground_box(lab == adds), roi.foreground_box(np.isin(lab, near))
        if a is None or b is None:
            continue
        out = np.maximum(np.subtract(b.start, a.start), np.subtract(a.stop, b.stop)).clip(0)
        reach = np.maximum(reach, out * np.asarray(sp))
    return tuple(float(v) for v in reach)


def train_context(out: Path, data: Path, recipe: ContextRecipe | None = None, threads: int = 1) -> Path:
    """Train (or resume) the context stage into `out` (final.pt, curve.csv, summary.json)."""
    recipe = recipe or ContextRecipe()
    if (out / "final.pt").is_file():
        return out
    torch.set_num_threads(threads)
    names, maps, _ = load_maps(data, recipe.stage.spacing_mm)
    if len(maps) <= recipe.holdout:
        raise ValueError(f"{data}: {len(maps)} label maps, need more than the {recipe.holdout} held out")
    train, held = maps[:-recipe.holdout], maps[-recipe.holdout:]
    st = recipe.stage
    torch.manual_seed(recipe.seed)
    net = build_net2d(st.features, 2, 1 + len(recipe.inputs))
    opt = torch.optim.AdamW(net.parameters(), lr=st.lr, weight_decay=st.weight_decay)
    rng, it, seconds, rows = np.random.default_rng(recipe.seed), 0, 0.0, []
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        it, seconds, rows = state["iteration"], state["seconds"], state["rows"]
        rng.bit_generator.state = state["rng"]
    out.mkdir(parents=True, exist_ok=True)
    last_save = time.perf_counter()
    while it < st.iterations:
        t = time.perf_counter()
        for group in opt.param_groups:   # nnU-Net's poly schedule
            group["lr"] = st.lr * (1 - it / st.iterations) ** 0.9
        xs, ys = zip(*(sample(train, recipe, rng) for _ in range(st.batch)), strict=True)
        loss = dice_ce_loss(net(torch.from_numpy(np.stack(xs))), torch.from_numpy(np.stack(ys)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        it, seconds = it + 1, seconds + time.perf_counter() - t
        if it % recipe.eval_every == 0 or it == st.iterations:
            rows.append([it, round(seconds, 1), round(loss.item(), 4), holdout_dice(net, held, recipe)])
            write_csv(out / "curve.csv", ["iteration", "seconds", "loss", "holdout_dice"], rows)
            print(f"context {it}/{st.iterations}: loss {rows[-1][2]}, held-out Dice {rows[-1][3]}", flush=True)
        if time.perf_counter() - last_save > st.checkpoint_every_s or it == st.iterations:
            with atomic_path(ckpt) as tmp:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "iteration": it, "seconds": seconds,
                            "rows": rows, "rng": rng.bit_generator.state}, tmp)
            last_save = time.perf_counter()
    with atomic_path(out / "final.pt") as tmp:
        torch.save(net.state_dict(), tmp)
    write_json(out / "summary.json", {"recipe": asdict(recipe), "iterations": it, "trained_s": round(seconds, 1),
                                      "seconds_per_iteration": round(seconds / it, 3), "holdout_dice": rows[-1][3],
                                      "trained_on": names[:-recipe.holdout], "held_out": names[-recipe.holdout:],
                                      "torch": torch.__version__, "threads": threads})
    return out


def context_config(recipe: ContextRecipe, margin_mm=(0.0, 0.0, 0.0), near=()) -> ContextConfig:
    """The card entry of a context stage trained with `recipe` (no normalisation: one-hot input), run on the box of
    `near` grown by `margin_mm` (empty `near`: the whole fine grid)."""
    from .export import card_stage

    stage = card_stage(recipe.stage, (0, recipe.adds), channels=1 + len(recipe.inputs),
                       normalization=Normalization(scheme="none"))
    return ContextConfig(stage=stage, inputs=recipe.inputs, adds=recipe.adds, near=tuple(near),
                         margin_mm=tuple(margin_mm))


def add_to_model(model: Path, context_dir: Path, out: Path, name: str, machine: str = "",
                 data: Path | None = None) -> Path:
    """weights folder `out`: the model folder `model` + the context stage trained in `context_dir` (final.pt,
    summary.json of `train_context` with the default recipe), run around `NEAR` with the margin its training maps
    (under `data`, the real-data folder) need: `reach_mm` + SLACK_MM. `data` None: on the whole fine grid."""
    from training.export import add_context

    from .export import _engine_net

    recipe = ContextRecipe()
    summary_file = context_dir / "summary.json"
    if not (context_dir / "final.pt").is_file() or not summary_file.is_file():
        raise FileNotFoundError(f"{context_dir}: no final.pt and summary.json (train the context stage first)")
    summary = json.loads(summary_file.read_text())
    if summary["recipe"] != json.loads(json.dumps(asdict(recipe))):
        raise ValueError(f"{summary_file}: trained with another recipe than ContextRecipe()")
    margin, near = (0.0, 0.0, 0.0), ()
    if data is not None:
        names, maps, spacings = load_maps(data, recipe.stage.spacing_mm)
        keep = [i for i, n in enumerate(names) if n in set(summary["trained_on"])]
        reach = reach_mm([maps[i] for i in keep], [spacings[i] for i in keep], recipe.adds, NEAR)
        margin, near = tuple(r + SLACK_MM for r in reach), NEAR
    cfg = context_config(recipe, margin, near)
    prov = {k: summary[k] for k in ("iterations", "trained_s", "seconds_per_iteration", "holdout_dice", "torch",
                                    "threads")}
    prov |= {"trained_on": f"{len(summary['trained_on'])} FLARE22 label maps (no image)",
             "held_out": summary["held_out"], "machine": machine}
    return add_context(model, out, net=_engine_net(context_dir, recipe.stage, cfg.stage), context=cfg, name=name,
                       provenance=prov)
