#!/usr/bin/env bash
# The cross compilers, emulators and fuzzer the C runtime's tests use (Debian/Ubuntu, root or sudo), each group
# installed on its own so one missing package does not take the others down, then proved to work by
# tests/toolchains.py (compile, link and run a trivial program). Exits non-zero when a group fails; .ci/run then
# lets that group's tests skip with the probe's reason, and requires the others to pass. See docs/firmware.md.
#   aarch64    build + ctest under qemu-aarch64      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user file
#   cortex-m4  example under qemu-system-arm         gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
#   fuzz       libFuzzer target (ASan + UBSan)       clang libclang-rt-N-dev (N: the installed clang's major)
# --no-install-recommends keeps the install small, so every package a probe needs is named here explicitly
# (gcc-aarch64-linux-gnu only recommends the arm64 C library it cannot link without).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v apt-get >/dev/null; then
  echo "install_toolchains: no apt-get here; install the packages listed in $0 with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
apt_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }

$SUDO apt-get update -qq
declare -A groups=(
  [aarch64]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user file"
  [cortex-m4]="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
  [fuzz]="clang"
)
status=0
for name in aarch64 cortex-m4 fuzz; do
  # shellcheck disable=SC2086
  if ! apt_install ${groups[$name]}; then
    echo "install_toolchains: could not install ${groups[$name]} ($name)" >&2
    status=1
  fi
done
# libFuzzer's runtime ships in a separate package named after clang's major version
if command -v clang >/dev/null; then
  rt="libclang-rt-$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p')-dev"
  apt_install "$rt" || { echo "install_toolchains: could not install $rt (fuzz)" >&2; status=1; }
fi
# prove each toolchain works: a tool on the PATH that cannot link or run is worse than none
python3 tests/toolchains.py host aarch64 cortex-m4 fuzz || status=1
exit $status
