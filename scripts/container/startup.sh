#!/usr/bin/env bash
# Container start-up cost of an image: wall time of `docker container run --rm --network none IMAGE ...` for
#   bare:    /bin/true                                         (the engine's own start/stop of a container)
#   imports: python3 importing numpy, SimpleITK, cc3d, onnxruntime and the engine (what every case pays first)
#
#   scripts/container/startup.sh IMAGE [RUNS]     # CSV on stdout: image,what,run,seconds (one warm-up run first)
set -euo pipefail
image=${1:?usage: startup.sh IMAGE [RUNS]}
runs=${2:-5}
DOCKER=${DOCKER:-docker}
imports="import numpy, SimpleITK, cc3d, onnxruntime, inference.cli, inference.pipeline"
"$DOCKER" container run --rm --network none "$image" python3 -c "$imports"  # warm the page cache
echo "image,what,run,seconds"
for what in bare imports; do
  for i in $(seq 1 "$runs"); do
    t0=$(date +%s.%N)
    if [ "$what" = bare ]; then
      "$DOCKER" container run --rm --network none "$image" true
    else
      "$DOCKER" container run --rm --network none "$image" python3 -c "$imports"
    fi
    t1=$(date +%s.%N)
    python3 -c "print(f'$image,$what,$i,{$t1 - $t0:.3f}')"
  done
done
