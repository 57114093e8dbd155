#!/usr/bin/env bash
# Install Debian's Chromium for the teach station's browser tests (test/teach/test_browser.py), which
# Playwright drives through executable_path=/usr/bin/chromium (its own browser download needs the
# internet). Idempotent: does nothing when chromium is already there. Needs root (CI runs it as root).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
  echo "install_browser: chromium already installed: $(chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_browser: run as root (or: sudo $0) to apt-get install chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends chromium
echo "install_browser: installed $(chromium --version 2>/dev/null || echo chromium)"
