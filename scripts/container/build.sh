#!/usr/bin/env bash
# Build the FLARE image from a staged context (Dockerfile, .dockerignore, predict.sh, inference/, weights/ only).
#
#   scripts/container/build.sh [--tag T] [--base IMAGE] [--wheels DIR] [--weights DIR] [--ort PACKAGES] [--keep-context DIR]
#
#   --tag      image name (default flare-uda:latest)
#   --base     BASE_IMAGE build argument (default: the Dockerfile's, python:3.11-slim-bookworm)
#   --wheels   install Python packages only from this wheelhouse (scripts/container/wheels.sh): it is served on
#              127.0.0.1 for the build (docker build --network host), so no wheel lands in any image layer
#   --weights  the weights folder to ship (default: the repository's weights/)
#   --ort      ORT_PACKAGES build argument (e.g. onnxruntime==1.31.1 for a CPU-only image)
# Prints the build time and the image size. Uses $DOCKER (default docker) and $DOCKER_HOST.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DOCKER=${DOCKER:-docker}
tag=flare-uda:latest base="" wheels="" weights="$root/weights" ort="" keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --wheels) wheels=$(cd "$2" && pwd); shift 2 ;;
    --weights) weights=$(cd "$2" && pwd); shift 2 ;;
    --ort) ort=$2; shift 2 ;;
    --keep-context) keep=$2; shift 2 ;;
    *) echo "build: unknown option $1" >&2; exit 2 ;;
  esac
done

ctx=$(mktemp -d /tmp/flare-ctx.XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  if [ -n "$keep" ]; then rm -rf "$keep"; mv "$ctx" "$keep"; else rm -rf "$ctx"; fi
}
trap cleanup EXIT

cp "$root/Dockerfile" "$root/.dockerignore" "$root/predict.sh" "$ctx/"
cp -r "$root/inference" "$ctx/inference"
cp -rL "$weights" "$ctx/weights"

args=(--network host --tag "$tag")
[ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")
[ -n "$ort" ] && args+=(--build-arg "ORT_PACKAGES=$ort")
if [ -n "$wheels" ]; then
  # a fixed port keeps PIP_EXTRA, and so docker's layer cache, the same from build to build; any free one if taken
  port=$(FLARE_WHEEL_PORT=${FLARE_WHEEL_PORT:-8765} python3 -c 'import os, socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(os.environ["FLARE_WHEEL_PORT"])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && break
    sleep 0.2
  done
  args+=(--build-arg "PIP_EXTRA=--no-index --find-links http://127.0.0.1:$port/")
fi

t0=$(date +%s.%N)
DOCKER_BUILDKIT=0 "$DOCKER" build "${args[@]}" "$ctx"
t1=$(date +%s.%N)
size=$("$DOCKER" image inspect -f '{{.Size}}' "$tag")
python3 -c "print(f'build: {\"$tag\"} built in {$t1 - $t0:.0f} s, image size {$size / 1e9:.2f} GB ({$size} bytes)')"
