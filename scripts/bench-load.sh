#!/usr/bin/env bash
# `make bench`, over-the-wire half: command throughput of `tally serve` over
# loopback, driven by wrk (installed from Debian's packages if missing).
# Every request places a real one-line order (unique order id per request)
# against SKUs stocked for the whole run; the store runs as `make run` does
# (SQLite WAL, synchronous=FULL, group commit). Loopback only, bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-1}"    # wrk shares the 2 cores with the server: one thread for the load
SKUS="${SKUS:-64}"      # fewer SKUs = hotter streams = more version conflicts

if ! command -v wrk >/dev/null; then
  echo "installing wrk (load generator)…" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

cargo build -j2 --release -p tally-cli --bin tally >&2
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
RUST_LOG=warn target/release/tally serve --port "$port" --db "$work/bench.db" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$port/openapi.json" >/dev/null && break; sleep 0.1; done

for i in $(seq 0 $((SKUS - 1))); do
  # tally serve takes commands only as JSON (its CSRF guard).
  curl -sf --json "{\"sku\":\"LOAD-$i\",\"name\":\"Load $i\"}" "http://127.0.0.1:$port/inventory" >/dev/null
  curl -sf --json '{"quantity":1000000}' "http://127.0.0.1:$port/inventory/LOAD-$i/receipts" >/dev/null
done

cat >"$work/orders.lua" <<LUA
-- One unique order per request, spread over the SKUs and 100 customers.
-- thread_id is a global set per thread by setup(); a local here would shadow it.
local counter = 0
function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"order_id":"w%d-%d","customer_id":"c-%d","lines":[{"sku":"LOAD-%d","quantity":1,"unit_price_cents":500}]}',
    thread_id, n, n % 100, n % $SKUS)
  return wrk.format("POST", "/orders", {["Content-Type"] = "application/json"}, body)
end
LUA

echo "POST /orders for $DURATION, $CONNECTIONS connections, $THREADS wrk threads, $SKUS SKUs, SQLite synchronous=FULL"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/orders.lua" "http://127.0.0.1:$port" | tee "$work/wrk.out"
# Non-2xx answers under load are 409 `contended` (a stream stayed contended
# through every retry): reported to the client as such, never a lost write.
grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/wrk.out" || echo "Non-2xx or 3xx responses: 0"
reserved="$(curl -s "http://127.0.0.1:$port/inventory/LOAD-0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reserved"])')"
echo "orders accepted on LOAD-0 (reserved units): $reserved"
