# syntax=docker/dockerfile:1
#
# The schedsearch image. One image runs both the controller and the trainer pods, because:
#   - the controller plans with the same strategy code (trainers/) that the pods train with, so a
#     single build guarantees the decisions and the training loop are the same version;
#   - trainer pods are created by the controller from the image it runs in, so upgrading the
#     operator upgrades the trainers with no second image to pin, mirror or scan;
#   - the CLI (`schedsearch best`, `schedsearch export`) is in the same package, handy for
#     `kubectl exec` / `kubectl run` debugging against the cluster.
#
# Commands this image runs (all installed by the package below):
#   python -m schedsearch.controller ...    the operator (the default command; the chart sets it too)
#   python -m schedsearch.trainers pod ...  a trainer pod (set by the controller on the pods it creates)
#   schedsearch ...                         the CLI
#
# CPU (default):  docker build -t schedsearch:dev .
# GPU:            docker build -t schedsearch:dev-cuda \
#                   --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                   --build-arg TORCH_INDEX_URL= .
# The base must provide (or be able to apt-get install) python3 >= 3.10. Both stages start from
# the same base so the virtual environment copied across finds the same interpreter at the same path.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: compilers and headers, used only to build wheels that have no binary release.
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# Torch's CPU wheels are a fraction of the size of the default (CUDA) ones; a GPU build passes
# an empty value to take torch from the default package index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A CUDA runtime base has no Python: install the distribution's. Package versions follow the base
# image, which is the pin (its tag or digest), hence no per-package apt pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && if ! command -v python3 >/dev/null; then \
      apt-get install -y --no-install-recommends python3 python3-venv python3-dev; \
    fi \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/schedsearch
ENV PATH=/opt/schedsearch/bin:$PATH

WORKDIR /src
# Dependencies first (their layer is reused while only the project's code changes).
COPY pyproject.toml constraints.txt README.md ./
# Versions come from constraints.txt, the project's one list of pins.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install -c constraints.txt --index-url "$TORCH_INDEX_URL" torch; \
    fi

COPY schedsearch ./schedsearch
COPY controller ./controller
COPY trainers ./trainers
# Not editable: the final stage gets a self-contained environment, not a link to /src.
RUN pip install -c constraints.txt . \
 && python -m compileall -q /opt/schedsearch

# ---------------------------------------------------------------------------------------------
# runtime: the interpreter and the environment, no compilers, a non-root user.
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 10001 schedsearch \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin schedsearch

COPY --from=builder /opt/schedsearch /opt/schedsearch

# Bytecode is compiled at build time; the pods run with a read-only root filesystem, so nothing
# may try to write it later. HOME is /tmp, the one writable mount (an emptyDir in the chart).
ENV PATH=/opt/schedsearch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib

# Fail the build, not the pod, if an entry point is missing from the installed package.
RUN schedsearch --help >/dev/null \
 && python -m schedsearch.trainers --help >/dev/null \
 && python -m schedsearch.controller --help >/dev/null

# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp

LABEL org.opencontainers.image.title="schedsearch" \
      org.opencontainers.image.description="Learning-rate schedule search: operator, trainers and CLI" \
      org.opencontainers.image.licenses="Apache-2.0"

CMD ["python", "-m", "schedsearch.controller"]
