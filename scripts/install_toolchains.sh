#!/usr/bin/env bash
# Optional: the cross compilers, emulators and fuzzer the C runtime's tests use when present (Debian/Ubuntu, root).
# Without them those tests skip with the reason; nothing else needs them. See docs/firmware.md.
#   aarch64 build + ctest under qemu-aarch64     gcc-aarch64-linux-gnu qemu-user
#   Cortex-M4 example under qemu-system-arm      gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
#   libFuzzer target (ASan + UBSan)              clang libclang-rt-14-dev (or the distribution's current one)
set -euo pipefail
packages=(gcc-aarch64-linux-gnu qemu-user gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang)
if ! command -v apt-get >/dev/null; then
  echo "install_toolchains: no apt-get here; install ${packages[*]} with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# libFuzzer's runtime ships in a separate package on Debian
rt="libclang-rt-$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p')-dev"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$rt" >/dev/null || true
echo "install_toolchains: installed ${packages[*]} $rt"
