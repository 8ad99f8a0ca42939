#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole test suite (lint + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q --durations=10 "$@"
# C runtime: configure, build and run the ctest suite with the host preset (runtime/c, docs/firmware.md);
# setup.sh put a cmake into .venv where the system has none
export PATH="$PWD/.venv/bin:$PATH"
cmake --preset host-release >/dev/null && cmake --build --preset host-release -j2 >/dev/null
ctest --preset host-release --output-on-failure
