#!/usr/bin/env bash
# The test suite, as the README gives it: installs what the tests start (Debian's
# redis-server, for the fleet tests, which run it on a free loopback port), runs
# `cargo test --all-features` (extra arguments go to it), then checks the admin page in headless
# Chromium (scripts/page_test.sh, which installs Chromium when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/need.sh redis-server redis-server

cargo test --all-features "$@"

# The admin page in headless Chromium (installed when missing).
scripts/page_test.sh
