#!/usr/bin/env bash
# A private Docker engine for building and running the FLARE image on a machine where none runs.
#
#   scripts/container/engine.sh install        # root: apt-get install docker.io debootstrap (when missing)
#   scripts/container/engine.sh start DIR      # dockerd with data/exec roots and socket under DIR; prints DOCKER_HOST
#   scripts/container/engine.sh stop DIR       # stop that dockerd by its PID (waits for it to exit)
#
# Then: export DOCKER_HOST=unix://DIR/docker.sock. Nothing is written outside DIR (apart from the apt install).
# The storage driver is overlay2 when the kernel allows it (a container start is then a cheap mount), vfs otherwise
# (every container start copies the whole image: slow with a multi-GB image). Override with FLARE_STORAGE_DRIVER.
set -euo pipefail

die() { echo "engine: $*" >&2; exit 1; }

cmd=${1:-}
case "$cmd" in
  install)
    if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
      echo "engine: dockerd and debootstrap already installed"; exit 0
    fi
    [ "$(id -u)" = 0 ] || die "not root: cannot apt-get install docker.io debootstrap"
    command -v apt-get >/dev/null || die "no apt-get: install docker.io and debootstrap yourself"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends docker.io debootstrap >/dev/null
    command -v dockerd >/dev/null || die "apt-get ran but dockerd is still missing"
    echo "engine: installed docker.io and debootstrap"
    ;;
  start)
    dir=${2:?usage: engine.sh start DIR}
    [ "$(id -u)" = 0 ] || die "not root: cannot run dockerd"
    command -v dockerd >/dev/null || die "dockerd not installed (run: engine.sh install)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    sock="$dir/docker.sock"
    # the exec root holds containerd's sockets: unix socket paths are limited to 108 bytes, so keep it short
    exec_root=$(mktemp -d /tmp/flare-dx.XXXXXX)
    echo "$exec_root" > "$dir/exec_root"
    drivers=${FLARE_STORAGE_DRIVER:-overlay2 vfs}
    for driver in $drivers; do
      rm -f "$sock"
      dockerd --data-root "$dir/data" --exec-root "$exec_root" --pidfile "$dir/dockerd.pid" \
        --host "unix://$sock" --storage-driver "$driver" --iptables=false --ip-masq=false --bridge=none \
        >"$dir/dockerd.log" 2>&1 &
      pid=$!
      echo "$pid" > "$dir/dockerd.pid.launcher"
      for _ in $(seq 1 120); do  # up to 60 s for the socket to answer
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        if [ -S "$sock" ] && DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
          echo "$driver" > "$dir/storage_driver"
          echo "engine: dockerd pid $pid, storage driver $driver, DOCKER_HOST=unix://$sock"
          exit 0
        fi
        sleep 0.5
      done
      echo "engine: dockerd with storage driver $driver did not come up; last log lines:" >&2
      tail -n 5 "$dir/dockerd.log" >&2 || true
      "$0" stop "$dir" >/dev/null 2>&1 || true
    done
    die "dockerd did not start (log: $dir/dockerd.log)"
    ;;
  stop)
    dir=${2:?usage: engine.sh stop DIR}
    pid=$(cat "$dir/dockerd.pid.launcher" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "engine: stopped dockerd pid $pid"
    fi
    rm -f "$dir/dockerd.pid.launcher"
    # dockerd leaves its host network namespace bind-mounted (EXEC_ROOT/netns/default), and a killed dockerd may
    # leave layer mounts: unmount whatever is still mounted under its folders, deepest first, then delete the exec root
    exec_root=$(cat "$dir/exec_root" 2>/dev/null || true)
    for root in "$exec_root" "$(cd "$dir" && pwd)"; do
      [ -n "$root" ] || continue
      awk -v p="$root/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
      done
    done
    [ -n "$exec_root" ] && rm -rf "$exec_root" 2>/dev/null || true
    ;;
  *)
    die "usage: engine.sh install | start DIR | stop DIR"
    ;;
esac
