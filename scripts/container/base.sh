#!/usr/bin/env bash
# A local Debian bookworm base image with Python 3.11, for machines that cannot pull images from a registry.
#
#   DOCKER_HOST=... scripts/container/base.sh [TAG] [WORK_DIR]     # default TAG flare-base:bookworm
#
# debootstrap --variant=minbase with python3 and python3-venv (added by debootstrap itself: apt inside a build may
# fail on certificates), then `docker import`. The Debian mirror is the one this machine's apt uses
# (/etc/apt/sources*), or $DEBIAN_MIRROR. Does nothing when TAG already exists. Needs root (debootstrap).
set -euo pipefail
tag=${1:-flare-base:bookworm}
work=${2:-}
DOCKER=${DOCKER:-docker}

if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
  echo "base: $tag already exists"; exit 0
fi
command -v debootstrap >/dev/null || { echo "base: debootstrap not installed (engine.sh install)" >&2; exit 1; }

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then  # first main-archive URI of apt's sources (deb822 "URIs:" or one-line "deb URI suite")
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
fi
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
           | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
fi
mirror=${mirror:-http://deb.debian.org/debian}

cleanup_work=0
if [ -z "$work" ]; then work=$(mktemp -d /tmp/flare-base.XXXXXX); cleanup_work=1; fi
mkdir -p "$work"
rootfs="$work/rootfs"
rm -rf "$rootfs"
echo "base: debootstrap minbase bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
# apt lists and caches are not needed in an image
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* || true
tar -C "$rootfs" -c . | "$DOCKER" import - "$tag" >/dev/null
rm -rf "$rootfs"
[ "$cleanup_work" = 1 ] && rm -rf "$work"
echo "base: imported $tag ($("$DOCKER" image inspect -f '{{.Size}}' "$tag") bytes)"
