#!/usr/bin/env bash
# Debian packages some tests drive for real: promtool (prometheus) checks the
# alert rules and /metrics output, Chromium renders the dashboard. Installs the
# missing ones when run as root with apt-get; otherwise says what to install.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "the tests need these Debian packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
  exit 1
fi
