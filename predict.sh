#!/bin/sh
# FLARE entry point: `sh predict.sh` segments /workspace/inputs into /workspace/outputs;
# `sh predict.sh INPUT_DIR OUTPUT_DIR` segments any folder pair. Extra arguments go to `python -m inference`.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
IN=${1:-/workspace/inputs}
OUT=${2:-/workspace/outputs}
[ $# -ge 2 ] && shift 2 || shift $#
PY=python3
[ -x "$HERE/.venv/bin/python" ] && PY="$HERE/.venv/bin/python"
cd "$HERE"
exec "$PY" -m inference "$IN" "$OUT" "$@"
