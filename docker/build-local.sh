#!/usr/bin/env bash
# The CPU stack's images without an image registry (what tests/docker/test_stack.py runs):
#   sudo docker/build-local.sh        vdis-base:bookworm (docker/local-base.sh, once), then on it
#                                     vdis-api, vdis-worker-cpu and vdis-redis, tagged $VDIS_TAG
#   VDIS_TAG=local VDIS_REDIS_IMAGE=vdis-redis:local \
#       docker compose -f docker-compose.yml -f docker-compose.cpu.yml up -d --no-build
# Builds run with host networking (apt and pip reach their registries as the host does) and
# hand the host's /etc/pip.conf and CA bundle to pip as build secrets, never into a layer.
# Each step prints how long it took; a second run reuses the base and the build cache.
# DOCKER: the docker CLI; by default `docker` if it has buildx, else Debian's docker.io CLI
# (20.10, BuildKit built in), since a Docker 23+ CLI without buildx refuses to build with it.
set -euo pipefail
cd "$(dirname "$0")/.."
docker=${DOCKER:-docker}
if [ -z "${DOCKER:-}" ] && ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
    docker=/usr/bin/docker
fi
base=${VDIS_BASE:-vdis-base:bookworm}
tag=${VDIS_TAG:-latest}
secrets=()
[ -f /etc/pip.conf ] && secrets+=(--secret id=pip.conf,src=/etc/pip.conf)
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] && secrets+=(--secret id=ca.crt,src="$ca")

step() {
    local name=$1 start
    shift
    start=$(date +%s.%N)
    "$@"
    awk -v name="$name" -v start="$start" -v end="$(date +%s.%N)" \
        'BEGIN { printf "build-local: %s took %.1f s\n", name, end - start }'
}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
build() {
    DOCKER_BUILDKIT=1 "$docker" build --progress plain --network host --build-arg BASE="$base" \
        --label vdis.build-local=1 "$@" >"$log" 2>&1 || { tail -n 30 "$log"; return 1; }
}

step "base $base" env DOCKER="$docker" docker/local-base.sh "$base"
step "vdis-api:$tag" build "${secrets[@]}" -f docker/Dockerfile --target api \
    -t "vdis-api:$tag" .
step "vdis-worker-cpu:$tag" build "${secrets[@]}" -f docker/Dockerfile --target worker \
    -t "vdis-worker-cpu:$tag" .
step "vdis-redis:$tag" build -f docker/redis.Dockerfile -t "vdis-redis:$tag" docker
# The images these tags pointed to before (untagged now): this script's own, nobody else's.
"$docker" image prune -f --filter label=vdis.build-local=1 >/dev/null
