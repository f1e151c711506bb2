"""Fill a folder with demo inputs: real T2 MRI (one CHAOS scan, one TotalSegmentator MR crop) and the smaller real
whole-body FDG PET scan from ../shared/data/real when present (linked, never copied into the repository), else
synthetic MR-like phantoms. The MRI scans go to the shipped MRI model (CHAOS 34 is one of the benchmark's test
scans, never trained on), the PET scan to the shipped PET model (all four PET organs,
benchmarks/results/uda-h100-run5/)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from eval.phantoms import synthetic_mr  # noqa: E402
from inference.atomic import atomic_path  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
DEMO_REAL = ["mr_chaos_t2/images/chaos_t2_34_0000.nii.gz", "totalseg_examples/images/ts_mr_sm_0000.nii.gz",
             "pet_fdg/images/fdg_sts001_0000.nii.gz"]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    real = [REAL / r for r in DEMO_REAL if (REAL / r).is_file()]
    if real:
        for p in real:
            link = out / p.name
            if not link.exists():
                os.symlink(p, link)
        print(f"demo inputs: {len(real)} real scans from {REAL} in {out}")
        return
    for i, size in enumerate([(256, 256, 40), (320, 260, 60)]):
        target = out / f"phantom_mr_{i}_0000.nii.gz"
        with atomic_path(target) as tmp:
            sitk.WriteImage(synthetic_mr(size, seed=i), str(tmp), True)
    print(f"demo inputs: 2 synthetic MR-like phantoms in {out} (no real data folder at {REAL})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out/inputs"))
