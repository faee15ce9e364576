#!/usr/bin/env bash
# The checks the README's test command (scripts/test.sh) runs besides the test suite, each
# failing on any warning:
#
# - every feature builds on its own, and with none: `cargo check --no-default-features --lib
#   --features F` for each F in Cargo.toml's [features];
# - the package publishes: `cargo publish --dry-run` packages what `include` names (the crate's
#   path-only dev-dependency on itself is left out of the package) and builds the package;
# - the docs build as docs.rs builds them: all features, `--cfg docsrs`, so every `doc(cfg)`
#   note is checked too.
#
# Each step prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust warnings are errors here, whatever the caller's RUSTFLAGS hold besides.
deny_warnings=${RUSTFLAGS:-}
case " $deny_warnings " in
    *" -D warnings "*) ;;
    *) deny_warnings="${deny_warnings:+$deny_warnings }-D warnings" ;;
esac

step() {
    local started=$SECONDS
    printf '\n==> %s\n' "$1"
    shift
    "$@"
    printf '    (%ds)\n' $((SECONDS - started))
}

features() {
    local features
    features=$(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
package = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "tower-connlimit")
print(" ".join(sorted(package["features"])))')
    for feature in "" $features; do
        echo "    --no-default-features ${feature:+--features $feature}"
        RUSTFLAGS=$deny_warnings cargo check --quiet --no-default-features --lib \
            ${feature:+--features "$feature"} ||
            { echo "feature ${feature:-(none)} does not build on its own" >&2; return 1; }
    done
}

publish() {
    local log unexpected
    log=$(mktemp)
    # --allow-dirty: the working tree as it is (a clean clone's is its commit).
    if ! RUSTFLAGS=$deny_warnings cargo publish --dry-run --allow-dirty --color never \
        >"$log" 2>&1; then
        cat "$log"
        rm -f "$log"
        return 1
    fi
    # The tests and benchmarks are left out of the package on purpose (`include`); cargo says
    # so for each. Any other warning fails the step.
    unexpected=$(grep '^warning' "$log" |
        grep -Ev '^warning: ignoring (test|benchmark) `[^`]+` as `(tests|benches)/[^`]+` is not included in the published package$' |
        grep -v '^warning: aborting upload due to dry run$' || true)
    grep -E '^ *Packaged ' "$log" || true
    if [ -n "$unexpected" ]; then
        cat "$log"
        echo "cargo publish --dry-run warned:" >&2
        echo "$unexpected" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

docs() {
    # `--cfg docsrs` turns on `#![feature(doc_cfg)]` (src/lib.rs), which a stable toolchain
    # allows with RUSTC_BOOTSTRAP=1 only: scripts/rustdoc_unstable.sh sets it, for rustdoc
    # alone, not for the dependencies' builds (see the script).
    RUSTDOC="$PWD/scripts/rustdoc_unstable.sh" RUSTDOCFLAGS="--cfg docsrs -D warnings" \
        cargo doc --quiet --no-deps --all-features
}

total=$SECONDS
step "every feature on its own (cargo check --no-default-features --lib --features F)" features
step "cargo publish --dry-run" publish
step "cargo doc --all-features, as docs.rs builds it (--cfg docsrs)" docs
printf '\n==> checks passed (%ds)\n' $((SECONDS - total))
