#!/bin/bash
# Device run of the UDA benchmark (gpu profile): every row trained and scored on the GPU, results packed into $OUT.
# Prepared by benchmarks/device/prepare_uda_h100.sh; called as `bash .devrun/go.sh` with carry [".devrun"].
T0=$(date +%s)
mkdir -p /tmp/site && tar xJf .devrun/site.tar.xz -C /tmp/site || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
mkdir -p /tmp/w/ct/body && cp .devrun/body/* /tmp/w/ct/body/
echo "setup $(( $(date +%s) - T0 )) s"
timeout -k 5 ${BENCH_S:-430} python3 -m training.uda_bench run --work /tmp/w --data .devrun/real --profile gpu --device cuda --jobs 10 --no-progress > $OUT/run.log 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s"
pkill -f "training\.(c2f|selftrain|cyclegan|uda_bench)|-m inference" ; sleep 1
tail -30 $OUT/run.log
cd /tmp/w && for m in models/*; do [ -d "$m" ] && tar cf $OUT/$(basename $m).tar -C models $(basename $m); done
tar czf $OUT/extras.tgz --ignore-failed-read state logs inputs scores pred pred_qc cyclegan/*/quality.json cyclegan/*/grids cyclegan/*/loss_log.jsonl rows/3/*.json rows/3/*.md rows/3/filter* $(ls -d rows/*/nnUNet_results/*/*/fold_all 2>/dev/null | sed 's|$|/training_log*|') 2>/dev/null
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
