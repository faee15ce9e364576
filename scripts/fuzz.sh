#!/usr/bin/env bash
# Fuzzes the config loaders and the PROXY header parser with cargo fuzz (libFuzzer), each for a
# bounded time, and prints what each run did.
#
#   scripts/fuzz.sh                          # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh         # 5 minutes each
#   scripts/fuzz.sh proxy_header             # one target
#
# Targets (fuzz/fuzz_targets/):
#   config_toml   bytes -> Config::from_toml_str: never panics; a config it accepts validates,
#                 builds a Limiter, is accepted by set_config, and admits and releases
#                 connections and requests without leaking a count.
#   config_json   the same for Config::from_json_str.
#   proxy_header  bytes -> the listener's PROXY v1/v2 reader and parser: never panics, never
#                 reads past the header, and the address it returns is the one written in it.
#   client_ip_header  bytes -> Forwarded / X-Forwarded-For / X-Real-IP lines and a hop count ->
#                 the request layer's client-address reader: never panics, and a line added
#                 left of the chosen entry never changes an address it found.
#
# Needs a nightly toolchain (libFuzzer's instrumentation; rustup's `nightly`) and installs
# cargo-fuzz from crates.io when it is missing. Each target starts from the seeds tracked in
# fuzz/corpus/<target>/ and grows its corpus in fuzz/work/corpus/<target>/ (ignored by git), so
# later runs go on where earlier ones stopped; its log is fuzz/work/logs/<target>.log.
#
# Prints per target: seconds, executions, executions per second, corpus entries, and any crash
# (fuzz/artifacts/<target>/) with its input in hex and the command that minimises it. Exits 1
# if any target crashed (a panic, a timeout over 10 s for one input, or more than 2 GiB of
# memory), 0 otherwise.
set -euo pipefail

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
ALL_TARGETS=(config_toml config_json proxy_header client_ip_header)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

cd "$(dirname "$0")/../fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "a nightly toolchain is needed: rustup toolchain install nightly --profile minimal" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

echo "building the fuzz targets (nightly, release with debug assertions)"
cargo +nightly fuzz build

mkdir -p work/logs
SUMMARY=()
CRASHED=0
for target in "${TARGETS[@]}"; do
    case "$target" in
        config_toml | config_json) dict=dict/config.dict ;;
        proxy_header) dict=dict/proxy.dict ;;
        client_ip_header) dict=dict/headers.dict ;;
        *) echo "unknown target $target (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
    mkdir -p "work/corpus/$target"
    log="work/logs/$target.log"
    stamp="work/logs/$target.started"
    touch "$stamp"
    echo
    echo "==> $target: ${FUZZ_SECONDS}s"
    status=0
    cargo +nightly fuzz run "$target" "work/corpus/$target" "corpus/$target" -- \
        -dict="$dict" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(awk '/^stat::number_of_executed_units/ {print $NF}' "$log" | tail -n 1)
    rate=$(awk '/^stat::average_exec_per_sec/ {print $NF}' "$log" | tail -n 1)
    secs=$(awk '/^Done [0-9]+ runs in/ {print $5}' "$log" | tail -n 1)
    corpus=$(find "work/corpus/$target" -type f | wc -l)
    new_artifacts=$(find "artifacts/$target" -type f -newer "$stamp" 2>/dev/null || true)
    crashes=$(printf '%s' "$new_artifacts" | grep -c . || true)
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        CRASHED=1
        if [ "$crashes" -gt 0 ]; then
            echo "!! $target crashed (exit $status):"
        else
            echo "!! $target failed (exit $status) without a crash input; its log: fuzz/$log"
        fi
        grep -E "panicked at|^thread '|ERROR: libFuzzer|SUMMARY:" "$log" | head -n 6 || true
        grep -A 2 "panicked at" "$log" | sed -n 2,3p || true
        for artifact in $new_artifacts; do
            echo "   input fuzz/$artifact ($(wc -c <"$artifact") bytes), hex:"
            od -An -v -tx1 "$artifact" | tr -d ' \n' | fold -w 64 | head -n 8 | sed 's/^/     /'
            echo
            echo "   minimise: (cd fuzz && cargo +nightly fuzz tmin $target $artifact)"
        done
    fi
    SUMMARY+=("$(printf '%-13s %6ss %12s execs %9s exec/s %7s corpus %3s crashes' \
        "$target" "${secs:-?}" "${execs:-?}" "${rate:-?}" "$corpus" "$crashes")")
done

echo
echo "summary (FUZZ_SECONDS=$FUZZ_SECONDS):"
printf '  %s\n' "${SUMMARY[@]}"
exit "$CRASHED"
