#!/usr/bin/env bash
# PostgreSQL for the knowledge-base tests (tests/pg_server.py starts a throwaway server from its binaries in
# /usr/lib/postgresql/*/bin as a non-root user). Debian/Ubuntu, root or sudo. Exits non-zero when the server
# binaries do not work afterwards; .ci/run then lets the PostgreSQL tests skip with the reason.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null; then
    echo "install_postgres: no apt-get here; install PostgreSQL (initdb, pg_ctl) with your package manager" >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
initdb="$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)"
"$initdb" --version
