# syntax=docker/dockerfile:1
# Build stage: install the package and its dependencies into a virtualenv.
FROM python:3.12-slim AS build
WORKDIR /src
RUN python -m venv /opt/aggregator
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
RUN /opt/aggregator/bin/pip install --no-cache-dir .

# Run stage: only the virtualenv, a non-root numeric user, state on a volume.
FROM python:3.12-slim
COPY --from=build /opt/aggregator /opt/aggregator
ENV PATH=/opt/aggregator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGGREGATOR_CONFIG=/config/config.toml
RUN mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# The config is mounted read-only at /config/config.toml, with [storage] path = "/data/aggregator.json".
# The token comes from TELEGRAM_BOT_TOKEN or a secret file named in [telegram] token_file.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aggregator"]
CMD ["run"]
