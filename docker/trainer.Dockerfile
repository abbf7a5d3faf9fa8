# syntax=docker/dockerfile:1
# The TAL training job: `tal train ...` under torchrun, writing versioned checkpoints to the
# model store volume (/models/<name>/<version>/).
#
# Single node:  docker run --gpus all -v tal-model-store:/models tal-trainer
# Many nodes:   torchrun reads its rendezvous settings from PET_* environment variables
#               (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR, ...), which Kubeflow's
#               PyTorchJob sets; see k8s/training/pytorchjob.yaml.
#
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t tal-trainer .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tal ./tal
# Every dependency at the exact version CI tests (docker/constraints.txt).
COPY docker/constraints.txt ./
RUN pip install -c constraints.txt ".[models,text]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tal-trainer" \
      org.opencontainers.image.description="TAL learngene training job (torchrun)"

# The offline task suite (Debian bookworm versions, pinned): Fashion-MNIST, the fonts the glyph
# tasks are rendered from, the colour emoji font and Unicode emoji data of emoji_groups, and the
# text tasks' fortunes, WordNet glosses and man pages. Slim images leave man pages out
# (a dpkg path-exclude); the man_section task reads them, so that rule goes first and the
# packages whose pages it reads are installed again with their pages.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN grep -rl '/usr/share/man' /etc/dpkg/dpkg.cfg.d/ | xargs -r sed -i '\#/usr/share/man#d' \
    && apt-get update \
    && apt-get install -y --no-install-recommends --reinstall \
        dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
        fonts-dejavu-core=2.37-6 \
        fonts-freefont-ttf=20120503-10 \
        fonts-liberation2=2.1.5-1 \
        fonts-noto-color-emoji=2.042-0+deb12u1 \
        unicode-data=15.0.0-1 \
        fortunes=1:1.99.1-7.3 \
        fortunes-min=1:1.99.1-7.3 \
        fortunes-de=0.35-1 \
        fortunes-es=1.36 \
        fortunes-it=1.99-4.1 \
        fortunes-br=20220821 \
        fortunes-pl=0.0.20130525-3 \
        fortunes-cs=2.0.9-1.1 \
        fortunes-ru=1.52-3.1 \
        fortunes-bg=1.4 \
        fortunes-eo=20020729b-1.1 \
        wordnet-base=1:3.0-37 \
        manpages=6.03-2 \
        manpages-dev=6.03-2 \
        coreutils=9.1-1 \
        util-linux=2.38.1-5+deb12u3 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 tal \
    && useradd --system --uid 10001 --gid tal --home-dir /home/tal --create-home tal \
    && mkdir -p /models /work/runs /work/data \
    && chown -R tal:tal /models /work

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TAL_MODEL_STORE=/models \
    TAL_DATA_DIR=/work/data

VOLUME ["/models", "/work/runs"]
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /work

# torchrun is the entrypoint; the default command trains and exports the default learngene as a
# new version (a timestamp) of tal-default. Override the command for a single stage, e.g.
#   --standalone --nproc_per_node=4 -m tal.cli train stage2 --init-from ... --export NAME:VERSION
ENTRYPOINT ["torchrun"]
CMD ["--standalone", "--nproc_per_node=1", "-m", "tal.cli", "train", "default", \
     "--store", "/models", "--run-dir", "/work/runs/default"]
