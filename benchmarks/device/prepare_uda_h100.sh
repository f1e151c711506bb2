#!/bin/bash
# Prepare .devrun/ (git-ignored) for benchmarks/device/uda_h100.sh on a lent GPU machine that has python3 3.12 +
# CUDA torch but no SimpleITK / nnU-Net / cc3d and no network. Everything must fit the 64 MiB working-tree transfer:
# the Python packages travel as one xz archive (SimpleITK's 272 MB library packs to ~28 MB), the data as the
# CHAOS target/test scans, all CHAOS labels, the two TotalSegmentator CT crops and the source body masks (the
# renderer's only input from the source scans). Usage: bash benchmarks/device/prepare_uda_h100.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
R=../shared/data/real
PY=.venv/bin/python
grep -qx "/.devrun/" .git/info/exclude 2>/dev/null || echo "/.devrun/" >> .git/info/exclude
rm -rf .devrun /tmp/devrun_whl /tmp/devrun_site && mkdir -p .devrun /tmp/devrun_whl /tmp/devrun_site
P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d /tmp/devrun_whl"
$PY -m pip download -q $P SimpleITK==2.5.7 connected-components-3d==4.1.1 blosc2==4.14.1 nibabel==5.4.2 ndindex numexpr
$PY -m pip wheel -q --no-deps -w /tmp/devrun_whl nnunetv2==2.6.0 dynamic-network-architectures==0.3.1 \
    batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 acvl-utils==0.2.6 fft-conv-pytorch
for f in /tmp/devrun_whl/*.whl; do unzip -q -o "$f" -d /tmp/devrun_site; done
find /tmp/devrun_site -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
tar cf - -C /tmp/devrun_site . | xz -T0 -6 > .devrun/site.tar.xz
mkdir -p .devrun/real/mr_chaos_t2/images .devrun/real/mr_chaos_t2/labels .devrun/real/totalseg_examples/images \
         .devrun/real/totalseg_examples/labels .devrun/body
for c in 19 20 22 31 33 34 37 38; do cp $R/mr_chaos_t2/images/chaos_t2_${c}_0000.nii.gz .devrun/real/mr_chaos_t2/images/; done
cp $R/mr_chaos_t2/labels/*.nii.gz .devrun/real/mr_chaos_t2/labels/
for c in ts_ct_dicom ts_ct_sm; do
  cp $R/totalseg_examples/images/${c}_0000.nii.gz .devrun/real/totalseg_examples/images/
  cp $R/totalseg_examples/labels/$c.nii.gz .devrun/real/totalseg_examples/labels/
done
$PY -c "
from pathlib import Path
from training.uda_bench.steps import body_masks
body_masks(Path('$R').resolve(), Path('/tmp/devrun_work'))"
cp /tmp/devrun_work/ct/body/*.nii.gz .devrun/body/
cp benchmarks/device/uda_h100.sh .devrun/go.sh
du -sh .devrun
