"""Quality numbers and picture grids written at the end of training.

quality.json:
  segmentation_dice      S's Dice on the translated held-out CT slices (prepared 2D grid), per organ and mean
  structure_preservation per organ: Dice between the CT label map and S's prediction on the translated volume,
                         both on the CT's original voxel grid (prediction mapped back by nearest neighbour) -- how
                         well the translation keeps each organ where, and as large as, the CT had it
  cycle_mae_hu           mean |G_B(G_A(CT)) - CT| inside the CT window, in HU
  target_dice            (only with target labels) S's Dice on the real target volumes
Only organs present in a reference enter its means (an organ missing from the reference is not scored).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.dice import dice_per_label
from inference.labels import FLARE_KEYS

from .data import AnyCase, load_case, prepare_case
from .model import OrganAttentionCycleGAN
from .preprocess import PreparedVolume, restore_labels
from .translate import run_slices, translate_prepared

ORGAN_NAMES = FLARE_KEYS


def organ_name(label: int) -> str:
    return ORGAN_NAMES.get(label, f"class_{label}")


def dice_per_organ(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> dict[int, float]:
    """Dice (eval.dice) of each organ present in `reference` (absent organs are not scored; a present organ
    missed is 0)."""
    present = [c for c in range(1, num_classes) if (reference == c).any()]
    return dice_per_label(reference, prediction, present)


def _summarise(per_case: dict[str, dict[int, float]]) -> dict:
    organs = {c: [s[c] for s in per_case.values() if c in s] for c in set().union(*per_case.values())}
    case_means = [float(np.mean(list(s.values()))) for s in per_case.values() if s]
    return {"mean": float(np.mean(case_means)) if case_means else None,
            "per_organ": {organ_name(c): {"dice": float(np.mean(v)), "cases": len(v)} for c, v in sorted(organs.items())},
            "per_case": {name: {organ_name(c): round(d, 4) for c, d in sorted(s.items())}
                         for name, s in per_case.items()}}


def _segment(model: OrganAttentionCycleGAN, images: np.ndarray, batch_size: int) -> np.ndarray:
    logits = run_slices(model.S, images, model.opts.divisor, batch_size, model.device)
    return np.argmax(logits, axis=1).astype(np.uint8)


def evaluate(model: OrganAttentionCycleGAN, ct_cases: list[AnyCase], *, held_out: bool,
             target_cases: list[AnyCase] | None = None, batch_size: int = 8, grid_dir: Path | None = None,
             progress: bool = True) -> dict:
    """Quality numbers over `ct_cases` (labelled CT) and optional labelled target cases, files or in memory;
    PNG grids to `grid_dir`."""
    from tqdm import tqdm

    opts = model.opts
    model.eval()
    seg, struct, mae = {}, {}, {}
    for i, case in enumerate(tqdm(ct_cases, desc="quality", disable=not progress, leave=False)):
        arrays = load_case(case, opts.num_classes)          # read once: prepared here, label kept for struct
        vol = prepare_case(arrays, "ct", opts)
        fake = translate_prepared(model, vol, batch_size)
        rec = run_slices(model.G_B, fake, opts.divisor, batch_size, model.device)[:, 0]
        win = vol.transform.window
        mae[case.name] = float(np.mean(np.abs(win.invert(rec) - win.invert(vol.image))))
        pred = None
        if model.S is not None:
            pred = _segment(model, fake, batch_size)
            seg[case.name] = dice_per_organ(pred, vol.label, opts.num_classes)
            struct[case.name] = dice_per_organ(restore_labels(pred, vol.transform), arrays.label,
                                               opts.num_classes)
        if grid_dir is not None and i < opts.grid_cases:
            save_grid(vol, fake, rec, pred, Path(grid_dir) / f"{case.name}.png", opts.grid_slices)
    result = {"target_modality": opts.target_modality, "attention": opts.attention,
              "held_out": held_out, "ct_cases": [c.name for c in ct_cases],
              "cycle_mae_hu": {"mean": float(np.mean(list(mae.values()))) if mae else None, "per_case": mae},
              "segmentation_dice": _summarise(seg) if model.S is not None else None,
              "structure_preservation": _summarise(struct) if model.S is not None else None}
    if target_cases and model.S is not None:
        tgt = {}
        for case in tqdm(target_cases, desc="target dice", disable=not progress, leave=False):
            vol = prepare_case(case, opts.target_modality, opts)
            tgt[case.name] = dice_per_organ(_segment(model, vol.image, batch_size), vol.label, opts.num_classes)
        result["target_dice"] = _summarise(tgt)
    return result


def save_grid(vol: PreparedVolume, fake: np.ndarray, rec: np.ndarray, pred: np.ndarray | None, path: Path,
              n_slices: int) -> None:
    """Rows: the slices with the most organ voxels; columns: CT + labels, fake target, cycle CT, S on fake."""
    from eval.plots import save_figure   # first: it selects the Agg backend; the atomic write
    import matplotlib.pyplot as plt

    counts = (vol.label > 0).sum(axis=(1, 2)) if vol.label is not None else np.zeros(vol.image.shape[0])
    zs = sorted(np.argsort(-counts, kind="stable")[:n_slices].tolist())
    cols = ["CT + labels", "fake target", "cycle CT"] + (["S on fake"] if pred is not None else [])
    fig, axes = plt.subplots(len(zs), len(cols), figsize=(3 * len(cols), 3 * len(zs)), squeeze=False)
    cmap = plt.get_cmap("tab20", 20)
    for r, z in enumerate(zs):
        panels = [(vol.image[z], vol.label[z] if vol.label is not None else None), (fake[z], None), (rec[z], None)]
        panels += [(fake[z], pred[z])] if pred is not None else []
        for c, (img, lab) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            if lab is not None:
                ax.imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0, vmax=19, alpha=0.4, interpolation="nearest")
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(cols[c])
            if c == 0:
                ax.set_ylabel(f"z={z}")
    fig.suptitle(vol.name if len(vol.name) < 60 else "..." + vol.name[-57:], fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
