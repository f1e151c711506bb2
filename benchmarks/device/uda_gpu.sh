#!/bin/bash
# Device run of the UDA benchmark: the chosen rows trained and scored on the GPU, results packed into $OUT.
# Prepared by benchmarks/device/prepare_uda_gpu.sh; called from the repository root as
#   bash .devrun/go.sh [ROWS [PROFILE [BENCH_SECONDS]]]      (defaults: 1,2,2b,3,4  gpu  430)
# with carry [".devrun"]. BENCH_SECONDS caps the benchmark command (steps still running are killed; finished
# steps keep their models and scores).
ROWS=${1:-1,2,2b,3,4}
PROFILE=${2:-gpu}
BENCH_S=${3:-430}
source .devrun/setup.sh
timeout -k 5 "$BENCH_S" python3 -m training.uda_bench run --work /tmp/w --data /tmp/real --profile "$PROFILE" \
  --rows "$ROWS" --device cuda --jobs 10 --no-progress > $OUT/run.log 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s"
pkill -f "training\.(c2f|selftrain|cyclegan|uda_bench)|-m inference" ; sleep 1
tail -40 $OUT/run.log
cd /tmp/w && for m in models/*; do [ -d "$m" ] && tar cf $OUT/$(basename $m).tar -C models $(basename $m); done
tar czf $OUT/extras.tgz --ignore-failed-read state logs inputs scores pred pred_qc cyclegan/*/quality.json cyclegan/*/grids cyclegan/*/loss_log.jsonl rows/3/*.json rows/3/*.md rows/3/filter* $(ls -d rows/*/nnUNet_results/*/*/fold_all 2>/dev/null | sed 's|$|/training_log*|') 2>/dev/null
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
