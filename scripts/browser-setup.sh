#!/usr/bin/env bash
# What the dashboard's browser tests need: Debian's Chromium and ChromeDriver
# (/usr/bin/chromium, /usr/bin/chromedriver). Installs them when missing (as root, with
# apt-get); the tests start ChromeDriver themselves.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "browser-setup: Chromium and ChromeDriver are missing; install them with: sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
echo "browser-setup: installing chromium and chromium-driver"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
chromedriver --version
