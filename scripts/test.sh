#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole test suite (lint + pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
# C runtime: configure, build and run the ctest suite with the host preset (runtime/c, docs/firmware.md)
if command -v cmake >/dev/null && command -v ctest >/dev/null; then
  cmake --preset host-release >/dev/null && cmake --build --preset host-release -j2 >/dev/null
  ctest --preset host-release --output-on-failure
fi
