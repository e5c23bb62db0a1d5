#!/usr/bin/env bash
# A burst of new rooms on the Redis engine while one room carries a steady fan-out: the existing
# room's latency during the burst, and whether anything was lost (docs/benchmarks.md).
# Usage: bench/redis-burst.sh [SERVER_BINARY] [ROOMS]   (default target/release/livechat, 10000)
# Needs redis-server; starts its own on port 6412 and a node on 127.0.0.1:8062.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
server=${1:-$root/target/release/livechat}
rooms=${2:-10000}
bench=$root/target/release/livechat-bench
[ -x "$bench" ] || (cd "$root" && cargo build --release -p livechat-bench)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; redis-cli -p 6412 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
redis-server --port 6412 --save "" --appendonly no --dir "$work" --daemonize yes >/dev/null
for _ in $(seq 50); do redis-cli -p 6412 ping >/dev/null 2>&1 && break; sleep 0.1; done
"$server" --bind 127.0.0.1:8062 --data-dir "$work" --redis-url redis://127.0.0.1:6412/ 2>/dev/null &
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8062) 2>/dev/null && break; sleep 0.1; done
"$bench" --url http://127.0.0.1:8062 --source-ips 127.0.0.1 fanout --rooms 1 --subscribers 100 \
  --rate 1000 --duration 15s > "$work/fanout.txt" 2>&1 &
fanout=$!
sleep 5
"$bench" --url http://127.0.0.1:8062 --workers 2 --source-ips 127.0.0.2,127.0.0.3 idle \
  --connections "$rooms" --rooms "$rooms" --room-prefix burst --hold 2s > "$work/idle.txt" 2>&1
wait $fanout
python3 - "$work/fanout.txt" "$work/idle.txt" <<'REPORT'
import json, sys
fanout = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
idle = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
latency = fanout["latency"]
print(f"existing room: {round(fanout['deliveries_per_s'])} deliveries/s, lost {fanout['lost']}, "
      f"p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, max {latency.get('max_ms')} ms")
print(f"burst: {idle['open']} rooms joined ({idle['failed']} failed) in {round(idle['open_s'], 2)} s")
REPORT
