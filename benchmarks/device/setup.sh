#!/bin/bash
# Sourced by the device scripts (uda_gpu.sh, coarse_probe.sh) from the repository root on the lent GPU machine:
# unpacks the Python packages to /tmp/site and the images to /tmp/real (re-gzipped; labels copied beside them),
# exports PYTHONPATH, prints the GPU, and stages the source body masks in /tmp/w/ct/body. Sets T0.
T0=$(date +%s)
mkdir -p /tmp/site /tmp/real && tar xJf .devrun/site.tar.xz -C /tmp/site && tar xJf .devrun/images.tar.xz -C /tmp/real \
  || exit 3
find /tmp/real -name '*.nii' -print0 | xargs -0 -n 1 -P 8 gzip -1
cp -r .devrun/real/* /tmp/real/
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
mkdir -p /tmp/w/ct/body && cp .devrun/body/* /tmp/w/ct/body/
echo "setup $(( $(date +%s) - T0 )) s"
