#!/usr/bin/env bash
# A C compiler and Python's headers, for the one compiled module (stream/_cells.pyx, built by `pip install`).
# Installs only what is missing, from Debian's packages; needs root then (CI runs `make test` as root).
# Usage: tools/compiler/install.sh PYTHON
set -euo pipefail
PYTHON="${1:-python3.11}"
headers="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
[ -f "$headers" ] || missing+=("$(basename "$PYTHON")-dev")
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "tools/compiler/install.sh: ${missing[*]} missing (a C compiler and $headers); run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v cc >/dev/null && [ -f "$headers" ]
