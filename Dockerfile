# syntax=docker/dockerfile:1
# Build stage: install the package and its dependencies into a virtualenv.
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for the matcher's C kernel (aggregator/matching/_kernel.c), in this stage only: the
# run stage gets the built virtualenv and no compiler. Debian's versions follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python -m venv /opt/aggregator
COPY pyproject.toml setup.py README.md ./
COPY aggregator ./aggregator
# The kernel is optional for pip (it skips it without a compiler); here it must be there.
RUN /opt/aggregator/bin/pip install --no-cache-dir . \
    && /opt/aggregator/bin/python -c "import aggregator.matching._kernel"

# Run stage: only the virtualenv, a non-root numeric user, state on a volume.
FROM python:3.12-slim
LABEL org.opencontainers.image.title="aggregator" \
      org.opencontainers.image.description="News feeds to Telegram alerts, Arabic- and English-aware" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/aggregator /opt/aggregator
ENV PATH=/opt/aggregator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGGREGATOR_CONFIG=/config/config.toml
# /config belongs to root: the service user can read the config but never change it (mount it
# read-only too). /data, the only place it writes, is a volume owned by that user.
RUN mkdir -p /config /data && chmod 0755 /config && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# The config is mounted read-only at /config/config.toml, with [storage] path = "/data/aggregator.json".
# The token comes from TELEGRAM_BOT_TOKEN or a secret file named in [telegram] token_file.
# Healthy: the daemon is running, its polls keep succeeding, and delivery is not blocked
# (`aggregator health` reads the status file the daemon keeps beside its store in /data).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["aggregator", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["aggregator"]
CMD ["run"]
