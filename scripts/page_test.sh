#!/usr/bin/env bash
# The admin page in a real browser: starts the `server` example with `--admin`, sends traffic
# (127.0.0.9 holds three slow requests) and bans a client through the API, then loads the page
# in headless Chromium (installed from Debian's packages when missing) and checks its rendered
# DOM for the top client's address and the ban's row. Keeps a screenshot as a test artifact:
# target/admin-page.png (not committed; docs/admin-page.png is the README's copy). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/need.sh chromium chromium
scripts/need.sh curl curl

cargo build --quiet --example server --features admin
TARGET_DIR=$(scripts/target_dir.sh)
SERVER="$TARGET_DIR/debug/examples/server"
OUT="$TARGET_DIR/admin-page"
mkdir -p "$OUT"
PUBLIC=${PUBLIC:-38090}
ADMIN=${ADMIN:-38091}
TOKEN=page-test-token
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT

RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$PUBLIC" --max-per-client 10 \
    --admin "127.0.0.1:$ADMIN" --admin-token "$TOKEN" >"$OUT/server.log" 2>&1 &
PIDS+=($!)
# Ready when the admin API answers: at most 10 s.
for _ in $(seq 1 100); do
    curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN/api/stats" >/dev/null && break
    sleep 0.1
done

# With --admin, the public port serves no stats, and the admin API wants the token.
public_stats=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PUBLIC/stats")
admin_without=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/api/stats")
if [ "$public_stats" != 404 ] || [ "$admin_without" != 401 ]; then
    echo "public /stats answered $public_stats (want 404), admin without a token $admin_without (want 401)" >&2
    exit 1
fi

# Traffic: three slow requests held from 127.0.0.9, and a ban through the API.
for _ in 1 2 3; do
    curl -s --interface 127.0.0.9 "http://127.0.0.1:$PUBLIC/slow?ms=30000" >/dev/null &
    PIDS+=($!)
done
curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
    -d '{"client":"203.0.113.7","duration":"1h","reason":"page test"}' \
    "http://127.0.0.1:$ADMIN/api/bans" >/dev/null
# The slow requests are in flight: at most 10 s.
for _ in $(seq 1 100); do
    curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN/api/stats" |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["in_flight_requests"] >= 3 else 1)' && break
    sleep 0.1
done

URL="http://127.0.0.1:$ADMIN/#token=$TOKEN"
CHROMIUM=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage
    --virtual-time-budget=5000 --window-size=1100,1000)
timeout 60 "${CHROMIUM[@]}" --dump-dom "$URL" >"$OUT/dom.html" 2>"$OUT/chromium.log"
timeout 60 "${CHROMIUM[@]}" --screenshot="$OUT/admin-page.png" "$URL" >/dev/null 2>>"$OUT/chromium.log"

python3 - "$OUT/dom.html" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
def rows(table):
    body = re.search(r'<table id="%s">.*?<tbody>(.*?)</tbody>' % table, dom, re.S)
    return body.group(1) if body else ""
top, bans = rows("top"), rows("bans")
problems = []
if "127.0.0.9" not in top:
    problems.append("the top clients do not show 127.0.0.9")
if "203.0.113.7" not in bans or "page test" not in bans:
    problems.append("the bans do not show 203.0.113.7 and its reason")
if problems:
    print("admin page check failed: " + "; ".join(problems), file=sys.stderr)
    print(dom[:4000], file=sys.stderr)
    sys.exit(1)
print("admin page: the top client (127.0.0.9) and the ban (203.0.113.7) are on the page")
PY
echo "screenshot: $OUT/admin-page.png"
