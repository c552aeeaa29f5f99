# The API image: FastAPI + plain onnxruntime on CPU, no torch, no CUDA. With VDIS_REDIS_URL set
# (docker-compose.yml) it only queues jobs; workers run the model. docker-compose.cpu.yml also
# runs the worker from this image on machines without a GPU.
# Build from the repository root: docker build -f docker/api.Dockerfile -t vdis-api .
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so editing the code reuses this layer.
# Plain onnxruntime instead of the onnxruntime-gpu that pyproject.toml picks on Linux x86_64:
# the same module, without the CUDA provider libraries this image would never load.
COPY pyproject.toml docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py --onnxruntime cpu --pyproject /tmp/build/pyproject.toml \
        > /tmp/build/requirements.txt \
    && pip install -r /tmp/build/requirements.txt \
    && rm -rf /tmp/build

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app vdis

# The code, then the shipped model (models/sprites); mount another and set VDIS_MODEL_DIR.
COPY service/ service/
COPY models/ models/

USER vdis
ENV VDIS_MODEL_DIR=/app/models/sprites
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["python", "-m", "uvicorn", "service.app:app", "--host", "0.0.0.0", "--port", "8000"]
