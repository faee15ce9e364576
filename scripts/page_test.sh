#!/usr/bin/env bash
# The admin page in a real browser: starts the `server` example with `--admin`, sends traffic
# (slow requests held from two addresses, refusals of two reasons, two bans through the API),
# then loads the page in headless Chromium (installed from Debian's packages when missing) and
# checks its rendered DOM: each reason the stats count, by name with its count; the heavy client;
# the bans and their reasons; a chart of at least ten points; both nodes of a fleet of two on a
# Redis started here (redis-server from Debian's packages when missing). Keeps a screenshot as a test artifact:
# target/admin-page.png (not committed; docs/admin-page.png is the README's copy). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/need.sh chromium chromium
scripts/need.sh curl curl
scripts/need.sh redis-server redis-server

cargo build --quiet --example server --features admin
TARGET_DIR=$(scripts/target_dir.sh)
SERVER="$TARGET_DIR/debug/examples/server"
OUT="$TARGET_DIR/admin-page"
mkdir -p "$OUT"
PUBLIC=${PUBLIC:-38090}
ADMIN=${ADMIN:-38091}
TOKEN=page-test-token
REDIS_PORT=${REDIS_PORT:-38092}
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT

# A fleet of two nodes on one Redis: the page is served by `alpha`, and shows `beta` too.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
    sleep 0.1
done
REDIS="redis://127.0.0.1:$REDIS_PORT/"
RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$PUBLIC" --max-per-client 10 --max-total 40 \
    --redis "$REDIS" --node alpha \
    --admin "127.0.0.1:$ADMIN" --admin-token "$TOKEN" >"$OUT/server.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$SERVER" --addr "127.0.0.1:$((PUBLIC + 3))" --max-per-client 10 --max-total 40 \
    --redis "$REDIS" --node beta >"$OUT/server-beta.log" 2>&1 &
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

# Traffic, from distinct loopback addresses: 127.0.0.8 holds ten slow requests (its cap) and is
# refused five more connections (`client_connections`); 127.0.0.9 holds three; 127.0.0.7 is
# banned through the API and refused five times (`banned`); and 203.0.113.7 is banned with a
# reason.
for _ in $(seq 1 10); do
    curl -s --interface 127.0.0.8 "http://127.0.0.1:$PUBLIC/slow?ms=60000" >/dev/null &
    PIDS+=($!)
done
for _ in 1 2 3; do
    curl -s --interface 127.0.0.9 "http://127.0.0.1:$PUBLIC/slow?ms=60000" >/dev/null &
    PIDS+=($!)
done
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" "$@"; }
api -X POST -d '{"client":"203.0.113.7","duration":"1h","reason":"page test"}' \
    "http://127.0.0.1:$ADMIN/api/bans" >/dev/null
api -X POST -d '{"client":"127.0.0.7","duration":"1h","reason":"kept knocking"}' \
    "http://127.0.0.1:$ADMIN/api/bans" >/dev/null
stat() { api "http://127.0.0.1:$ADMIN/api/stats" | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
# The slow requests are in flight: at most 10 s.
for _ in $(seq 1 100); do
    [ "$(stat 's["in_flight_requests"] >= 13')" = True ] && break
    sleep 0.1
done
# A heavy client banned while it holds requests: its row says why.
api -X POST -d '{"client":"127.0.0.9","duration":"30m","reason":"held too long"}' \
    "http://127.0.0.1:$ADMIN/api/bans" >/dev/null
# Refusals over twelve seconds (the charts draw the admin's history, one sample a second), a
# few a second from each of the two refused clients.
for second in $(seq 1 12); do
    for _ in $(seq 1 $((second % 4 + 1))); do
        curl -s -m 2 --interface 127.0.0.8 "http://127.0.0.1:$PUBLIC/" >/dev/null || true
        curl -s -m 2 --interface 127.0.0.7 "http://127.0.0.1:$PUBLIC/" >/dev/null || true
    done
    sleep 1
done
api "http://127.0.0.1:$ADMIN/api/stats" >"$OUT/stats.json"

URL="http://127.0.0.1:$ADMIN/#token=$TOKEN"
CHROMIUM=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars
    --virtual-time-budget=5000 --window-size=1280,800)
timeout 60 "${CHROMIUM[@]}" --dump-dom "$URL&reason=banned" >"$OUT/dom.html" 2>"$OUT/chromium.log"
timeout 60 "${CHROMIUM[@]}" --screenshot="$OUT/admin-page.png" "$URL" >/dev/null 2>>"$OUT/chromium.log"
timeout 60 "${CHROMIUM[@]}" --force-dark-mode --blink-settings=preferredColorScheme=0 \
    --screenshot="$OUT/admin-page-dark.png" "$URL" >/dev/null 2>>"$OUT/chromium.log"

# One screenshot per section, for the guide.
for section in budget refusals-by-reason heavy nodes; do
    timeout 60 "${CHROMIUM[@]}" --window-size=660,370 --screenshot="$OUT/admin-$section.png" \
        "$URL&only=$section" >/dev/null 2>>"$OUT/chromium.log"
done

python3 - "$OUT/dom.html" "$OUT/stats.json" <<'PY'
import json, re, sys
dom = open(sys.argv[1]).read()
stats = json.load(open(sys.argv[2]))
def rows(table):
    body = re.search(r'<table id="%s">.*?<tbody>(.*?)</tbody>' % table, dom, re.S)
    return body.group(1) if body else ""
problems = []
reasons = re.search(r'<ul class="legend" id="reasons">(.*?)</ul>', dom, re.S)
reasons = reasons.group(1) if reasons else ""
counted = [name for name, n in stats["rejected"].items() if n > 0]
if len(counted) < 2:
    problems.append("the traffic made refusals of %d reasons, not two" % len(counted))
for name in counted:
    shown = re.search(r'data-reason="%s"[^>]*>%s <b>(\d+)</b>' % (name, name), reasons)
    if not shown or int(shown.group(1)) == 0:
        problems.append("the reason %s is not on the page with its count" % name)
top = rows("top")
if "127.0.0.8" not in top:
    problems.append("the heavy clients do not show 127.0.0.8")
if not re.search(r"127\.0\.0\.9.*?\(held too long\)", top, re.S):
    problems.append("the banned heavy client 127.0.0.9 does not show its ban's reason")
bans = rows("bans")
if "203.0.113.7" not in bans or "page test" not in bans or "kept knocking" not in bans:
    problems.append("the bans do not show 203.0.113.7, 127.0.0.7 and their reasons")
listed = re.search(r'<table id="refused-clients">(.*?)</table>', dom, re.S)
if not listed or "127.0.0.7" not in listed.group(1):
    problems.append("the clients banned refused most do not list 127.0.0.7")
fleet = rows("fleet")
for node in ("alpha", "beta"):
    if node not in fleet:
        problems.append("the fleet does not show the node %s" % node)
if "alpha (this page)" not in fleet:
    problems.append("the fleet does not mark the node serving the page")
line = re.search(r'<polyline data-series="open_connections"[^>]*points="([^"]*)"', dom)
points = len(line.group(1).split()) if line else 0
if points < 10:
    problems.append("the budget chart's open connections have %d points, not ten" % points)
if problems:
    print("admin page check failed: " + "; ".join(problems), file=sys.stderr)
    print(dom[:6000], file=sys.stderr)
    sys.exit(1)
print("admin page: reasons %s with their counts, the heavy client 127.0.0.8, the bans and their "
      "reasons, a chart of %d points, the fleet's nodes alpha and beta" % (", ".join(counted), points))
PY
echo "screenshots: $OUT/admin-page.png, $OUT/admin-page-dark.png, $OUT/admin-*.png (one per section)"
