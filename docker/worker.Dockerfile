# syntax=docker/dockerfile:1
# The TAL initialization service (FastAPI + uvicorn) on a CUDA-capable PyTorch.
#
# PyPI's torch 2.14.1 wheel for Linux x86_64 is the CUDA 13.0 build: the CUDA runtime, cuDNN and
# NCCL come in as pip wheels, so a slim Python base is enough. The host needs only the NVIDIA
# driver and the NVIDIA Container Toolkit; without a GPU the same image runs on the CPU.
#
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t tal-worker .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtual environment with torch and the project -----------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, in its own layer: it is by far the largest and changes least often.
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tal ./tal
COPY service ./service
# Every dependency at the exact version CI tests (docker/constraints.txt).
COPY docker/constraints.txt ./
RUN pip install -c constraints.txt ".[models,service,text]"

# ---- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tal-worker" \
      org.opencontainers.image.description="TAL initialization service (GPU worker)"

RUN groupadd --system --gid 10001 tal \
    && useradd --system --uid 10001 --gid tal --home-dir /home/tal --create-home tal

COPY --from=build /opt/venv /opt/venv
# The shipped default checkpoint, baked in as a read-only fallback. docker/seed-model-store
# copies it into an empty model store volume (compose: model-store-init; Kubernetes: an
# initContainer); a Docker named volume mounted on /models is also pre-filled from it.
COPY model_store/ /opt/tal/default-store/
COPY --chmod=0755 docker/seed-model-store /usr/local/bin/seed-model-store
RUN mkdir -p /models /var/lib/tal/metrics \
    && cp -R /opt/tal/default-store/. /models/ \
    && chown -R tal:tal /models /var/lib/tal/metrics

# The root filesystem may be read-only (compose, Kubernetes): caches go to /tmp. TAL_PORT is
# the port the HEALTHCHECK probes: change it together with --port.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    TAL_MODEL_STORE=/models \
    TAL_MODEL_NAME=tal-default \
    TAL_DEVICE=auto \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/tal/metrics \
    TAL_PORT=8000

VOLUME ["/models"]
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/tal
EXPOSE 8000

# No curl in the slim image: the venv's Python does the probe. start-period covers loading
# the checkpoint (and CUDA initialisation) before the first check counts.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TAL_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["tal", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--workers", "1"]
