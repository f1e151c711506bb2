#!/usr/bin/env bash
# Fill a wheelhouse for the image's packages on the host (for builds where pip inside `docker build` cannot reach
# or verify the package index).
#
#   scripts/container/wheels.sh DIR [ORT_PACKAGES]
#
# The requirements are the Dockerfile's own ARG defaults (PACKAGES, ORT_PACKAGES), so there is one list. Wheels are
# chosen for CPython 3.11 on x86_64 glibc (the bookworm base), whatever the host's Python is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${1:?usage: wheels.sh DIR [ORT_PACKAGES]}
arg_default() { sed -n "s/^ARG $1=\"\(.*\)\"\$/\1/p" "$root/Dockerfile" | head -n 1; }
packages=$(arg_default PACKAGES)
ort=${2:-$(arg_default ORT_PACKAGES)}
[ -n "$packages" ] && [ -n "$ort" ] || { echo "wheels: cannot read PACKAGES/ORT_PACKAGES from the Dockerfile" >&2; exit 1; }
PY=${PYTHON:-python3}
mkdir -p "$dir"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# shellcheck disable=SC2086  # word-split on purpose: lists of requirements
"$PY" -m pip download -q --disable-pip-version-check -d "$dir" --only-binary=:all: --implementation cp \
  --python-version 3.11 --abi cp311 --abi abi3 --abi none "${platforms[@]}" $packages $ort
echo "wheels: $(find "$dir" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $dir"
