#!/usr/bin/env bash
# Set up crossfade on a fresh Debian/Ubuntu machine: system packages (only what is missing),
# a virtualenv in .venv, and crossfade with its test dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need=()
# Debezium runs in-process on a JVM (Java 17+)
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
if [ -z "${java_major}" ] || [ "${java_major}" -lt 17 ]; then need+=(openjdk-17-jre-headless); fi
# PostgreSQL server binaries for the embedded databases (without them: the pgserver wheel's)
if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ]; then need+=(postgresql); fi
# promtool and a Prometheus server for the alert-rule and dashboard tests
if ! command -v promtool >/dev/null; then need+=(prometheus); fi
# headless Chromium and Node.js for the console's browser test
if ! command -v chromium >/dev/null; then need+=(chromium); fi
if ! command -v node >/dev/null; then need+=(nodejs npm); fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
# Every distribution pinned with its sha256 (requirements/dev.lock, refreshed by
# scripts/lock_requirements.py): a file that is not the one locked fails the install. Then
# crossfade itself, editable, with the locked setuptools and nothing fetched.
.venv/bin/python -m pip install -q --require-hashes -r requirements/dev.lock
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
# capture's JVM maps Debezium's classes from an archive (docs/benchmarks.md); without it, it
# starts as before
.venv/bin/python -m crossfade.capture.jvm_archive || echo "setup: capture's JVM starts without a class-data archive"
if [ -f tests/console/package.json ] && command -v npm >/dev/null; then
  (cd tests/console && npm install --silent --no-audit --no-fund >/dev/null)
fi
echo "setup: done (.venv/bin/crossfade)"
