#!/usr/bin/env bash
# Soak test: a million connections churned through the `server` example with the limiter at
# the listener, then a check that the server let go of every one of them.
#
#   scripts/soak.sh                              # 1,000,000 connections, up to 10,000 open
#   CONNECTIONS=100000 HELD=2000 scripts/soak.sh # a shorter run
#
# What it does:
#   1. raises the open-file limit (to WANT_FDS, or the hard limit when it may not go higher;
#      it needs HELD + 1024 for each of the two processes);
#   2. builds the `server` and `soak_client` examples in release;
#   3. starts the server: `--mode listener --max-per-client MAX_PER_CLIENT --reject REJECT
#      --handshake-timeout HANDSHAKE_TIMEOUT --idle-timeout IDLE_TIMEOUT`, logging at warn (the
#      limiter's refusal summaries). The deadlines matter: when the accept queue overflows,
#      loopback TCP leaves a few server sockets ESTABLISHED whose client is gone (5 to 32 per
#      million connections here; the client's close never reached them). The limiter rightly
#      counts them, since the server holds them, and without a deadline they stay forever;
#      `HANDSHAKE_TIMEOUT=0s IDLE_TIMEOUT=0s` shows it (the drain check then fails);
#   4. runs examples/soak_client.rs against it: HELD tasks, each connecting again and again from
#      its own loopback source among SOURCES (127.0.0.2, 127.0.0.3, ...), bound before connect;
#      GREEDY of the sources get a quarter of the tasks (250 each by default, far over the
#      limit: these are refused), the others about 40 each (under it). Each connection is a
#      connect-and-close (half with a reset), an HTTP `GET /`, or an idle hold of HOLD_MS.
#      A warm-up comes first: a tenth of the connections or 10 per task, whichever is more;
#   5. samples the server's RSS (VmRSS) after the warm-up has drained (start), during the churn
#      (peak) and after it has drained (end), and reads /stats for refusals and, at the end,
#      for 0 open connections and 0 tracked clients (less the /stats request itself), waiting
#      up to DRAIN_TIMEOUT seconds;
#   6. prints a summary: connections done, refused (by the server's count, and as the clients
#      saw it), elapsed, connections/s, peak held, RSS start/peak/end, final open/tracked.
#
# Fails (exits non-zero: 1 for a failed check, 124 when the client overran, 2 for bad settings) when a connection could not be made by SOAK_TIMEOUT, more than 1 % of the
# connections failed, the server did not drain, its end RSS is more than RSS_SLACK_MIB MiB and
# RSS_SLACK_PERCENT % above its start, or the server died. Loopback only; stops by itself.
#
# Settings (environment): CONNECTIONS (1000000), HELD (10000), SOURCES (200), GREEDY (10),
# MAX_PER_CLIENT (64), REJECT (close|reset|http, default close), HOLD_MS (500-4000, milliseconds),
# HANDSHAKE_TIMEOUT (10s: more than the longest hold), IDLE_TIMEOUT (10s), durations as `500ms`, `10s`, SOAK_TIMEOUT (1800 s, for the
# client's whole run), DRAIN_TIMEOUT (30 s), RSS_SLACK_MIB (8), RSS_SLACK_PERCENT (10),
# PORT (38081), WANT_FDS (65536).
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-1000000}
HELD=${HELD:-10000}
SOURCES=${SOURCES:-200}
GREEDY=${GREEDY:-10}
MAX_PER_CLIENT=${MAX_PER_CLIENT:-64}
REJECT=${REJECT:-close}
HANDSHAKE_TIMEOUT=${HANDSHAKE_TIMEOUT:-10s}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-10s}
HOLD_MS=${HOLD_MS:-500-4000}
SOAK_TIMEOUT=${SOAK_TIMEOUT:-1800}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30}
RSS_SLACK_MIB=${RSS_SLACK_MIB:-8}
RSS_SLACK_PERCENT=${RSS_SLACK_PERCENT:-10}
PORT=${PORT:-38081}
WANT_FDS=${WANT_FDS:-65536}

cd "$(dirname "$0")/.."

# 1. File descriptors: both processes inherit this shell's limit. Raising the hard limit needs
#    CAP_SYS_RESOURCE, which a container may not grant even to root; then take the hard limit.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$WANT_FDS" ]; then
    ulimit -Hn "$WANT_FDS" 2>/dev/null || echo "note: the hard open-file limit stays $hard (raising it is not permitted here)"
fi
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge "$WANT_FDS" ]; then
    ulimit -Sn "$WANT_FDS"
else
    ulimit -Sn "$hard"
fi
fds=$(ulimit -Sn)
if [ "$fds" -lt $((HELD + 1024)) ]; then
    echo "the open-file limit is $fds, too low for HELD=$HELD (needs $((HELD + 1024))); lower HELD" >&2
    exit 1
fi

# 2. Build.
cargo build --release --quiet --example server --example soak_client
TARGET_DIR=$(scripts/target_dir.sh)
SERVER="$TARGET_DIR/release/examples/server"
CLIENT="$TARGET_DIR/release/examples/soak_client"

# 3. The server.
LOG=$(mktemp)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -f "$LOG"
}
trap cleanup EXIT
NO_COLOR=1 RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$PORT" --mode listener \
    --max-per-client "$MAX_PER_CLIENT" --reject "$REJECT" \
    --handshake-timeout "$HANDSHAKE_TIMEOUT" --idle-timeout "$IDLE_TIMEOUT" >"$LOG" 2>&1 &
SERVER_PID=$!
ready=
for _ in $(seq 1 100); do # at most 10 s
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then ready=1; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
# Something else may answer on PORT while our server failed to bind it.
if [ -n "$ready" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    ready=
fi
if [ -z "$ready" ]; then
    echo "the server did not start (is PORT=$PORT taken?):" >&2
    cat "$LOG" >&2
    exit 1
fi

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg); open files $fds; ephemeral ports $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range); tcp_tw_reuse $(cat /proc/sys/net/ipv4/tcp_tw_reuse)"
echo "server: pid $SERVER_PID, 127.0.0.1:$PORT, --mode listener --max-per-client $MAX_PER_CLIENT --reject $REJECT --handshake-timeout $HANDSHAKE_TIMEOUT --idle-timeout $IDLE_TIMEOUT"

# 4-6. The churn, the samples, the checks and the summary.
status=0
timeout --foreground --signal=INT "$((SOAK_TIMEOUT + 2 * DRAIN_TIMEOUT + 120))" "$CLIENT" --addr "127.0.0.1:$PORT" \
    --server-pid "$SERVER_PID" --connections "$CONNECTIONS" --held "$HELD" \
    --sources "$SOURCES" --greedy "$GREEDY" --hold-ms "$HOLD_MS" --timeout "$SOAK_TIMEOUT" \
    --drain-timeout "$DRAIN_TIMEOUT" --rss-slack-mib "$RSS_SLACK_MIB" \
    --rss-slack-percent "$RSS_SLACK_PERCENT" || status=$?

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL: the server died; its log:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
fi
echo
echo "server log (warn and above; refusals are summarised every 10 s): $(wc -l <"$LOG") lines, the last:"
tail -n 3 "$LOG" | cut -c1-300
exit "$status"
