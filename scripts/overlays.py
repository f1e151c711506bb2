"""PNG overlays of masks on their images: three orthogonal slices through the segmented organs' centre, or through
the centre of one label (`--label N`: a by-eye check of a label no reference holds, e.g. the duodenum on CHAOS).
Usage: python scripts/overlays.py IMAGES MASKS PNGS [--label N]"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from inference.atomic import atomic_path  # noqa: E402
from inference.labels import organ_names  # noqa: E402
from inference.modality import modality_of  # noqa: E402

CMAP = plt.get_cmap("tab20")


def legend_entries(labels, modality: str) -> list[tuple[int, str, tuple]]:
    """(label, organ name, RGBA colour of the overlay) for each label present, in label order."""
    names = organ_names(modality)
    return [(v, names.get(v, f"label {v}"), CMAP(v % 20)) for v in sorted(int(x) for x in labels if x)]


def overlay(image_path: Path, mask_path: Path, png_path: Path, label: int | None = None) -> tuple[int, int, int]:
    """Write the overlay; returns the voxel (z, y, x, LPS array order) its slices go through: the centre of `label`'s
    voxels when given and present, else of all segmented voxels, else of the volume."""
    img = sitk.DICOMOrient(sitk.ReadImage(str(image_path)), "LPS")
    seg = sitk.DICOMOrient(sitk.ReadImage(str(mask_path)), "LPS")
    a, m = sitk.GetArrayFromImage(img).astype(np.float32), sitk.GetArrayFromImage(seg)
    lo, hi = np.percentile(a, (1, 99))
    centre_of = (m == label) if label is not None and (m == label).any() else (m > 0)
    c = np.argwhere(centre_of).mean(axis=0).astype(int) if centre_of.any() else np.array(a.shape) // 2
    sz, sy, sx = img.GetSpacing()[::-1]
    views = [(a[c[0]], m[c[0]], sy / sx), (a[:, c[1]], m[:, c[1]], sz / sx), (a[:, :, c[2]], m[:, :, c[2]], sz / sy)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.5))
    for ax, (im, ms, aspect) in zip(axes, views, strict=True):
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin="lower" if im is not views[0][0] else "upper")
        rgba = CMAP(ms.astype(np.intp) % 20)      # integer labels index the colour table directly
        rgba[..., 3] = np.where(ms > 0, 0.45, 0.0)
        ax.imshow(rgba, aspect=aspect, interpolation="nearest", origin="lower" if im is not views[0][0] else "upper")
        ax.axis("off")
    modality = modality_of(image_path)
    entries = legend_entries(np.unique(m), modality)
    through = "" if label is None else (f", through label {label} ({int((m == label).sum())} voxels)"
                                        if (m == label).any() else f", no label {label}")
    fig.suptitle(f"{mask_path.name} ({modality}{through})")
    if entries:
        fig.legend(handles=[Patch(facecolor=c, alpha=0.8, label=f"{v} {name}") for v, name, c in entries],
                   loc="lower center", ncol=min(7, len(entries)), fontsize=8, frameon=False)
    with atomic_path(png_path, mkdir=True) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return tuple(int(x) for x in c)


def main(inputs: Path, masks: Path, pngs: Path, label: int | None = None) -> None:
    for mask in sorted(masks.glob("*.nii.gz")):
        image = inputs / mask.name.replace(".nii.gz", "_0000.nii.gz")
        if image.exists():
            overlay(image, mask, pngs / mask.name.replace(".nii.gz", ".png"), label)
            print(f"overlay: {pngs / mask.name.replace('.nii.gz', '.png')}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("images", "masks", "pngs"):
        ap.add_argument(name, type=Path)
    ap.add_argument("--label", type=int, default=None, help="centre the slices on this label")
    a = ap.parse_args()
    main(a.images, a.masks, a.pngs, a.label)
