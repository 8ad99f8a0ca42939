#!/usr/bin/env bash
# Create .venv and install metaedge with its training and test extras.
# The CPU build of torch is installed first and pinned, so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${METAEDGE_TORCH:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# CPU wheel first; set METAEDGE_TORCH to another spec (or a CUDA index) on GPU machines.
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[train,runtime,dev,mujoco]" "$TORCH_SPEC"
# the C runtime's tests need cmake >= 3.20 (the wheel build fetches its own)
if ! command -v cmake >/dev/null || ! cmake --version | awk 'NR==1 {split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 20))}'; then
  .venv/bin/python -m pip install -q "cmake>=3.20"
fi
echo "metaedge installed in .venv ($(.venv/bin/metaedge --version))"
