# Redis from Debian's package, for machines that cannot pull docker-compose.yml's default
# (redis:7-alpine): built on the same base as the other images, e.g. docker/local-base.sh's,
#   docker build --network host --build-arg BASE=vdis-base:bookworm -f docker/redis.Dockerfile \
#       -t vdis-redis docker
# and used with VDIS_REDIS_IMAGE=vdis-redis. Laid out as the official image is: redis-server and
# redis-cli on PATH, data in /data (compose mounts a volume there), run as the redis user.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN DEBIAN_FRONTEND=noninteractive apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
