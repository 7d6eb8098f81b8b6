#!/usr/bin/env bash
# Debian packages the tests need: python3-venv (for `python3 -m venv`) and Chromium (browser tests).
# Installs only what is missing; uses sudo when not root.
set -euo pipefail
need=()
python3 -m venv --help >/dev/null 2>&1 && python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
