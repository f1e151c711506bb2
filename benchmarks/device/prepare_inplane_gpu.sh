#!/bin/bash
# Prepare .devrun/ (git-ignored) for benchmarks/device/inplane_gpu.sh on a lent GPU machine (python3 3.12 + CUDA
# torch + numpy + scipy, no SimpleITK / connected-components-3d / dynamic-network-architectures, no network, at most
# 64 MiB uploaded):
#   .devrun/inplane_pack.npz    the profile's volumes (python -m training.inplane pack, ~43 MB with the FLARE22 maps)
#   .devrun/inplane_site.tar.xz dynamic-network-architectures and tqdm (pure Python), connected-components-3d (the
#                               engine's clean-up, for the teachers' pseudo-labels; the cp312 manylinux wheel)
# Usage: bash benchmarks/device/prepare_inplane_gpu.sh [PROFILE [PYTHON]]   (default gpu 3.12: the device's python3;
# a dry run of inplane_gpu.sh on this machine needs this machine's version, e.g. 3.11). Move weights/ and
# benchmarks/results/ aside before the device call (the shipped models and the published stage weights: the run
# trains from scratch and needs neither); the script prints what would travel and fails when it is over the
# device's 64 MiB.
set -euo pipefail
PROFILE=${1:-gpu}
PYVER=${2:-3.12}
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
grep -qx "/.devrun/" .git/info/exclude 2>/dev/null || echo "/.devrun/" >> .git/info/exclude
mkdir -p .devrun && rm -rf /tmp/inplane_whl /tmp/inplane_site && mkdir -p /tmp/inplane_whl /tmp/inplane_site
$PY -m training.inplane pack --profile "$PROFILE" --out .devrun/inplane_pack.npz
$PY -m pip wheel -q --no-deps -w /tmp/inplane_whl dynamic-network-architectures==0.3.1 tqdm==4.70.1
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  -d /tmp/inplane_whl connected-components-3d==4.1.1
for f in /tmp/inplane_whl/*.whl; do unzip -q -o "$f" -d /tmp/inplane_site; done
tar cf - -C /tmp/inplane_site . | xz -T0 -6 > .devrun/inplane_site.tar.xz
# what travels: tracked + untracked-not-ignored files (weights/ and benchmarks/results/ excluded), plus .devrun
tracked=$(git ls-files -co --exclude-standard | grep -v '^weights/\|^benchmarks/results/' | tr '\n' '\0' \
  | du -cb --files0-from=- | tail -1 | cut -f1)
devrun=$(du -cb .devrun/inplane_pack.npz .devrun/inplane_site.tar.xz | tail -1 | cut -f1)
total=$((tracked + devrun))
echo "upload: $((total / 1048576)) MiB (tree $((tracked / 1048576)) MiB + .devrun $((devrun / 1048576)) MiB) of 64 MiB"
[ "$total" -lt $((64 * 1048576)) ] || { echo "over the device's 64 MiB upload" >&2; exit 1; }
