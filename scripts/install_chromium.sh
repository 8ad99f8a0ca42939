#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the calibration-certificate rendering test
# (tests/test_certificate.py); exits non-zero when it cannot be installed or does not run.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi
chromium --version
