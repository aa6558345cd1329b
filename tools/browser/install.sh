#!/usr/bin/env bash
# Headless Chromium and its WebDriver from Debian's packages, for the browser test (tests/integration/test_collector.py).
# Installs only when `chromium` or `chromedriver` is missing; needs root (CI runs `make test` as root).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "tools/browser/install.sh: chromium and chromedriver are missing; run as root, or: sudo apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
