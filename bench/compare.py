#!/usr/bin/env python3
"""Side by side, in one run on this machine: livechat (embedded), livechat on Redis (two nodes,
cross-node), the seed's reference stack (Django Channels + channels_redis + daphne, bench/peers/django)
and Node's ws (bench/peers/node-ws). The same livechat-bench workloads drive each; the script prints
one table with ratios and writes it, with the date and the machine, into docs/benchmarks.md.

Usage: bench/compare.py            (installs the peers' packages on first use; a few minutes)
"""
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
BENCH = ROOT / "target" / "release" / "livechat-bench"
LIVECHAT = ROOT / "target" / "release" / "livechat"
REPORT = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- compare:start -->", "<!-- compare:end -->"

# The same load for every server; modest enough that the reference stack finishes it.
# `idle` first, on fresh processes: memory freed by earlier workloads would hide its cost.
# The heavy fan-out last: a server it overloads is still draining its backlog afterwards.
WORKLOADS = [
    ("idle", ["idle", "--connections", "2000", "--rooms", "20", "--hold", "2s"]),
    ("fanout", ["fanout", "--rooms", "10", "--subscribers", "50", "--rate", "100", "--size", "64",
                "--duration", "8s"]),
    ("connect", ["connect", "--connections", "2000", "--concurrency", "32"]),
    ("http-publish", ["http-publish", "--connections", "16", "--duration", "5s"]),
    ("fanout-heavy", ["fanout", "--rooms", "10", "--subscribers", "100", "--rate", "500", "--size", "64",
                      "--duration", "8s", "--room-prefix", "heavy"]),
]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"compare: {what} did not start on port {port}")


def run(command, **kwargs):
    print("$", " ".join(str(part) for part in command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def install_peers():
    venv = PEERS / "django" / ".venv"
    if not (venv / "bin" / "daphne").exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(PEERS / "django" / "requirements.txt")])
    if not (PEERS / "node-ws" / "node_modules" / "ws").exists():
        run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS / "node-ws")


class Servers:
    """Every server under test, started once and stopped at the end."""

    def __init__(self, scratch):
        self.scratch = scratch
        self.processes = []

    def start(self, what, command, port, cwd=None, env=None):
        log = open(Path(self.scratch) / f"{what}.log", "w")
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        wait_for_port(port, what)
        return process.pid

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def bench(url, arguments, publish_url=None, pid=None):
    command = [str(BENCH), "--url", url, *arguments]
    if publish_url and arguments[0] == "fanout":
        command += ["--publish-url", publish_url]
    if pid and arguments[0] == "idle":
        command += ["--server-pid", str(pid)]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def metrics(results):
    """The figures the table shows, per server: (label, value, higher is better)."""
    def get(workload, *keys):
        value = results.get(workload) or {}
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def latency(workload, key):
        # Without a single delivery there is no latency to show.
        return get(workload, "latency", key) if get(workload, "deliveries") else None

    rows = []
    for workload, title in (("fanout", "fan-out 10x50 @100/s"), ("fanout-heavy", "fan-out 10x100 @500/s")):
        rows += [
            (f"{title}: deliveries/s", get(workload, "deliveries_per_s"), True),
            (f"{title}: loss %", get(workload, "loss_percent"), False),
            (f"{title}: p50 ms", latency(workload, "p50_ms"), False),
            (f"{title}: p99 ms", latency(workload, "p99_ms"), False),
        ]
    return rows + [
        ("idle: KiB per connection (2,000)", get("idle", "rss_per_connection_kib"), False),
        ("handshakes/s", get("connect", "handshakes_per_s"), True),
        ("POST /chat/send/ per s", get("http-publish", "requests_per_s"), True),
    ]


def fmt(value):
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def ratio(ours, theirs, higher_is_better):
    if ours is None or theirs is None:
        return "n/a"
    if higher_is_better:
        return f"{ours / theirs:.1f}x" if theirs else "n/a"
    return f"{theirs / ours:.1f}x" if ours else "n/a"


def table(all_results):
    names = list(all_results)
    rows = {name: metrics(all_results[name]) for name in names}
    header = ["metric", *names, "livechat vs Django", "livechat vs Node ws"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, (label, _, higher) in enumerate(rows[names[0]]):
        values = [rows[name][index][1] for name in names]
        ours = rows["livechat"][index][1]
        lines.append("| " + " | ".join([
            label, *(fmt(v) for v in values),
            ratio(ours, rows["Django Channels"][index][1], higher),
            ratio(ours, rows["Node ws"][index][1], higher),
        ]) + " |")
    return "\n".join(lines)


def write_report(text):
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, " \
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB"
    section = "\n".join([
        START,
        f"Run {datetime.date.today().isoformat()} on {machine} by `bench/compare.py`. Ratios: how many",
        "times better livechat (embedded) is (for a 'lower is better' metric, their value / ours).",
        "",
        text,
        END,
    ])
    report = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    if START in report:
        report = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, report, flags=re.S)
    else:
        report += "\n## Side by side\n\n" + section + "\n"
    REPORT.write_text(report)


def main():
    for tool in ("redis-server", "node", "npm"):
        if not shutil.which(tool):
            sys.exit(f"compare: `{tool}` is needed (./scripts/test.sh installs redis-server)")
    run(["cargo", "build", "--release", "--workspace"], cwd=ROOT)
    install_peers()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="livechat-compare-") as scratch:
        servers = Servers(scratch)
        try:
            redis_port = free_port()
            servers.start("redis", ["redis-server", "--port", str(redis_port), "--save", "",
                                    "--appendonly", "yes", "--appendfsync", "everysec",
                                    "--dir", scratch], redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/"
            ports = {name: free_port() for name in ("embedded", "node1", "node2", "django", "nodews")}
            targets = {}
            pid = servers.start("livechat", [str(LIVECHAT), "--bind", f"127.0.0.1:{ports['embedded']}",
                                             "--data-dir", f"{scratch}/embedded"], ports["embedded"])
            targets["livechat"] = (ports["embedded"], None, pid)
            pid = servers.start("livechat-node1", [str(LIVECHAT), "--bind", f"127.0.0.1:{ports['node1']}",
                                                   "--redis-url", redis_url], ports["node1"])
            servers.start("livechat-node2", [str(LIVECHAT), "--bind", f"127.0.0.1:{ports['node2']}",
                                             "--redis-url", redis_url], ports["node2"])
            targets["livechat on Redis, 2 nodes"] = (ports["node1"], ports["node2"], pid)
            django = PEERS / "django"
            pid = servers.start("django", [str(django / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1",
                                           "-p", str(ports["django"]), "chatproject.asgi:application"],
                                ports["django"], cwd=django, env={"REDIS_PORT": str(redis_port)})
            targets["Django Channels"] = (ports["django"], None, pid)
            pid = servers.start("node-ws", ["node", str(PEERS / "node-ws" / "server.js")], ports["nodews"],
                                env={"PORT": str(ports["nodews"])})
            targets["Node ws"] = (ports["nodews"], None, pid)

            all_results = {}
            for name, (port, publish_port, pid) in targets.items():
                print(f"\n== {name}", flush=True)
                publish_url = f"http://127.0.0.1:{publish_port}" if publish_port else None
                all_results[name] = {
                    workload: bench(f"http://127.0.0.1:{port}", arguments, publish_url, pid)
                    for workload, arguments in WORKLOADS
                }
        finally:
            servers.stop()
    text = table(all_results)
    print("\n" + text)
    write_report(text)
    print(f"\ncompare: done in {time.time() - started:.0f} s; table written to {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
