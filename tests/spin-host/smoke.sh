#!/usr/bin/env bash
# Smoke test for spin-test-host: builds the smoke guest (smoke-guest/, spin-sdk 5.2.0,
# wasm32-wasip2), starts a Python http.server as the allowed upstream and the host on free
# ports, checks variables, key-value (limits, access), outbound HTTP (allowed and denied),
# a 200 MiB streamed PUT echo (sha256 and host peak RSS), body and startup refusals, and
# measures the latency of a trivial GET. Stops everything it started, by PID.
#
#   tests/spin-host/smoke.sh            # builds the host first if needed (scripts/spin-host-deps)
#   SPIN_TEST_HOST=/path/to/binary tests/spin-host/smoke.sh
#   SMOKE_ECHO_MIB=50 tests/spin-host/smoke.sh   # smaller streaming test
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${OPENREGISTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openregistry}"
HOST_BIN="${SPIN_TEST_HOST:-$ROOT/.tools/bin/spin-test-host}"
ECHO_MIB="${SMOKE_ECHO_MIB:-200}"
MAX_RSS_KB="${SMOKE_MAX_RSS_KB:-204800}" # the streamed echo must not grow the host past this

log() { printf 'smoke: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/spin-host-smoke.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- build ---------------------------------------------------------------------------
if [[ -z "${SPIN_TEST_HOST:-}" ]]; then
    "$ROOT/scripts/spin-host-deps"
fi
[[ -x "$HOST_BIN" ]] || fail "no host binary at $HOST_BIN"

GUEST_TARGET="$CACHE/spin-smoke-guest-target"
log "building the smoke guest (wasm32-wasip2)"
t0=$SECONDS
(cd "$HERE/smoke-guest" && CARGO_TARGET_DIR="$GUEST_TARGET" cargo build --locked --quiet \
    --target wasm32-wasip2 --release)
WASM="$GUEST_TARGET/wasm32-wasip2/release/spin_smoke_guest.wasm"
log "guest built in $((SECONDS - t0)) s ($(stat -c %s "$WASM") bytes)"

# --- upstream ------------------------------------------------------------------------
mkdir -p "$WORK/www"
echo "hello from upstream" > "$WORK/www/hello.txt"
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$WORK/www" \
    > "$WORK/upstream.out" 2> "$WORK/upstream.err" &
PIDS+=($!)
for _ in $(seq 100); do
    UP_PORT="$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$WORK/upstream.out" | head -1)"
    [[ -n "$UP_PORT" ]] && break
    sleep 0.1
done
[[ -n "${UP_PORT:-}" ]] || fail "upstream did not start"
UPSTREAM="http://127.0.0.1:$UP_PORT"

# start_host NAME [host args...]: starts the host with the smoke manifest, sets HOST_URL
# and HOST_PID. Environment variables for the host are taken from the caller.
start_host() {
    local name="$1"; shift
    "$HOST_BIN" --manifest "$HERE/smoke-guest/spin.toml" --wasm "$WASM" --listen 127.0.0.1:0 "$@" \
        > "$WORK/$name.out" 2> "$WORK/$name.err" &
    HOST_PID=$!
    PIDS+=("$HOST_PID")
    HOST_URL=""
    for _ in $(seq 300); do
        HOST_URL="$(sed -n 's/^listening on \(http:.*\)$/\1/p' "$WORK/$name.out")"
        [[ -n "$HOST_URL" ]] && return 0
        kill -0 "$HOST_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/$name.err" >&2
    fail "host $name did not start"
}

stop_host() {
    kill "$HOST_PID" 2>/dev/null || true
    wait "$HOST_PID" 2>/dev/null || true
}

CHECKS=0
# expect NAME WANT_STATUS WANT_BODY_SUBSTRING curl-args...
expect() {
    local name="$1" want_status="$2" want_body="$3"; shift 3
    local status
    status="$(curl -sS -o "$WORK/body" -w '%{http_code}' "$@")" || fail "$name: curl failed"
    [[ "$status" == "$want_status" ]] || fail "$name: status $status, want $want_status; body: $(head -c 300 "$WORK/body")"
    [[ -z "$want_body" ]] || grep -qF -- "$want_body" "$WORK/body" || fail "$name: body lacks \"$want_body\": $(head -c 300 "$WORK/body")"
    CHECKS=$((CHECKS + 1))
    log "ok: $name"
}

# --- startup refusals ------------------------------------------------------------------
if "$HOST_BIN" --manifest "$HERE/smoke-guest/spin.toml" --wasm "$WASM" > /dev/null 2> "$WORK/norequired.err"; then
    fail "host started without the required variable"
fi
grep -q "SPIN_VARIABLE_UPSTREAM" "$WORK/norequired.err" || fail "no clear error for a missing required variable"
CHECKS=$((CHECKS + 1)); log "ok: a missing required variable stops startup: $(tail -1 "$WORK/norequired.err")"

sed 's|"{{ upstream }}", "http://self"|"{{ upstream }}/bucket"|' \
    "$HERE/smoke-guest/spin.toml" > "$WORK/path.toml"
if SPIN_VARIABLE_UPSTREAM="$UPSTREAM" "$HOST_BIN" --manifest "$WORK/path.toml" --wasm "$WASM" > /dev/null 2> "$WORK/path.err"; then
    fail "host accepted an allowed_outbound_hosts entry with a path"
fi
grep -q "has a path" "$WORK/path.err" || fail "no clear error for a path in allowed_outbound_hosts"
CHECKS=$((CHECKS + 1)); log "ok: a path in allowed_outbound_hosts stops startup: $(tail -1 "$WORK/path.err")"

# --- main host ---------------------------------------------------------------------------
export SPIN_VARIABLE_UPSTREAM="$UPSTREAM"
SPIN_VARIABLE_GREETING=bonjour start_host main
log "host at $HOST_URL (pid $HOST_PID), upstream at $UPSTREAM"

expect "GET /" 200 "ok" "$HOST_URL/"
expect "health" 200 "OK" "$HOST_URL/.well-known/spin/health"
expect "variable from template + SPIN_VARIABLE_ override" 200 "bonjour, world" "$HOST_URL/var?greeting"
expect "variable resolved from a required app variable" 200 "$UPSTREAM" "$HOST_URL/var?upstream_url"
expect "invalid variable name" 400 "invalid-name" "$HOST_URL/var?Bad-Name"
expect "undefined variable" 404 "undefined" "$HOST_URL/var?nope"

expect "kv set" 201 "" -X PUT --data-binary "value-1" "$HOST_URL/kv/k1"
expect "kv get" 200 "value-1" "$HOST_URL/kv/k1"
expect "kv delete" 204 "" -X DELETE "$HOST_URL/kv/k1"
expect "kv get after delete" 404 "missing" "$HOST_URL/kv/k1"
head -c 1000000 /dev/zero > "$WORK/1mb"
head -c 1000001 /dev/zero > "$WORK/1mb+1"
expect "kv value at the limit" 201 "" -X PUT --data-binary "@$WORK/1mb" "$HOST_URL/kv/big"
expect "kv value over the limit" 413 "exceeds the 1000000-byte value limit" -X PUT --data-binary "@$WORK/1mb+1" "$HOST_URL/kv/big"
expect "kv key over the limit" 413 "key limit" -X PUT --data-binary "x" "$HOST_URL/kv/$(printf 'k%.0s' $(seq 257))"
expect "kv store not listed in key_value_stores" 403 "access-denied" "$HOST_URL/kv-open/other"

expect "outbound GET to the allowed origin" 200 "hello from upstream" "$HOST_URL/fetch?$UPSTREAM/hello.txt"
expect "outbound GET to a disallowed origin" 502 "HttpRequestDenied" "$HOST_URL/fetch?$HOST_URL/"
expect "outbound GET to a disallowed port of the allowed host" 502 "HttpRequestDenied" "$HOST_URL/fetch?http://127.0.0.1:1/"
expect "self request (http://self allowed)" 200 "ok" "$HOST_URL/fetch?http://self.alt/"

# Concurrency: 16 requests at once, each in its own instance.
for i in $(seq 16); do
    curl -sS -o "$WORK/par.$i" "$HOST_URL/fetch?$UPSTREAM/hello.txt" &
    PAR_PIDS[i]=$!
done
for i in $(seq 16); do
    wait "${PAR_PIDS[i]}" || fail "parallel request $i failed"
    grep -q "hello from upstream" "$WORK/par.$i" || fail "parallel request $i: wrong body"
done
CHECKS=$((CHECKS + 1)); log "ok: 16 concurrent outbound requests"

# Streamed echo: the body goes through the guest in 16 KiB pieces; host RSS must stay flat.
head -c $((ECHO_MIB * 1024 * 1024)) /dev/urandom > "$WORK/big"
want="$(sha256sum < "$WORK/big" | cut -d' ' -f1)"
rss_before="$(awk '/VmRSS/ {print $2}' "/proc/$HOST_PID/status")"
t0=$(date +%s.%N)
got="$(curl -sS -T "$WORK/big" "$HOST_URL/echo" | sha256sum | cut -d' ' -f1)"
t1=$(date +%s.%N)
rss_peak="$(awk '/VmHWM/ {print $2}' "/proc/$HOST_PID/status")"
[[ "$got" == "$want" ]] || fail "streamed echo: sha256 differs"
secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
log "ok: streamed PUT echo of $ECHO_MIB MiB in ${secs}s; host RSS before ${rss_before} kB, peak ${rss_peak} kB"
(( rss_peak < MAX_RSS_KB )) || fail "host peak RSS ${rss_peak} kB exceeds ${MAX_RSS_KB} kB"
CHECKS=$((CHECKS + 1))
rm -f "$WORK/big"

# Latency of a trivial GET over one keep-alive connection (instantiation included).
python3 - "$HOST_URL" <<'EOF' >&2
import http.client, statistics, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port)
times = []
for i in range(220):
    t = time.perf_counter()
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    if i >= 20:
        times.append((time.perf_counter() - t) * 1000)
times.sort()
print("smoke: latency of GET / over 200 requests: median %.2f ms, p90 %.2f ms, max %.2f ms"
      % (statistics.median(times), times[int(len(times) * 0.9)], times[-1]))
EOF
stop_host
grep -q '^GET / 200 ' "$WORK/main.err" || fail "no request log line on stderr"
CHECKS=$((CHECKS + 1)); log "ok: request log lines on stderr ($(grep -c ' [0-9]*B$' "$WORK/main.err") lines)"

# --- body limit and handler timeout ----------------------------------------------------
start_host limited --max-body-bytes 1048576 --handler-timeout-secs 1
head -c 2097152 /dev/zero > "$WORK/2mb"
expect "request body over --max-body-bytes" 413 "exceeds the 1048576-byte limit" -T "$WORK/2mb" "$HOST_URL/echo"
expect "request body under --max-body-bytes" 200 "" -T "$WORK/1mb" "$HOST_URL/echo"
# Without a content-length the guest sees the body fail once it passes the limit.
curl -sS -o /dev/null -H 'Transfer-Encoding: chunked' -T - "$HOST_URL/echo" < "$WORK/2mb" || true
sleep 0.2
grep -q "echo: request body error" "$WORK/limited.err" || fail "a chunked body over the limit reached the guest intact"
CHECKS=$((CHECKS + 1)); log "ok: chunked request body over --max-body-bytes fails in the guest"
expect "handler under --handler-timeout-secs" 200 "done" "$HOST_URL/sleep?100"
t0=$SECONDS
expect "sleeping handler over --handler-timeout-secs" 500 "" "$HOST_URL/sleep?5000"
expect "computing handler over --handler-timeout-secs" 500 "" "$HOST_URL/busy?5000"
(( SECONDS - t0 < 5 )) || fail "handler timeouts took $((SECONDS - t0)) s"
grep -q "handler timed out" "$WORK/limited.err" || fail "no timeout message in the host log"
stop_host

# --- key-value persistence (--kv-dir) ---------------------------------------------------
start_host persist1 --kv-dir "$WORK/kv"
expect "kv set (persisted)" 201 "" -X PUT --data-binary "kept" "$HOST_URL/kv/durable"
stop_host
start_host persist2 --kv-dir "$WORK/kv"
expect "kv get after a restart with the same --kv-dir" 200 "kept" "$HOST_URL/kv/durable"
stop_host

log "all $CHECKS checks passed"
