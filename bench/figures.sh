#!/usr/bin/env bash
# livechat's own figures at full load (docs/benchmarks.md, "Figures"): each workload of issue 4
# against a fresh release build, one server and one workload at a time. About 5 minutes.
# Uses ports 8031, 8041, 8042 and 6391 on 127.0.0.1 and 127.0.0.2 as a second source address.
# Usage: bench/figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
BENCH=target/release/livechat-bench
LIVECHAT=target/release/livechat
work=$(mktemp -d)
pids=()
cleanup() {
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One line per run: the headline figures of its JSON line.
summary() {
  python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    run = json.loads(line)
    keys = ["deliveries_per_s", "lost", "handshakes_per_s", "requests_per_s", "rss_per_connection_kib"]
    shown = [f"{k}={round(run[k], 2)}" for k in keys if k in run]
    shown += [f"{k}={v}" for k, v in run.get("latency", {}).items() if k in ("p50_ms", "p99_ms", "max_ms")]
    print(" ".join(shown))'
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

# A fresh embedded server on :8031; its pid in $server.
fresh_server() {
  if [ -n "${server:-}" ]; then kill -9 "$server"; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work/data"
  "$LIVECHAT" --data-dir "$work/data" --bind 127.0.0.1:8031 2>/dev/null &
  server=$!
  pids+=("$server")
  wait_port 8031
}

twice() {
  local name=$1
  shift
  for _ in 1 2; do
    printf '%-38s ' "$name"
    "$BENCH" "$@" | summary
  done
}

fresh_server
url=(--url http://127.0.0.1:8031)
twice "fan-out 10x100 @2000/s" "${url[@]}" fanout --rooms 10 --subscribers 100 --rate 2000 --duration 10s
twice "fan-out 10x1000 @100/s" "${url[@]}" fanout --rooms 10 --subscribers 1000 --rate 100 --duration 10s
twice "POST /chat/send/, 64 connections" "${url[@]}" http-publish --connections 64 --duration 8s
twice "handshakes" "${url[@]}" connect --connections 2000 --concurrency 32
fresh_server
printf '%-38s ' "idle, 18,000 connections"
"$BENCH" "${url[@]}" --workers 2 --source-ips 127.0.0.1,127.0.0.2 \
  idle --connections 18000 --server-pid "$server" | summary
kill -9 "$server"
wait "$server" 2>/dev/null || true

redis-server --port 6391 --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
  --dir "$work" >/dev/null &
pids+=($!)
wait_port 6391
for port in 8041 8042; do
  "$LIVECHAT" --redis-url redis://127.0.0.1:6391/ --bind "127.0.0.1:$port" 2>/dev/null &
  pids+=($!)
  wait_port "$port"
done
cross=(--url http://127.0.0.1:8042 fanout --publish-url http://127.0.0.1:8041 --duration 10s)
twice "Redis, 2 nodes, cross-node 10x100 @500/s" "${cross[@]}" --rooms 10 --subscribers 100 --rate 500
twice "Redis, cross-node 10x100 @1000/s" "${cross[@]}" --rooms 10 --subscribers 100 --rate 1000
twice "Redis, cross-node 10x1000 @100/s" "${cross[@]}" --rooms 10 --subscribers 1000 --rate 100
