"""The Dice ceiling of a stage's in-plane grid: what the grid alone costs a perfect network.

For each label map the reference is taken to the grid of spacing (slice axis kept, s x s mm in-plane) as the best
labels a network on that grid could output (each organ's one-hot map resampled linearly with the engine's
`resample.resample_linear`, then the per-voxel argmax: the majority of what each grid voxel covers), brought back to
the map's own grid with the engine's nearest-neighbour step (`resample.labels_to_shape`), and scored against the
map itself with eval's Dice. The gap to 100 is the grid's, not the network's: a design input for the fine stage's
spacing. The default maps are the 30 BTCV CT label maps (the labelled source domain); the CHAOS test scans are never
read here.

    python benchmarks/grid_ceiling.py --out benchmarks/results/grid-ceiling [--labels DIR] [--spacings 2.0,1.5]
                                      [--organs 1,2,3,13]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval.dice import dice_per_label  # noqa: E402
from inference import resample  # noqa: E402
from inference.atomic import write_csv, write_text  # noqa: E402
from inference.labels import FLARE_ORGANS  # noqa: E402
from training.inplane.protocol import REAL_DATA  # noqa: E402

BTCV_LABELS = REAL_DATA / "ct_btcv" / "labelsTr"


RETURNS = ("labels, nearest", "labels, linear", "probabilities, linear")   # the engine's step back; each label's
# mask resampled linearly, then the largest (nnU-Net's resampling of segmentations, order 1); the shares (its export)


def grid_labels(labels: np.ndarray, spacing_zyx, inplane_mm: float, organs) -> dict[str, np.ndarray]:
    """The best output on the grid (slice axis kept, `inplane_mm` in-plane: each class's share of a grid voxel)
    brought back to `labels`' grid in each way of RETURNS: its argmax by nearest neighbour (the engine's step), each
    label of that argmax resampled linearly and the largest taken, or the shares themselves resampled linearly and
    then the argmax. The shares are made once for all three."""
    shape = resample.shape_at_spacing(labels.shape, spacing_zyx, (None, inplane_mm, inplane_mm))
    classes = np.asarray((0, *organs), dtype=np.uint8)
    shares = np.stack([resample.resample_linear((labels == c).astype(np.float32), shape) for c in classes])
    on_grid = shares.argmax(0)

    def linear_argmax(stack) -> np.ndarray:
        return classes[np.stack([resample.resample_linear(p, labels.shape) for p in stack]).argmax(0)]

    return {RETURNS[0]: resample.labels_to_shape(classes[on_grid], labels.shape),
            RETURNS[1]: linear_argmax([(on_grid == i).astype(np.float32) for i in range(len(classes))]),
            RETURNS[2]: linear_argmax(shares)}


def ceilings(labels: np.ndarray, spacing_zyx, inplane_mm: float, organs) -> dict[str, dict[int, float]]:
    """Dice per organ of each of `grid_labels`' outputs against `labels` (NaN where the map lacks the organ)."""
    kept = np.where(np.isin(labels, organs), labels, 0).astype(np.uint8)
    return {back: dice_per_label(kept, out, organs)
            for back, out in grid_labels(kept, spacing_zyx, inplane_mm, organs).items()}


def ceiling(labels: np.ndarray, spacing_zyx, inplane_mm: float, organs, back: str = RETURNS[0]) -> dict[int, float]:
    """`ceilings` of one way back."""
    return ceilings(labels, spacing_zyx, inplane_mm, organs)[back]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", type=Path, default=BTCV_LABELS, help="folder of label maps (*.nii.gz)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--spacings", default="2.0,1.5", help="in-plane grid spacings (mm), comma-separated")
    p.add_argument("--organs", default="1,2,3,13", help="FLARE labels to score (default: CHAOS's four)")
    args = p.parse_args(argv)
    organs = tuple(int(o) for o in args.organs.split(","))
    spacings = tuple(float(s) for s in args.spacings.split(","))
    files = sorted(args.labels.glob("*.nii.gz"))
    if not files:
        raise SystemExit(f"{args.labels}: no label maps (*.nii.gz)")
    rows, t0 = [], time.perf_counter()
    for f in files:
        img = sitk.ReadImage(str(f))
        labels = sitk.GetArrayFromImage(img)
        spacing = tuple(reversed(img.GetSpacing()))
        for s in spacings:
            for back, dice in ceilings(labels, spacing, s, organs).items():
                for organ, d in dice.items():
                    rows.append([f.name.replace(".nii.gz", ""), f"{spacing[2]:.3f}", s, back, organ,
                                 round(float(d), 5)])
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "ceiling.csv", ["case", "inplane_mm_of_map", "grid_mm", "back_to_the_map", "organ", "dice"],
              rows)
    lines = ["| grid (in-plane) | back to the map's grid | " + " | ".join(FLARE_ORGANS[o] for o in organs)
             + " | mean |", "|---|---|" + "---|" * (len(organs) + 1)]
    for s in spacings:
        for back in RETURNS:
            per = [np.nanmean([r[5] for r in rows if r[2] == s and r[3] == back and r[4] == o]) for o in organs]
            lines.append(f"| {s} mm | {back} | " + " | ".join(f"{100 * v:.2f}" for v in per)
                         + f" | {100 * np.mean(per):.2f} |")
    summary = "\n".join(lines) + (f"\n\nDice (%) of the best labels on each grid against the map itself, mean over "
                                  f"{len(files)} maps in {args.labels.name}/ ({time.perf_counter() - t0:.0f} s).\n")
    write_text(args.out / "table.md", summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
