#!/usr/bin/env bash
# Installs a Debian package when its command is missing: `scripts/need.sh COMMAND PACKAGE`.
# The scripts that need a system tool call it, so a fresh machine needs no set-up step.
set -euo pipefail
command=$1 package=$2
if ! command -v "$command" >/dev/null; then
    echo "$command is missing: installing $package from Debian's packages" >&2
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "$package" >/dev/null
fi
