#!/usr/bin/env bash
# The test suite, as the README gives it: installs what the tests start (Debian's
# redis-server, and redis-tools for redis-cli, which forms a Redis Cluster, and openssl, which
# makes a TLS test's certificates; the fleet tests run them on free loopback ports), runs the
# checks of scripts/checks.sh (every feature builds on its own, `cargo publish --dry-run`, the
# docs as docs.rs builds them, all without a warning), runs `cargo test --all-features` (extra
# arguments go to it), then checks the admin page in headless Chromium (scripts/page_test.sh,
# which installs Chromium when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/need.sh redis-server redis-server
scripts/need.sh redis-cli redis-tools
scripts/need.sh openssl openssl

scripts/checks.sh

cargo test --all-features "$@"

# The admin page in headless Chromium (installed when missing).
scripts/page_test.sh
