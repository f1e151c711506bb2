#!/bin/bash
# Device run of the UDA benchmark: benchmark runs trained and scored on the GPU at the same time, results packed
# into $OUT. Prepared by benchmarks/device/prepare_uda_gpu.sh; called from the repository root as
#   bash .devrun/go.sh BENCH_SECONDS KEEP_ROWS ROWS@PROFILE [ROWS@PROFILE ...]
#   e.g. bash .devrun/go.sh 500 3,PR,2 1,2,2b,3,4@gpu PR@gpu_pet
# with carry [".devrun"]. Each ROWS@PROFILE is one `uda_bench run` in its own work folder (the first /tmp/w, the
# others /tmp/w1, /tmp/w2, ...; a row belongs in one run only), all started together so their trainings share
# the GPU; BENCH_SECONDS caps them (steps still running are killed; finished steps keep their models and scores).
# KEEP_ROWS: the models to bring back, most wanted first, as float16 parts (pack_models.py).
# Here afterwards: cat FILES_AT/models.tar.* | tar x -C W/models, extras.tgz (w = first run, w1... = the others)
# into a folder, then `python -m training.uda_bench ship`.
BENCH_S=${1:?BENCH_SECONDS}
KEEP=${2:?KEEP_ROWS}
shift 2
[ $# -ge 1 ] || { echo "no ROWS@PROFILE given"; exit 2; }
source .devrun/setup.sh
k=0; works=(); pids=()
for run in "$@"; do
  rows=${run%@*}; profile=${run#*@}
  w=/tmp/w; [ $k -gt 0 ] && w=/tmp/w$k
  if [ $k -gt 0 ]; then mkdir -p $w/ct && cp -r /tmp/w/ct/body $w/ct/; fi
  timeout -k 5 "$BENCH_S" python3 -m training.uda_bench run --work $w --data /tmp/real --profile "$profile" \
    --rows "$rows" --device cuda --jobs 10 --no-progress > $OUT/run$k.log 2>&1 &
  pids+=($!); works+=($w); k=$((k + 1))
done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader -l 30 > $OUT/gpu_use.log 2>&1 &
SMI=$!
for i in "${!pids[@]}"; do wait ${pids[$i]}; echo "bench ${works[$i]} rc $? at $(( $(date +%s) - T0 )) s"; done
kill $SMI 2>/dev/null
pkill -f "training\.(c2f|selftrain|cyclegan|uda_bench)|-m inference" ; sleep 1
for i in "${!works[@]}"; do echo "== ${works[$i]}"; tail -25 $OUT/run$i.log; done
# the models of the other runs beside the first run's, so one pack takes them all
mkdir -p /tmp/w/models
for w in "${works[@]:1}"; do for m in $w/models/r*; do [ -e "$m" ] && ln -sfn "$m" /tmp/w/models/; done; done
# models come back as float16 in <= 15 MiB parts (the device returns at most 8 files of 16 MiB, 64 MiB in all)
python3 benchmarks/device/pack_models.py /tmp/w $OUT --rows "$KEEP" --budget-mib 52
cd /tmp
tar czf $OUT/extras.tgz --ignore-failed-read $(for w in "${works[@]}"; do w=${w#/tmp/}; echo $w/state $w/logs \
  $w/inputs $w/scores $w/pred $w/pred_qc $w/cyclegan/*/quality.json $w/cyclegan/*/grids $w/cyclegan/*/loss_log.jsonl \
  $w/rows/3/*.json $w/rows/3/*.md $w/rows/3/filter*; ls -d $w/rows/*/nnUNet_results/*/*/fold_all 2>/dev/null \
  | sed 's|$|/training_log*|'; done) 2>/dev/null
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
