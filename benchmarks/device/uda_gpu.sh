#!/bin/bash
# Device run of the UDA benchmark: the chosen rows trained and scored on the GPU, results packed into $OUT.
# Prepared by benchmarks/device/prepare_uda_gpu.sh; called from the repository root as
#   bash .devrun/go.sh [ROWS [PROFILE [BENCH_SECONDS [KEEP_ROWS]]]]   (defaults: 1,2,2b,3,4  gpu  430  =ROWS)
# with carry [".devrun"]. BENCH_SECONDS caps the benchmark command (steps still running are killed; finished
# steps keep their models and scores). Here afterwards: cat FILES_AT/models.tar.* | tar x -C W/models (float16
# torch weights), then `python -m training.uda_bench ship`.
ROWS=${1:-1,2,2b,3,4}
PROFILE=${2:-gpu}
BENCH_S=${3:-430}
KEEP=${4:-}
source .devrun/setup.sh
timeout -k 5 "$BENCH_S" python3 -m training.uda_bench run --work /tmp/w --data /tmp/real --profile "$PROFILE" \
  --rows "$ROWS" --device cuda --jobs 10 --no-progress > $OUT/run.log 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s"
pkill -f "training\.(c2f|selftrain|cyclegan|uda_bench)|-m inference" ; sleep 1
tail -40 $OUT/run.log
# models come back as float16 in <= 15 MiB parts (the device returns at most 8 files of 16 MiB, 64 MiB in all):
# KEEP (4th argument, default the rows run), most wanted first; the rest are scored but left there
python3 benchmarks/device/pack_models.py /tmp/w $OUT --rows "${KEEP:-$ROWS}" --budget-mib 45
cd /tmp/w
tar czf $OUT/extras.tgz --ignore-failed-read state logs inputs scores pred pred_qc cyclegan/*/quality.json cyclegan/*/grids cyclegan/*/loss_log.jsonl rows/3/*.json rows/3/*.md rows/3/filter* $(ls -d rows/*/nnUNet_results/*/*/fold_all 2>/dev/null | sed 's|$|/training_log*|') 2>/dev/null
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
