# The GPU worker image: `python -m service.worker` on onnxruntime-gpu's CUDA provider.
# Build from the repository root: docker build -f docker/worker.Dockerfile -t vdis-worker .
#
# Base: CUDA 13 runtime + cuDNN 9. onnxruntime-gpu 1.31.1 (pinned in pyproject.toml) is the CUDA
# 13 build: its wheel's onnxruntime/capi/build_and_package_info.py says cuda_version = '13.0' and
# libonnxruntime_providers_cuda.so links libcudart.so.13 and libcublas.so.13 (checked with
# readelf -d). The ONNX Runtime CUDA provider's requirements
# (https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements)
# state that a build runs with any minor version of its CUDA major (minor version
# compatibility) and that cuDNN 8 and 9 builds are not interchangeable; the current packages
# are built with cuDNN 9. The host needs an NVIDIA driver recent enough for CUDA 13 and the
# NVIDIA container toolkit.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python 3.12 (the project needs >= 3.11), in a virtual environment.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so editing the code reuses this layer.
COPY pyproject.toml docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py --onnxruntime gpu --pyproject /tmp/build/pyproject.toml \
        > /tmp/build/requirements.txt \
    && pip install -r /tmp/build/requirements.txt \
    && rm -rf /tmp/build

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app vdis

# The code, then the shipped model (models/sprites); mount another and set VDIS_MODEL_DIR.
COPY service/ service/
COPY models/ models/

USER vdis
# A worker on this image is there to use the GPU: refuse to start on CPU (compose can unset it).
ENV VDIS_MODEL_DIR=/app/models/sprites \
    VDIS_REQUIRE_GPU=true

# Healthy while this container's worker has a fresh heartbeat in Redis (what the API counts).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "service.worker", "--check"]

CMD ["python", "-m", "service.worker"]
