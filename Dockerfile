# syntax=docker/dockerfile:1
# The lift image: the project installed on a CUDA PyTorch base, run as a non-root user, `lift` as entrypoint.
#
#   docker build -t REGISTRY/lift:0.1.0 .
#   docker push REGISTRY/lift:0.1.0
#   docker run --rm --gpus all REGISTRY/lift:0.1.0 config show align
#
# The base image's torch (and torchvision) are kept: the install is constrained to the versions already in it, so
# pip never downloads another multi-GB torch build. Pick another torch/CUDA pair (pyproject admits
# torch>=2.6,<2.15) with --build-arg BASE_IMAGE=pytorch/pytorch:<torch>-cuda<x.y>-cudnn9-runtime.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

# Everything a process writes outside object storage goes under HOME/.cache or /tmp: on Kubernetes the root
# filesystem is read-only and those two are emptyDir volumes (lift/launch/pytorchjob.py, charts/templates/_pytorchjob.tpl).
ENV HOME=/home/lift \
    XDG_CACHE_HOME=/home/lift/.cache \
    HF_HOME=/home/lift/.cache/huggingface \
    LIFT_CACHE=/home/lift/.cache/lift \
    TORCH_HOME=/home/lift/.cache/torch \
    TRITON_CACHE_DIR=/home/lift/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/home/lift/.cache/inductor \
    MPLCONFIGDIR=/home/lift/.cache/matplotlib \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, high UID/GID (10001, as the Helm chart's securityContext): above any host or base-image user (Ubuntu
# 24.04 bases already hold 1000), and numeric, so Kubernetes can verify runAsNonRoot.
RUN set -eux; \
    groupadd --gid 10001 lift; \
    useradd --uid 10001 --gid 10001 --home-dir /home/lift --create-home --shell /usr/sbin/nologin lift; \
    mkdir -p /home/lift/.cache; \
    chown -R 10001:10001 /home/lift

WORKDIR /opt/lift
COPY pyproject.toml README.md ./
COPY lift ./lift
# Constrain torch & co. to the base image's own builds (`pip list` names them name==version however they were
# installed), install the project, and prove that it imports on that torch.
RUN set -eux; \
    python -m pip list --format=freeze | grep -iE '^(torch|torchvision|torchaudio|triton)==' \
        > /tmp/base-constraints.txt; \
    cat /tmp/base-constraints.txt; \
    python -m pip install --constraint /tmp/base-constraints.txt .; \
    rm -f /tmp/base-constraints.txt; \
    python -c "import torch, lift.cli; print('lift on torch', torch.__version__, 'CUDA', torch.version.cuda)"; \
    lift --help > /dev/null

USER 10001:10001
WORKDIR /home/lift
ENTRYPOINT ["lift"]
CMD ["--help"]
