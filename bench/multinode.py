#!/usr/bin/env python3
"""Several livechat nodes on one machine, on one Redis, carrying 100,000 connections in all:
rooms that span every node, one publisher per room (on the first node), every member counted.

Workloads (each on fresh nodes and a fresh Redis with its append-only file on):
  crowd      10 rooms x 1,000 subscribers at 100 msg/s per room (1 M deliveries/s), while
             90,000 further connections sit in 1,000 rooms of their own: 100,010 connections
  big rooms  10 rooms x 10,000 subscribers at 10 msg/s per room (1 M deliveries/s): every one of
             the 100,010 connections is in a room that spans every node

Connection number N goes to node N mod NODES (so each node holds about a sixth of every room);
the load runs in several livechat-bench processes (one holds about 19,900 connections here) from
several 127.0.0.x source addresses. Prints, per workload, deliveries/s, loss, latency, CPU, and
each node's resident memory with its connections; writes the table into docs/benchmarks.md.

Usage: bench/multinode.py [--nodes N] [--node-threads N] [--quick] [--write]
  --nodes N          nodes to start (default 6)
  --node-threads N   runtime threads per node (TOKIO_WORKER_THREADS); default: one per core
  --quick            a tenth of the connections and short runs, to try the script (not written unless --write)
  --write            write the table even with --quick
Needs redis-server (./scripts/test.sh installs it). A full run takes about 3 minutes.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

from common import free_port
from compare import BENCH, LIVECHAT, REPORT, ROOT, Servers, StartFailed

START, END = "<!-- multinode:start -->", "<!-- multinode:end -->"
PER_LOAD_PROCESS = 17_000
SOURCES = ",".join(f"127.0.0.{n}" for n in range(1, 9))

# name, fanout arguments (connections in all = rooms x subscribers + idle + one publisher per room)
WORKLOADS = [
    ("crowd", dict(rooms=10, subscribers=1000, rate=100, idle=90_000)),
    ("big rooms", dict(rooms=10, subscribers=10_000, rate=10, idle=0)),
]


def resident(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start_nodes(servers, count, redis_url, threads):
    """Starts `count` nodes on free ports (with `threads` runtime threads each, if given);
    returns their URLs and pids."""
    env = {"TOKIO_WORKER_THREADS": str(threads)} if threads else None
    urls, pids = [], []
    for index in range(count):
        for attempt in range(3):
            port = free_port()
            data = tempfile.mkdtemp(prefix=f"node{index}-", dir=servers.scratch)
            try:
                pids.append(servers.start(f"node{index}", [str(LIVECHAT), "--bind", f"127.0.0.1:{port}",
                                                          "--data-dir", data, "--redis-url", redis_url],
                                          port, env=env))
                urls.append(f"http://127.0.0.1:{port}")
                break
            except StartFailed:
                if attempt == 2:
                    raise
    return urls, pids


def measure(scratch, nodes, threads, workload, quick):
    servers = Servers(scratch, pinned=False)
    try:
        redis_port = free_port()
        servers.start("redis", ["redis-server", "--port", str(redis_port), "--save", "",
                                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", scratch],
                      redis_port)
        urls, pids = start_nodes(servers, nodes, f"redis://127.0.0.1:{redis_port}/", threads)
        scale = 10 if quick else 1
        rooms, subscribers = workload["rooms"], workload["subscribers"] // scale
        idle = workload["idle"] // scale
        connections = rooms * subscribers + idle + rooms
        workers = max(1, -(-connections // PER_LOAD_PROCESS))
        before = [resident(pid) for pid in pids]
        command = [str(BENCH), "--url", ",".join(urls), "--server-pid", ",".join(map(str, pids)),
                   "--source-ips", SOURCES, "--workers", str(workers), "fanout",
                   "--rooms", str(rooms), "--subscribers", str(subscribers),
                   "--rate", str(workload["rate"]), "--idle-connections", str(idle),
                   "--duration", "5s" if quick else "20s", "--drain", "5s"]
        print("$", " ".join(command[1:]), flush=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            sys.exit(f"multinode: livechat-bench failed: {done.stderr.strip()}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["node_rss_before"] = before
        result["node_connections"] = connections / nodes
        return result
    finally:
        servers.stop()


def row(name, workload, result):
    latency = result["latency"]
    per_node = [(after - before) / result["node_connections"] / 1024
                for before, after in zip(result["node_rss_before"], result["server_rss_bytes"])]
    mib = [after / 2**20 for after in result["server_rss_bytes"]]
    return (f"| {name}: {workload['rooms']} x {result['parameters']['subscribers']:,} @{workload['rate']}"
            f" + {result['idle_open']:,} idle | {result['connections']:,} "
            f"| {result['deliveries_per_s'] / 1e6:.2f} M/s | {result['lost']:,} ({result['loss_percent']:.3f}%) "
            f"| {latency['p50_ms']:.0f} / {latency['p90_ms']:.0f} / {latency['p99_ms']:.0f} / {latency['max_ms']:.0f} "
            f"| {result['server_cpu_s']:.1f} / {result['bench_cpu_s']:.1f} "
            f"| {min(mib):.0f}-{max(mib):.0f} MiB; {min(per_node):.2f}-{max(per_node):.2f} KiB/conn |")


def write_report(text, nodes, threads):
    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB")
    section = "\n".join([
        START,
        f"Run {datetime.date.today().isoformat()} on {machine} by `bench/multinode.py"
        f"{f' --node-threads {threads}' if threads else ''}`: {nodes} nodes"
        f"{f' ({threads} runtime thread(s) each)' if threads else ''}, one Redis (append-only file, "
        "fsync every second), the load generator on the same cores.",
        "",
        text,
        END,
    ])
    report = REPORT.read_text()
    if START in report:
        report = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, report, flags=re.S)
    else:
        report += ("\n## Several nodes on one machine\n\n`python3 bench/multinode.py`: "
                   "rooms spanning every node, 100,000 connections in all.\n\n" + section + "\n")
    REPORT.write_text(report)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--nodes", type=int, default=6, help="nodes to start (default 6)")
    parser.add_argument("--node-threads", type=int, metavar="N",
                        help="runtime threads per node (TOKIO_WORKER_THREADS); default: one per core")
    parser.add_argument("--quick", action="store_true", help="a tenth of the connections, short runs")
    parser.add_argument("--write", action="store_true", help="write the table even with --quick")
    options = parser.parse_args()
    if not BENCH.exists() or not LIVECHAT.exists():
        subprocess.run(["cargo", "build", "--release", "--workspace"], cwd=ROOT, check=True)
    lines = ["| workload (rooms x subscribers @msg/s per room) | connections | deliveries | lost "
             "| latency p50 / p90 / p99 / max, ms | CPU s, nodes / load | per node: resident, per connection |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="livechat-multinode-") as scratch:
        for name, workload in WORKLOADS:
            print(f"\n== {name}", flush=True)
            result = measure(scratch, options.nodes, options.node_threads, workload, options.quick)
            lines.append(row(name, workload, result))
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if options.write or not options.quick:
        write_report(text, options.nodes, options.node_threads)
        print(f"multinode: table written to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
