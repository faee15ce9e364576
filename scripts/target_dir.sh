#!/usr/bin/env bash
# Prints the directory cargo builds into: `target/`, or wherever CARGO_TARGET_DIR or a cargo
# config puts it, as `cargo metadata` reports it. The scripts find the binaries they built there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
