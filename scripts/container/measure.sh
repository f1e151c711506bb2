#!/usr/bin/env bash
# Per-case time and memory of the image, the organizers' way (one case per `docker container run`, container start
# included), with the evaluation tool: `python -m eval resources`.
#
#   scripts/container/measure.sh IMAGE INPUT_DIR OUT_DIR [--gpu] [other `eval resources` options, e.g. --cases a,b]
#
# --gpu: the organizers' exact command (eval's --docker-image mode, which always passes --gpus=device=N).
# Without --gpu (a machine without a GPU, where `--gpus` makes docker refuse to start the container): the same
# command line without --gpus, run in eval's --command mode.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=${1:?usage: measure.sh IMAGE INPUT_DIR OUT_DIR [--gpu] [...]}
inputs=${2:?usage: measure.sh IMAGE INPUT_DIR OUT_DIR [--gpu] [...]}
out=${3:?usage: measure.sh IMAGE INPUT_DIR OUT_DIR [--gpu] [...]}
shift 3
PY=${PYTHON:-$root/.venv/bin/python}
gpu=0
if [ "${1:-}" = "--gpu" ]; then gpu=1; shift; fi
cd "$root"
if [ "$gpu" = 1 ]; then
  exec "$PY" -m eval resources "$inputs" --out-dir "$out" --docker-image "$image" "$@"
fi
exec "$PY" -m eval resources "$inputs" --out-dir "$out" "$@" --command \
  "docker container run --shm-size=28gb -m 28G --name flare_eval_{case}_$$ --rm -v {inputs}/:/workspace/inputs/ -v {outputs}/:/workspace/outputs/ $image /bin/bash -c 'sh predict.sh'"
