#!/usr/bin/env bash
# End-to-end cost of the limiter: the `server` example with and without it, driven by wrk.
#
#   scripts/e2e.sh                      # 10 s per run, 2 rounds
#   DURATION=5s ROUNDS=9 scripts/e2e.sh  # more rounds, a narrower interval
#
# Two shapes, each run alternately without the limiter (`--mode off`) and with it (`--mode
# listener`: the listener counts connections, the request layer counts requests), at identical
# settings otherwise, so that drift on a shared machine hits both alike:
#   keep-alive  64 connections, each sending request after request;
#   churn       64 connections at a time, a new one for every request (`Connection: close`).
# The limits are set high enough that nothing is refused: this measures the bookkeeping.
# Prints requests/s and p99 latency per run, then the medians and the with/without ratios, and
# the mean of the rounds' paired ratios with its 95% confidence interval.
# Installs wrk from Debian's packages when it is missing. Loopback only.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-38080}

cd "$(dirname "$0")/.."

scripts/need.sh wrk wrk

cargo build --release --quiet --example server
SERVER="$(scripts/target_dir.sh)/release/examples/server"
URL="http://127.0.0.1:$PORT/"
RESULTS=$(mktemp)
SERVER_PID=
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -f "$RESULTS"' EXIT

start_server() { # $1: mode
    RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$PORT" --mode "$1" \
        --max-per-client 100000 --max-requests 0 >/dev/null 2>&1 &
    SERVER_PID=$!
    # Ready when it answers: at most 10 s. It must be our server answering, not another
    # program on PORT.
    for _ in $(seq 1 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server exited (is PORT=$PORT taken?)" >&2
            exit 1
        fi
        curl -fs --max-time 1 -o /dev/null "$URL" && return 0
        sleep 0.1
    done
    echo "the server did not start" >&2
    exit 1
}

stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# wrk's p99 in milliseconds, from its --latency table.
p99_ms() {
    awk '$1 == "99%" {
        v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
        if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000;
        printf "%.3f", v }'
}

run() { # $1: shape, $2: mode
    local header=()
    [ "$1" = churn ] && header=(-H "Connection: close")
    start_server "$2"
    local out
    out=$(wrk -t "$THREADS" -c "$CONNECTIONS" -d "$DURATION" --latency "${header[@]}" "$URL")
    stop_server
    local rps p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(p99_ms <<<"$out")
    errors=$(awk '/Socket errors|Non-2xx/ {print}' <<<"$out" | tr '\n' ' ')
    printf '%-10s %-9s %12s req/s  p99 %8s ms  %s\n' "$1" "$2" "$rps" "$p99" "$errors"
    echo "$1 $2 $rps $p99" >>"$RESULTS"
}

echo "wrk -t $THREADS -c $CONNECTIONS -d $DURATION, $ROUNDS rounds, $(nproc) CPUs"
for round in $(seq 1 "$ROUNDS"); do
    for shape in keep-alive churn; do
        run "$shape" off
        run "$shape" listener
    done
done

echo
echo "medians (with limiter / without):"
for shape in keep-alive churn; do
    median() { # $1: mode, $2: column
        awk -v s="$shape" -v m="$1" -v c="$2" '$1 == s && $2 == m {print $c}' "$RESULTS" |
            sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
    }
    off_rps=$(median off 3); on_rps=$(median listener 3)
    off_p99=$(median off 4); on_p99=$(median listener 4)
    awk -v s="$shape" -v a="$off_rps" -v b="$on_rps" -v c="$off_p99" -v d="$on_p99" 'BEGIN {
        printf "%-10s req/s %10.0f -> %10.0f (%.3f)   p99 %7.3f -> %7.3f ms (%.3f)\n", s, a, b, b / a, c, d, d / c }'
done

# Each round runs the two modes back to back, so each round's ratio (with / without) is one
# paired sample: their mean, with a 95% confidence interval (Student's t), says how sure the
# figure is; with fewer than two rounds there is no interval.
echo
echo "paired ratios, requests/s with the limiter / without, per round:"
for shape in keep-alive churn; do
    awk -v s="$shape" '
        $1 == s && $2 == "off" { off[++n_off] = $3 }
        $1 == s && $2 == "listener" { on[++n_on] = $3 }
        END {
            n = (n_off < n_on) ? n_off : n_on
            for (i = 1; i <= n; i++) { r[i] = on[i] / off[i]; sum += r[i]; list = list sprintf(" %.3f", r[i]) }
            mean = sum / n
            for (i = 1; i <= n; i++) ss += (r[i] - mean) ^ 2
            # Two-sided 95% quantiles of Student t for 1..30 degrees of freedom, then 1.96.
            split("12.706 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262 2.228 2.201 2.179 2.160 2.145 2.131 2.120 2.110 2.101 2.093 2.086 2.080 2.074 2.069 2.064 2.060 2.056 2.052 2.048 2.045 2.042", t, " ")
            if (n >= 2) {
                df = n - 1; q = (df <= 30) ? t[df] : 1.96
                half = q * sqrt(ss / (n - 1)) / sqrt(n)
                printf "%-10s mean %.3f, 95%% CI %.3f to %.3f over %d rounds:%s\n", s, mean, mean - half, mean + half, n, list
            } else {
                printf "%-10s %.3f (one round: no interval)\n", s, mean
            }
        }' "$RESULTS"
done
