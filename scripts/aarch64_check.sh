#!/usr/bin/env bash
# The torch-free runtime on aarch64 (a Debian arm64 root under qemu user-mode emulation), compared with this machine.
#
#   bash scripts/aarch64_check.sh                 # setup (cached) + a small sinusoid bundle + run both sides + compare
#   bash scripts/aarch64_check.sh setup           # only make / refresh the arm64 root (idempotent)
#   bash scripts/aarch64_check.sh run BUNDLE INPUTS.npz OUT.json   # the probe inside the arm64 root
#
# Needs root (debootstrap), debootstrap and qemu-user-static (`apt-get install -y debootstrap qemu-user-static`),
# network access to a Debian mirror and PyPI once. The root is cached under $METAEDGE_ARM64_ROOT
# (default ~/.cache/metaedge/arm64-root); delete it to start over.
#
# How it runs aarch64 code: the root is made with `debootstrap --foreign` (download + unpack on this machine). Its
# second stage runs inside a chroot when the kernel has a binfmt_misc handler for aarch64 (qemu-user-static
# registers one); otherwise the downloaded packages are unpacked with `dpkg-deb -x`, which is enough for python3.
# The probe then runs as `chroot ROOT /usr/bin/qemu-aarch64-static /usr/bin/python3 ...`: the emulator is named
# explicitly, so no binfmt_misc handler is needed, and inside the chroot the guest sees no host /proc/cpuinfo or
# /sys (onnxruntime's CPU probe crashes on the host's x86 /proc/cpuinfo when run as `qemu-aarch64-static -L ROOT`
# instead; inside the chroot it only warns that it cannot read them). numpy and onnxruntime are the PyPI aarch64
# wheels, installed from this machine with pip's --platform/--target options (no pip needed inside the root).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOT=${METAEDGE_ARM64_ROOT:-$HOME/.cache/metaedge/arm64-root}
SUITE=${METAEDGE_ARM64_SUITE:-bookworm}   # Debian 12: python 3.11, the same minor version as the wheels below
MIRROR=${METAEDGE_ARM64_MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-.venv/bin/python}
QEMU=$(command -v qemu-aarch64-static || true)
CHROOT=$(command -v chroot || echo /usr/sbin/chroot)
SITE=opt/metaedge/site        # numpy + onnxruntime (aarch64 wheels)
PKG=opt/metaedge/pkg          # the metaedge runtime + devices packages, copied from this checkout

need() { command -v "$1" >/dev/null || { echo "aarch64_check: $1 not found ($2)" >&2; exit 2; }; }

arm_python() {  # run the root's python3 under user-mode emulation, inside a chroot of the root
  env -i PATH=/usr/bin:/bin PYTHONPATH="/$PKG:/$SITE" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
    "$CHROOT" "$ROOT" /usr/bin/qemu-aarch64-static /usr/bin/python3 "$@"
}

copy_package() {  # the runtime needs only metaedge/__init__.py, runtime/ and devices/ (never the sdk, export or CLI)
  rm -rf "${ROOT:?}/$PKG"
  mkdir -p "$ROOT/$PKG/metaedge"
  cp metaedge/__init__.py "$ROOT/$PKG/metaedge/"
  for part in runtime devices; do
    mkdir -p "$ROOT/$PKG/metaedge/$part"
    tar -C "$part" --exclude=__pycache__ --exclude=./c -cf - . | tar -C "$ROOT/$PKG/metaedge/$part" -xf -
  done
  cp scripts/runtime_probe.py "$ROOT/$PKG/"
}

setup() {
  need debootstrap "apt-get install -y debootstrap"
  need qemu-aarch64-static "apt-get install -y qemu-user-static"
  if [ ! -f "$ROOT/.debootstrap-done" ]; then
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3-minimal,libpython3.11-stdlib \
      "$SUITE" "$ROOT" "$MIRROR"
    if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
      echo "aarch64_check: debootstrap second stage in a chroot (binfmt_misc handler present)"
      chroot "$ROOT" /debootstrap/debootstrap --second-stage
    else
      echo "aarch64_check: no binfmt_misc handler for aarch64; unpacking the downloaded packages with dpkg-deb -x"
      for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
    fi
    touch "$ROOT/.debootstrap-done"
  fi
  if ! cmp -s "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"; then
    cp "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"
  fi
  # the same numpy and onnxruntime versions as this machine's runtime, so the comparison is about the architecture
  local versions
  versions=$("$PY" -c 'import numpy, onnxruntime; print(f"numpy=={numpy.__version__} onnxruntime=={onnxruntime.__version__}")')
  if [ "$(cat "$ROOT/.wheels" 2>/dev/null)" != "$versions" ]; then
    rm -rf "${ROOT:?}/$SITE"
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --no-compile --target "$ROOT/$SITE" --python-version 3.11 --implementation cp \
      --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
      --only-binary=:all: $versions
    echo "$versions" > "$ROOT/.wheels"
  fi
  copy_package
  arm_python -c 'import platform, numpy, onnxruntime; print("aarch64_check: root ready:", platform.machine(),
    "python", platform.python_version(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)'
}

run() {  # run BUNDLE INPUTS OUT (host paths): copied into the root, probed there, the JSON copied back
  [ -f "$ROOT/.wheels" ] || { echo "aarch64_check: no arm64 root at $ROOT; run: $0 setup" >&2; exit 2; }
  copy_package  # this checkout's runtime, not the one the root was set up with
  local box
  box=$(mktemp -d "$ROOT/tmp/probe.XXXXXX")
  cp -r "$1" "$box/bundle"
  cp "$2" "$box/inputs.npz"
  arm_python "/$PKG/runtime_probe.py" "/tmp/$(basename "$box")/bundle" "/tmp/$(basename "$box")/inputs.npz" \
    "/tmp/$(basename "$box")/out.json" 2> >(grep -v -e "cpuinfo" -e "^Error in cpuinfo" >&2)
  cp "$box/out.json" "$3"
  rm -rf "$box"
}

case "${1:-all}" in
  setup) setup ;;
  run) shift; run "$@" ;;
  all)
    setup
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PY" - "$work" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from metaedge.export.bundle import export_bundle
from metaedge.sdk.config import TrainConfig
from metaedge.sdk.train import train
work = Path(sys.argv[1])
run_dir = train(TrainConfig(family="sinusoid", algo="maml", shots=10, queries=10, meta_batch=4, iterations=20,
                            inner_steps=5), work / "run", progress=False)
export_bundle(run_dir, work / "bundle")
rng = np.random.default_rng(0)
np.savez(work / "inputs.npz", xs=rng.uniform(-5, 5, (10, 1)).astype(np.float32),
         ys=rng.uniform(-3, 3, (10, 1)).astype(np.float32), xq=np.linspace(-5, 5, 50, dtype=np.float32)[:, None])
EOF
    PYTHONPATH=. "$PY" scripts/runtime_probe.py "$work/bundle" "$work/inputs.npz" "$work/x86_64.json"
    run "$work/bundle" "$work/inputs.npz" "$work/aarch64.json"
    "$PY" scripts/runtime_probe.py --compare "$work/x86_64.json" "$work/aarch64.json"
    ;;
  *) echo "usage: $0 [setup | run BUNDLE INPUTS.npz OUT.json]" >&2; exit 2 ;;
esac
