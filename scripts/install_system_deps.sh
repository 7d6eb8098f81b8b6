#!/usr/bin/env bash
# Debian packages this project needs from the system, installed only when missing (sudo when not root):
#   python3-venv  for `python3 -m venv` (Debian's python3 ships without it)
#   chromium, fonts-noto-cjk   for the browser tests and readable Chinese in their screenshots
#                 (skipped with --app: the app itself needs no browser)
set -euo pipefail
need=()
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" != "--app" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  fc-list 2>/dev/null | grep -qi "noto.*cjk" || need+=(fonts-noto-cjk)
fi
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
