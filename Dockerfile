# syntax=docker/dockerfile:1.7
# flexsync image: `flexsync sync` as a non-root user on a read-only root filesystem.
#
#   docker build -t flexsync:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -v flexsync-data:/data \
#       --env-file broker-sync.env flexsync:0.1.0            # = flexsync sync
#
# Every install step is in scripts/install-image.sh, which CI also runs into a temp dir
# (`make image-check`): dependencies from requirements.lock, bytecode precompiled (the
# read-only root FS means Python could never cache .pyc), dbt project parsed at build.
# The base image is pinned by digest (Docker Hub's python:3.11-slim-bookworm), so a rebuild
# never picks up a different base silently. To move it: `docker buildx imagetools inspect
# python:3.11-slim-bookworm` and replace the digest (or pass --build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV=/usr/local/bin/uv \
    PYTHON=/usr/local/bin/python3.11 \
    VENV=/opt/venv \
    APP_DIR=/app \
    SRC_DIR=/src \
    BROKER_SYNC_DATA_DIR=/data \
    DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false
RUN python -m pip install "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first: this layer is rebuilt only when pyproject.toml or the lock changes.
COPY pyproject.toml requirements.lock ./
COPY scripts/install-image.sh scripts/install-image.sh
RUN --mount=type=cache,target=/root/.cache/uv sh scripts/install-image.sh deps
# Then the project: flexsync package (no deps), dbt project into /app, compileall, dbt parse.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv sh scripts/install-image.sh project

FROM ${PYTHON_IMAGE} AS runtime
# BROKER_SYNC_DATA_DIR must stay /data: dbt parse ran with it at build, and the baked
# partial-parse state is only reused when the rendered profile is identical.
# dbt writes target/ and logs/ on every run: both live on the writable /tmp (an emptyDir
# in Kubernetes); docker-entrypoint.sh copies the baked partial_parse.msgpack there.
# No MALLOC_ARENA_MAX: the flexsync command sets glibc's arena limit itself, before any
# thread starts (sixteen: flexsync/core/heap.py says why).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    BROKER_SYNC_DATA_DIR=/data \
    DBT_PROJECT_DIR=/app \
    DBT_PROFILES_DIR=/app \
    DBT_TARGET_PATH=/tmp/dbt/target \
    DBT_LOG_PATH=/tmp/dbt/logs \
    FLEXSYNC_BAKED_DBT_TARGET=/app/target \
    TMPDIR=/tmp \
    HOME=/tmp
RUN groupadd --gid 10001 flexsync \
    && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --no-log-init \
        --shell /usr/sbin/nologin flexsync \
    && mkdir -p /data \
    && chown 10001:10001 /data
# No package installer at run time: the base image's pip (the venv has none) goes.
RUN rm -rf /usr/local/bin/pip /usr/local/bin/pip3* \
        /usr/local/lib/python3.11/site-packages/pip \
        /usr/local/lib/python3.11/site-packages/pip-*.dist-info
# Code stays root-owned and read-only to the runtime user.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["sync"]
