"""Are two folders of masks identical, voxel for voxel and in geometry? (a refactor of the engine must not change
any mask). Usage: python benchmarks/compare_masks.py BEFORE_DIR AFTER_DIR; exit 0 when every mask of BEFORE has an
identical twin in AFTER, 1 otherwise (each difference named)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    masks = sorted(before.glob("*.nii.gz"))
    if not masks:
        return [f"{before}: no mask"]
    for f in masks:
        g = after / f.name
        if not g.is_file():
            problems.append(f"{f.name}: missing in {after}")
            continue
        a, b = sitk.ReadImage(str(f)), sitk.ReadImage(str(g))
        if (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) != (b.GetSize(), b.GetSpacing(),
                                                                          b.GetOrigin(), b.GetDirection()):
            problems.append(f"{f.name}: geometry differs")
        elif not np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)):
            n = int((sitk.GetArrayViewFromImage(a) != sitk.GetArrayViewFromImage(b)).sum())
            problems.append(f"{f.name}: {n} voxels differ")
    return problems


if __name__ == "__main__":
    found = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(found) if found else f"identical: every mask of {sys.argv[1]}")
    sys.exit(1 if found else 0)
