"""By-eye check of one label where no reference holds it: for each predicted mask, the axial slice through the
middle of that label, over its scan. Usage: python benchmarks/label_slices.py PRED_DIR IMAGE_DIR OUT.png [--label N]
(IMAGE_DIR holds <case>_0000.nii.gz; N defaults to 12, the duodenum)."""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402


def axial(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--label", type=int, default=12)
    a = ap.parse_args(argv)
    cases = sorted(p.name[:-7] for p in a.pred.glob("*.nii.gz"))
    if not cases:
        raise SystemExit(f"{a.pred}: no *.nii.gz masks")
    fig, axes = plt.subplots(1, len(cases), figsize=(4 * len(cases), 4.4), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, case in zip(axes[0], cases, strict=True):
        img, seg = axial(a.images / f"{case}_0000.nii.gz"), axial(a.pred / f"{case}.nii.gz")
        zs = np.flatnonzero((seg == a.label).any(axis=(1, 2)))
        z = int(zs[len(zs) // 2]) if len(zs) else seg.shape[0] // 2
        rgba = np.zeros(seg[z].shape + (4,))
        for v in np.unique(seg[z])[1:]:
            rgba[seg[z] == v] = (*cmap(int(v) % 20)[:3], 0.8 if v == a.label else 0.35)
        ax.imshow(img[z], cmap="gray")
        ax.imshow(rgba)
        n = int((seg == a.label).sum())
        ax.set_title(f"{case} z={z}: label {a.label} {n} vox" if n else f"{case}: no label {a.label}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=70)
    tmp.replace(a.out)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
