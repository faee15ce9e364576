#!/usr/bin/env bash
# The test suite, as the README gives it: installs what the tests start (Debian's
# redis-server, for the fleet tests, which run it on a free loopback port), then runs
# `cargo test --all-features`. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/need.sh redis-server redis-server

cargo test --all-features "$@"
