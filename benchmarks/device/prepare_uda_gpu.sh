#!/bin/bash
# Prepare .devrun/ (git-ignored) for benchmarks/device/uda_gpu.sh on a lent GPU machine (H100 / H200) that has
# python3 3.12 + CUDA torch but no SimpleITK / nnU-Net / cc3d and no network. Everything must fit the 64 MiB
# working-tree transfer (tracked files included): the Python packages travel as one xz archive (SimpleITK's 272 MB
# library packs to ~28 MB); the images as raw NIfTI in one xz archive (re-gzipped there): the CHAOS target and test
# scans, the two TotalSegmentator CT crops and the two FDG PET scans, the PET ones as int16 = round(SUV x 100)
# (a linear rescale + 0.01 SUV quantisation: the C2F z-score and the CycleGAN percentile window do not see the
# scale, and 0.01 SUV is far below PET noise); labels and the source body masks (the renderer's only input from
# the source scans) as they are. Usage: bash benchmarks/device/prepare_uda_gpu.sh [--no-pet]
# --no-pet leaves the two FDG PET scans out (6.7 MB packed) for calls without a PET row (P, PR). At the end it
# prints what would travel (.devrun + tracked and untracked files, weights/ excluded: move it aside before the
# call) against the device's 64 MiB and fails when it is over.
set -euo pipefail
PET=1
[ "${1:-}" = "--no-pet" ] && PET=0
cd "$(dirname "$0")/../.."
R=$(cd ../shared/data/real && pwd)
PY=.venv/bin/python
grep -qx "/.devrun/" .git/info/exclude 2>/dev/null || echo "/.devrun/" >> .git/info/exclude
rm -rf .devrun /tmp/devrun_whl /tmp/devrun_site /tmp/devrun_img && mkdir -p .devrun /tmp/devrun_whl /tmp/devrun_site
P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d /tmp/devrun_whl"
$PY -m pip download -q $P SimpleITK==2.5.7 connected-components-3d==4.1.1 blosc2==4.14.1 nibabel==5.4.2 ndindex numexpr
$PY -m pip wheel -q --no-deps -w /tmp/devrun_whl nnunetv2==2.6.0 dynamic-network-architectures==0.3.1 \
    batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 acvl-utils==0.2.6 fft-conv-pytorch
for f in /tmp/devrun_whl/*.whl; do unzip -q -o "$f" -d /tmp/devrun_site; done
find /tmp/devrun_site -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
tar cf - -C /tmp/devrun_site . | xz -T0 -6 > .devrun/site.tar.xz
$PY - "$R" /tmp/devrun_img "$PET" <<'PYEOF'
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

real, out = Path(sys.argv[1]), Path(sys.argv[2])
files = [real / "mr_chaos_t2/images" / f"chaos_t2_{c}_0000.nii.gz" for c in (19, 20, 22, 31, 33, 34, 37, 38)]
files += [real / "totalseg_examples/images" / f"{c}_0000.nii.gz" for c in ("ts_ct_dicom", "ts_ct_sm")]
if sys.argv[3] == "1":
    files += sorted((real / "pet_fdg/images").glob("*_0000.nii.gz"))
for f in files:
    dst = out / f.relative_to(real).with_suffix("")          # .nii (raw; xz packs it better than gzip)
    dst.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.ReadImage(str(f))
    if f.parent.parent.name == "pet_fdg":
        a = np.round(sitk.GetArrayFromImage(img) * 100.0).clip(0, 32767).astype(np.int16)
        pet = sitk.GetImageFromArray(a)
        pet.CopyInformation(img)
        img = pet
    sitk.WriteImage(img, str(dst), False)
PYEOF
tar cf - -C /tmp/devrun_img . | xz -T0 -6 > .devrun/images.tar.xz
mkdir -p .devrun/real/mr_chaos_t2/labels .devrun/real/totalseg_examples/labels .devrun/body
cp $R/mr_chaos_t2/labels/*.nii.gz .devrun/real/mr_chaos_t2/labels/
cp $R/totalseg_examples/labels/ts_ct_dicom.nii.gz $R/totalseg_examples/labels/ts_ct_sm.nii.gz \
   .devrun/real/totalseg_examples/labels/
$PY -c "
from pathlib import Path
from training.uda_bench.steps import body_masks
body_masks(Path('$R'), Path('/tmp/devrun_work'))"
cp /tmp/devrun_work/ct/body/*.nii.gz .devrun/body/
cp benchmarks/device/setup.sh .devrun/setup.sh
cp benchmarks/device/uda_gpu.sh .devrun/go.sh
cp benchmarks/device/coarse_probe.sh .devrun/probe.sh
DEV=$(du -sb .devrun | cut -f1)
TREE=$(git ls-files -co --exclude-standard | grep -v '^weights/' | tr '\n' '\0' | du -cb --files0-from=- | tail -1 | cut -f1)
echo ".devrun $DEV bytes + working tree without weights/ $TREE bytes = $((DEV + TREE)) of 67108864 (64 MiB)"
[ $((DEV + TREE)) -le 67108864 ] || { echo "over the device's upload limit: leave the PET scans out (--no-pet)"; exit 1; }
