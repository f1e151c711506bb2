#!/usr/bin/env bash
# The main job on a fresh machine: install, then segment demo volumes (or INPUT_DIR) into OUTPUT_DIR with PNG overlays.
#   bash scripts/demo.sh [INPUT_DIR [OUTPUT_DIR]] [extra options for python -m inference]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q -e ".[eval]"
IN=${1:-}
OUT=${2:-demo_out/masks}
[ $# -ge 2 ] && shift 2 || shift $#
if [ -z "$IN" ]; then
  IN=demo_out/inputs
  .venv/bin/python scripts/demo_inputs.py "$IN"
fi
set +e
sh predict.sh "$IN" "$OUT" "$@"
code=$?
set -e
if [ -d "$OUT" ]; then .venv/bin/python scripts/overlays.py "$IN" "$OUT" "${OUT%/}_png"; fi
exit $code
