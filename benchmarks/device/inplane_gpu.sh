#!/bin/bash
# On the lent GPU machine, from the repository root, after prepare_inplane_gpu.sh here (carry .devrun):
#   bash benchmarks/device/inplane_gpu.sh [PROFILE [ROWS [DEVICE [JOBS [LIMIT_S]]]]]
#   (default: gpu, every row, cuda, 8 steps at once, 520 s of training at most)
# Trains every stage of every row from the pack in one run (python -m training.inplane run-packed: the
# translators, the teachers' pseudo-labels and the PET renders included; JOBS steps at once, each its own process
# on the one GPU), then leaves in $OUT what the CPU side scores and publishes: the stages (settings, summary,
# curve, final.pt as float16: the device returns at most 64 MiB, the 12 stages are 83 MB in float32), the
# translators' options / quality / curves / grids, the filter's Table 4 and per-scan record, the step logs and
# markers, as inplane_stages.tar.part-* (15 MiB parts). Back here:
#   cat FILES_AT/inplane_stages.tar.part-* | tar x -C W
#   python -m training.inplane score-trained --work W --profile PROFILE     (export + score each row, CPU)
#   python -m training.inplane publish --work W --profile PROFILE --out benchmarks/results/inplane-gpu-...
# Dry run on this CPU (the site's wheels for this python: prepare_inplane_gpu.sh gpu 3.11), e.g. a tiny profile:
#   PATH=.venv/bin:$PATH OUT=/tmp/out bash benchmarks/device/inplane_gpu.sh PROFILE.json "1,A,P" cpu 2
set -uo pipefail
PROFILE=${1:-gpu}
ROWS=${2:-}
DEVICE=${3:-cuda}
JOBS=${4:-8}
LIMIT_S=${5:-520}
T0=$(date +%s)
mkdir -p /tmp/inplane_site && tar xJf .devrun/inplane_site.tar.xz -C /tmp/inplane_site || exit 3
export PYTHONPATH=/tmp/inplane_site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
echo "cores: $(nproc)"
W=/tmp/inplane_work
# at most LIMIT_S of training, so that what finished always comes back inside the call's 600 s
timeout "$LIMIT_S" python3 -m training.inplane run-packed --work $W --profile "$PROFILE" \
  --packed .devrun/inplane_pack.npz --device "$DEVICE" --jobs "$JOBS" ${ROWS:+--rows "$ROWS"} 2>&1 \
  | tee "$OUT/run_packed.log"
code=${PIPESTATUS[0]}
pkill -f "training.inplane (train|prepare)" && sleep 2   # steps still running after a timeout
echo "run-packed exit $code after $(( $(date +%s) - T0 )) s"
python3 - "$W" <<'PY'
import pathlib, sys, torch
for f in sorted(pathlib.Path(sys.argv[1]).glob("**/final.pt")):
    sd = torch.load(f, map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, f)
PY
tar cf - -C $W --exclude checkpoint.pt --exclude '*.npz' --exclude cache --exclude checkpoints --exclude models . \
  | split -b 15m - "$OUT/inplane_stages.tar.part-"
ls -la "$OUT"
exit "$code"
