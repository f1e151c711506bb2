#!/bin/bash
# On the lent GPU machine, from the repository root, after prepare_inplane_gpu.sh here (carry .devrun):
#   bash benchmarks/device/inplane_gpu.sh [PROFILE [ROWS [DEVICE]]]      (default: gpu "A 1 4" cuda)
# Trains the shared coarse stage and each row's fine stage from the pack on the GPU, and leaves the trained stages
# (final.pt, summary.json, curve.csv) in $OUT as inplane_stages.tar.part-* (15 MiB parts: the device returns at
# most 8 files of 16 MiB). Back here: cat FILES_AT/inplane_stages.tar.part-* | tar x -C W, then
#   python -m training.inplane run --work W --profile PROFILE --row R   (exports and scores each row on the CPU)
set -uo pipefail
PROFILE=${1:-gpu}
ROWS=${2:-"A 1 4"}
DEVICE=${3:-cuda}
T0=$(date +%s)
mkdir -p /tmp/inplane_site && tar xJf .devrun/inplane_site.tar.xz -C /tmp/inplane_site || exit 3
export PYTHONPATH=/tmp/inplane_site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
W=/tmp/inplane_work
PACK=.devrun/inplane_pack.npz
train() { python3 -m training.inplane train --work $W --profile "$PROFILE" --packed $PACK --device $DEVICE "$@" \
          2>&1 | tr '\r' '\n' | grep -v '%|' ; }
train --row A --stage coarse
for r in $ROWS; do train --row "$r" --stage fine; done
echo "trained in $(( $(date +%s) - T0 )) s"
tar cf - -C $W --exclude checkpoint.pt . | split -b 15m - "$OUT/inplane_stages.tar.part-"
ls -la "$OUT"
