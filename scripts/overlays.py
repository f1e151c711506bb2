"""PNG overlays of masks on their images: three orthogonal slices through the segmented organs' centre."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402


def overlay(image_path: Path, mask_path: Path, png_path: Path) -> None:
    img = sitk.DICOMOrient(sitk.ReadImage(str(image_path)), "LPS")
    seg = sitk.DICOMOrient(sitk.ReadImage(str(mask_path)), "LPS")
    a, m = sitk.GetArrayFromImage(img).astype(np.float32), sitk.GetArrayFromImage(seg)
    lo, hi = np.percentile(a, (1, 99))
    c = np.argwhere(m > 0).mean(axis=0).astype(int) if m.any() else np.array(a.shape) // 2
    sz, sy, sx = img.GetSpacing()[::-1]
    views = [(a[c[0]], m[c[0]], sy / sx), (a[:, c[1]], m[:, c[1]], sz / sx), (a[:, :, c[2]], m[:, :, c[2]], sz / sy)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.5))
    for ax, (im, ms, aspect) in zip(axes, views):
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin="lower" if im is not views[0][0] else "upper")
        ax.imshow(np.ma.masked_equal(ms, 0), cmap="tab20", vmin=0, vmax=20, alpha=0.45, aspect=aspect,
                  interpolation="nearest", origin="lower" if im is not views[0][0] else "upper")
        ax.axis("off")
    fig.suptitle(f"{mask_path.name}: labels {sorted(int(v) for v in np.unique(m) if v)}")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.stem}.partial.png")
    fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(png_path)


def main(inputs: Path, masks: Path, pngs: Path) -> None:
    for mask in sorted(masks.glob("*.nii.gz")):
        image = inputs / mask.name.replace(".nii.gz", "_0000.nii.gz")
        if image.exists():
            overlay(image, mask, pngs / mask.name.replace(".nii.gz", ".png"))
            print(f"overlay: {pngs / mask.name.replace('.nii.gz', '.png')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
