#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, made without an image registry, for building
# the images where `FROM python:3.11...-slim-bookworm` cannot be pulled:
#   sudo docker/local-base.sh [IMAGE]        (default vdis-base:bookworm; needs root, debootstrap)
#   docker build --network host --build-arg BASE=vdis-base:bookworm --target api \
#       -f docker/Dockerfile -t vdis-api .
# Debian's python3 in a virtual environment at /opt/venv, first on PATH, so that `python` and
# `pip` mean what they mean in the python image. Does nothing when IMAGE exists already.
# The mirror is the first Debian one in the apt sources (MIRROR= to choose another).
set -euo pipefail
docker=${DOCKER:-docker}
image=${1:-vdis-base:bookworm}
if "$docker" image inspect "$image" >/dev/null 2>&1; then
    echo "local-base: $image exists"
    exit 0
fi
mirror=${MIRROR:-$(grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list \
    /etc/apt/sources.list.d/ 2>/dev/null | head -n 1 | tr -d ' ' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/vdis-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "local-base: debootstrap bookworm from $mirror into $root"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" \
    >"$root.log" 2>&1 || { tail -n 20 "$root.log"; exit 1; }
rm -f "$root.log"
chroot "$root" python3 -m venv /opt/venv
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | "$docker" import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
echo "local-base: $image made"
