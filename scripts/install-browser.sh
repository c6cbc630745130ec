#!/usr/bin/env bash
# Installs (once per machine) the headless browser of the UI's browser test and prints the path of
# its WebDriver.
#
#   scripts/install-browser.sh      install Debian's chromium and chromium-driver if missing
#
# Both come from the distribution's packages (no browser build is downloaded by a test tool), so
# the browser and its driver always match. Needs apt-get and root (as CI runs); on a machine
# without them the script fails with the reason and the browser test is skipped, saying why.
# Progress goes to stderr; stdout carries only the driver's path.
set -euo pipefail

die() { echo "install-browser: $*" >&2; exit 1; }

driver() { command -v chromedriver || true; }

if [ -z "$(driver)" ] || ! command -v chromium >/dev/null; then
  command -v apt-get >/dev/null || die "no apt-get here: install chromium and its chromedriver"
  [ "$(id -u)" = 0 ] || die "installing chromium needs root (apt-get): run as root or install it"
  echo "install-browser: installing chromium and chromium-driver (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # One install at a time per machine (apt's own lock fails fast rather than waiting).
  exec 9>/tmp/schedsearch-install-browser.lock
  flock 9
  if [ -z "$(driver)" ] || ! command -v chromium >/dev/null; then
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2 \
      || die "apt-get install chromium chromium-driver failed"
  fi
fi
[ -n "$(driver)" ] || die "chromium-driver is installed but chromedriver is not on PATH"
driver
