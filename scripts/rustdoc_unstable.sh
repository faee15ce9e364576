#!/usr/bin/env bash
# rustdoc, with the unstable features a stable toolchain keeps behind RUSTC_BOOTSTRAP=1: the
# docs.rs build's `#![feature(doc_cfg)]` (`--cfg docsrs`, scripts/checks.sh) and the JSON output
# that tests/public_api.rs reads. Cargo runs it in rustdoc's place:
#
#   RUSTDOC=scripts/rustdoc_unstable.sh cargo doc ...
#
# RUSTC_BOOTSTRAP=1 is set here, for rustdoc alone, and not on the cargo command: there it would
# also reach the build scripts of proc-macro2 (and anyhow, thiserror), which then turn on
# nightly-only code, so that proc-macro2, syn and every crate built with a proc macro would be
# rebuilt, and rebuilt again by the next ordinary cargo command.
set -euo pipefail
RUSTC_BOOTSTRAP=1 exec rustdoc "$@"
