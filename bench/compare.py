#!/usr/bin/env python3
"""Side by side, in one run on this machine: livechat (embedded), livechat on Redis (two nodes,
cross-node), the seed's reference stack (Django Channels + channels_redis + daphne, bench/peers/django),
Node's ws (bench/peers/node-ws), Bun's built-in WebSocket server (bench/peers/bun), and the floor
(`livechat-bench floor`: one thread without a runtime writing each room's frames to its members,
fan-out rows only). The same livechat-bench workloads drive each, one row at a time with every
server back to back (so that the machine's load is alike across a row); the script prints one
table with ratios, and one of each server's CPU per delivery as a multiple of the floor's, and
writes them, with the date and the machine, into docs/benchmarks.md.

Every measurement is taken on a freshly started server (a new process, a new data directory, a new
port): idle memory is that of a fresh process, and a server that an overloading workload left with
a backlog does not carry it into the next one. Django Channels runs only the modest workloads; the
heavier ones would take it far too long ("n/a (not run)" in its column).

Usage: bench/compare.py [--pinned] [--only NAME[,NAME]] [--rows TEXT]... [--quick] [--runs N] [--write]
                        [--no-build]
  --pinned       servers (and Redis) under `taskset -c 0`, every livechat-bench under `taskset -c 1`
                 (livechat with TOKIO_WORKER_THREADS=1); the table goes to its own section,
                 "Per core (pinned)"
  --only NAMES   only these servers: livechat, livechat-redis, django, node-ws, bun, floor (or
                 the column names, case-insensitive); the table is printed, not written, unless --write
  --rows TEXT    only the workloads whose row title holds TEXT (e.g. `10x1,000`; repeat for more);
                 printed, not written, unless --write
  --quick        short durations and small counts, to try the script (not written unless --write)
  --runs N       each workload N times (each on a fresh server); the table shows the medians
  --write        write the table into docs/benchmarks.md even with --only or --quick
  --no-build     use target/release as it is (`cargo build --release --workspace` is otherwise run
                 first, which rebuilds a livechat built alone: the workspace unifies features)
Installs the peers' packages from PyPI and npm on first use. A full run takes about 10 minutes.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port  # bench/common.py, beside this one

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
BENCH = ROOT / "target" / "release" / "livechat-bench"
LIVECHAT = ROOT / "target" / "release" / "livechat"
BUN = PEERS / "bun" / "node_modules" / ".bin" / "bun"
REPORT = ROOT / "docs" / "benchmarks.md"
MARKERS = {
    False: ("<!-- compare:start -->", "<!-- compare:end -->"),
    True: ("<!-- compare-pinned:start -->", "<!-- compare-pinned:end -->"),
}

# Servers, in column order: key (for --only) and column name.
SERVERS = [
    ("livechat", "livechat"),
    ("livechat-redis", "livechat on Redis, 2 nodes"),
    ("django", "Django Channels"),
    ("node-ws", "Node ws"),
    ("bun", "Bun"),
    ("floor", "floor"),
]
# Ratio columns: livechat (embedded) against each peer.
PEER_RATIOS = {"django": "Django", "node-ws": "Node ws", "bun": "Bun"}
# The floor serves fan-out only (no history, no HTTP).
EVERYONE = {key for key, _ in SERVERS} - {"floor"}
NOT_DJANGO = EVERYONE - {"django"}
FANOUT = EVERYONE | {"floor"}
FANOUT_NOT_DJANGO = NOT_DJANGO | {"floor"}

# Global livechat-bench options for every run: two source addresses (one reaches about 28,000
# connections to a port, and 20,000 handshakes leave as many sockets in TIME_WAIT).
BENCH_GLOBAL = ["--source-ips", "127.0.0.1,127.0.0.2"]

# (arguments, servers that run it), in the order they run. Light ones first, the ones that
# overload some servers last (each on a fresh server anyway).
WORKLOADS = [
    (["idle", "--connections", "2000", "--rooms", "20", "--hold", "2s"], EVERYONE),
    (["--workers", "2", "idle", "--connections", "18000"], NOT_DJANGO),
    (["fanout", "--rooms", "10", "--subscribers", "50", "--rate", "100", "--duration", "8s"], FANOUT),
    (["connect", "--connections", "2000", "--concurrency", "32"], EVERYONE),
    (["http-publish", "--connections", "16", "--duration", "5s"], EVERYONE),
    (["connect", "--connections", "20000", "--concurrency", "64"], NOT_DJANGO),
    (["http-publish", "--connections", "64", "--duration", "5s"], NOT_DJANGO),
    (["fanout", "--rooms", "10", "--subscribers", "1000", "--rate", "100", "--duration", "8s"], FANOUT_NOT_DJANGO),
    (["fanout", "--rooms", "1", "--subscribers", "10000", "--rate", "100", "--duration", "8s"], FANOUT_NOT_DJANGO),
    (["fanout", "--rooms", "10", "--subscribers", "100", "--rate", "500", "--duration", "8s"], FANOUT),
    (["fanout", "--rooms", "10", "--subscribers", "100", "--rate", "3000", "--duration", "8s"], FANOUT_NOT_DJANGO),
    (["fanout", "--rooms", "10", "--subscribers", "100", "--rate", "4000", "--duration", "8s"], FANOUT_NOT_DJANGO),
]

# --quick: every count and duration capped (the workloads keep their shape).
QUICK_CAPS = {"--connections": 300, "--subscribers": 20, "--rate": 200, "--duration": "2s",
              "--hold": "500ms"}


def quick(arguments):
    out = list(arguments)
    for index, part in enumerate(out[:-1]):
        cap = QUICK_CAPS.get(part)
        if isinstance(cap, int):
            out[index + 1] = str(min(int(out[index + 1]), cap))
        elif cap:
            out[index + 1] = cap
    return out


def option(arguments, name, default=None):
    return arguments[arguments.index(name) + 1] if name in arguments else default


def scenario(arguments):
    return next(part for part in arguments if part in ("idle", "fanout", "connect", "http-publish"))


def number(text):
    return f"{int(text):,}"


def title(arguments):
    """The row title of a workload, from its arguments."""
    kind = scenario(arguments)
    if kind == "fanout":
        return (f"fan-out {number(option(arguments, '--rooms'))}x{number(option(arguments, '--subscribers'))}"
                f" @{number(option(arguments, '--rate'))}/s")
    if kind == "idle":
        workers = option(arguments, "--workers")
        return f"idle {number(option(arguments, '--connections'))}" + (
            f" ({workers} load processes)" if workers else "")
    if kind == "connect":
        return (f"handshakes ({number(option(arguments, '--connections'))},"
                f" {option(arguments, '--concurrency')} at once)")
    return f"POST /chat/send/ ({option(arguments, '--connections')} connections)"


class StartFailed(Exception):
    pass


def wait_for_port(port, what, process, log, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            tail = Path(log).read_text(errors="replace").strip().splitlines()[-3:]
            raise StartFailed(f"{what} exited (status {process.returncode}) before listening on "
                              f"{port}: " + " / ".join(tail))
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise StartFailed(f"{what} did not start on port {port}")


def run(command, **kwargs):
    print("$", " ".join(str(part) for part in command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def install_peers(selected):
    if "django" in selected:
        venv = PEERS / "django" / ".venv"
        if not (venv / "bin" / "daphne").exists():
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(PEERS / "django" / "requirements.txt")])
    if "node-ws" in selected and not (PEERS / "node-ws" / "node_modules" / "ws").exists():
        run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS / "node-ws")
    if "bun" in selected:
        # The npm package `bun` ships the runtime; its postinstall (allowed in package.json)
        # puts the native binary at node_modules/.bin/bun.
        if not BUN.exists():
            run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS / "bun")
        version = subprocess.run([str(BUN), "--version"], capture_output=True, text=True)
        if version.returncode != 0:
            sys.exit(f"compare: {BUN} --version failed: {version.stderr.strip()}")
        print(f"bun {version.stdout.strip()}", flush=True)


class Servers:
    """Processes started for one measurement (or, for Redis, for the whole run)."""

    def __init__(self, scratch, pinned):
        self.scratch = scratch
        self.pinned = pinned
        self.processes = []
        self.count = 0

    def start(self, what, command, port, cwd=None, env=None):
        self.count += 1
        log = Path(self.scratch) / f"{what}-{self.count}.log"
        if self.pinned:
            command = ["taskset", "-c", "0", *command]
        with open(log, "w") as output:
            process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                                       stdout=output, stderr=subprocess.STDOUT)
        self.processes.append(process)
        wait_for_port(port, what, process, log)
        return process.pid

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []


def start_server(key, servers, redis_url, redis_port):
    """Starts server `key` fresh; returns (url, publish url or None, pid of the process the
    subscribers connect to)."""
    scratch = servers.scratch
    livechat_env = {"TOKIO_WORKER_THREADS": "1"} if servers.pinned else {}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if key == "livechat":
        data = tempfile.mkdtemp(prefix="embedded-", dir=scratch)
        pid = servers.start("livechat", [str(LIVECHAT), "--bind", f"127.0.0.1:{port}", "--data-dir", data],
                            port, env=livechat_env)
        return url, None, pid
    if key == "livechat-redis":
        pid = servers.start("livechat-node1", [str(LIVECHAT), "--bind", f"127.0.0.1:{port}",
                                               "--redis-url", redis_url], port, env=livechat_env)
        second = free_port()
        servers.start("livechat-node2", [str(LIVECHAT), "--bind", f"127.0.0.1:{second}",
                                         "--redis-url", redis_url], second, env=livechat_env)
        return url, f"http://127.0.0.1:{second}", pid
    if key == "django":
        django = PEERS / "django"
        pid = servers.start("django", [str(django / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1",
                                       "-p", str(port), "chatproject.asgi:application"],
                            port, cwd=django, env={"REDIS_PORT": str(redis_port)})
        return url, None, pid
    if key == "node-ws":
        pid = servers.start("node-ws", ["node", str(PEERS / "node-ws" / "server.js")], port,
                            env={"PORT": str(port)})
        return url, None, pid
    if key == "bun":
        pid = servers.start("bun", [str(BUN), "server.js"], port, cwd=PEERS / "bun",
                            env={"PORT": str(port)})
        return url, None, pid
    if key == "floor":
        pid = servers.start("floor", [str(BENCH), "floor", "--bind", f"127.0.0.1:{port}"], port)
        return url, None, pid
    raise ValueError(key)


def start_fresh(key, servers, redis_url, redis_port, tries=3):
    """start_server, on another free port when a server could not take the one it was given
    (another process on the machine may take a free port between the probe and the server's bind)."""
    for attempt in range(tries):
        try:
            return start_server(key, servers, redis_url, redis_port)
        except StartFailed as error:
            servers.stop()
            if attempt == tries - 1:
                raise
            print(f"compare: {error}; trying another port", file=sys.stderr)


def bench(url, arguments, publish_url, pid, pinned):
    command = [str(BENCH), "--url", url, *BENCH_GLOBAL, "--server-pid", str(pid), *arguments]
    if publish_url and scenario(arguments) == "fanout":
        command += ["--publish-url", publish_url]
    if pinned:
        command = ["taskset", "-c", "1", *command]
    print("$", " ".join(command[command.index(str(BENCH)) + 1:]), flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        print("compare: livechat-bench timed out", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(done.stderr.strip(), file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(runs):
    """One result from several runs of a workload: the median of every number they all hold.
    Runs that failed (None) are left out; None when every run failed."""
    runs = [result for result in runs if result is not None]
    if not runs:
        return None

    def merge(values):
        if all(isinstance(value, dict) for value in values):
            keys = set.intersection(*(set(value) for value in values))
            return {key: merge([value[key] for value in values]) for key in keys}
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            return statistics.median(values)
        return values[0]

    return merge(runs)


# Row kinds: (label, how to read it from a result, better: "higher", "lower" or None (shown
# for information, not compared)).
def rows_for(arguments):
    kind = scenario(arguments)

    def get(*keys):
        def read(result):
            for key in keys:
                result = result.get(key) if isinstance(result, dict) else None
            return result
        return read

    def latency(key):
        # Without a single delivery there is no latency to show.
        return lambda result: result["latency"][key] if result.get("deliveries") else None

    if kind == "fanout":
        return [
            ("deliveries/s", get("deliveries_per_s"), "higher"),
            ("loss %", get("loss_percent"), "lower"),
            ("p50 ms", latency("p50_ms"), "lower"),
            ("p99 ms", latency("p99_ms"), "lower"),
            ("server CPU s per million deliveries", get("server_cpu_s_per_million"), "lower"),
            ("load generator CPU s", get("bench_cpu_s"), None),
        ]
    if kind == "idle":
        return [("KiB per connection", get("rss_per_connection_kib"), "lower")]
    if kind == "connect":
        return [("per s", get("handshakes_per_s"), "higher")]
    return [("requests per s", get("requests_per_s"), "higher")]


def shortfall(arguments, result):
    """What a run did not do, shown beside its figure (connections not held, failures)."""
    kind = scenario(arguments)
    if kind == "idle" and result.get("failed"):
        return f"{number(result['open'])} held"
    if kind == "connect" and result.get("failed"):
        return f"{number(result['failed'])} failed"
    if kind == "http-publish":
        bad = result.get("non_200", 0) + result.get("connection_errors", 0)
        if bad:
            return f"{number(bad)} failed"
    if kind == "fanout" and result.get("connect_failed"):
        return f"{number(result['connect_failed'])} not connected"
    return None


def fmt(value):
    if value is None:
        return "n/a"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def ratio(ours, theirs, better):
    if better is None or ours is None or theirs is None:
        return "n/a"
    if better == "higher":
        return f"{ours / theirs:.1f}x" if theirs else "n/a"
    return f"{theirs / ours:.1f}x" if ours else "n/a"


def leads(ours, theirs, better):
    """Whether livechat is ahead on a row: yes, no, or tie (within 1%, or both 0)."""
    if better is None:
        return "-"
    if ours is None or theirs is None:
        return "n/a"
    if abs(ours - theirs) <= 0.01 * max(abs(ours), abs(theirs)):
        return "tie"
    ahead = ours > theirs if better == "higher" else ours < theirs
    return "yes" if ahead else "no"


def table(workloads, selected, results):
    """results[key][workload index]: a result, None (failed) or "not run"."""
    names = dict(SERVERS)
    columns = [key for key, _ in SERVERS if key in selected]
    peers = [key for key in PEER_RATIOS if key in selected] if "livechat" in selected else []
    header = ["metric", *(names[key] for key in columns), *(f"livechat vs {PEER_RATIOS[key]}" for key in peers)]
    with_leads = "livechat" in selected and "bun" in selected
    if with_leads:
        header.append("leads?")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, (arguments, _) in enumerate(workloads):
        for label, read, better in rows_for(arguments):
            values, cells = {}, []
            for key in columns:
                result = results[key][index]
                if result == "not run":
                    values[key], cell = None, "n/a (not run)"
                elif result is None:
                    values[key], cell = None, "failed"
                else:
                    values[key] = read(result)
                    cell = fmt(values[key])
                    note = shortfall(arguments, result)
                    if note and label in ("deliveries/s", "KiB per connection", "per s", "requests per s"):
                        cell += f" ({note})"
                cells.append(cell)
            row = [f"{title(arguments)}: {label}", *cells,
                   *(ratio(values["livechat"], values[key], better) for key in peers)]
            if with_leads:
                row.append(leads(values["livechat"], values["bun"], better))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def floor_table(workloads, selected, results):
    """Each server's CPU per delivery on the fan-out rows as a multiple of the floor's, with the
    floor's own figures; None without the floor."""
    if "floor" not in selected:
        return None
    names = dict(SERVERS)
    columns = [key for key, _ in SERVERS if key in selected and key != "floor"]
    header = ["workload", "floor: CPU s per million deliveries", "floor: p99 ms",
              *(f"{names[key]}: CPU per delivery / floor's" for key in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cpu(result):
        return result.get("server_cpu_s_per_million") if isinstance(result, dict) else None

    for index, (arguments, _) in enumerate(workloads):
        floor = results["floor"][index]
        if scenario(arguments) != "fanout" or not isinstance(floor, dict):
            continue
        floor_cpu = cpu(floor)
        p99 = floor["latency"]["p99_ms"] if floor.get("deliveries") else None
        cells = []
        for key in columns:
            theirs = cpu(results[key][index])
            cells.append(f"{theirs / floor_cpu:.2f}x ({fmt(theirs)})" if theirs and floor_cpu else "n/a")
        lines.append("| " + " | ".join([title(arguments), fmt(floor_cpu), fmt(p99), *cells]) + " |")
    return "\n".join(lines)


def write_report(text, pinned, runs):
    start, end = MARKERS[pinned]
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, " \
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB"
    how = ("servers (and Redis) on core 0 (`taskset -c 0`, livechat with one runtime thread), the "
           "load generator on core 1" if pinned else "servers and load generator sharing the cores")
    section = "\n".join([
        start,
        f"Run {datetime.date.today().isoformat()} on {machine} by `bench/compare.py"
        f"{' --pinned' if pinned else ''}{f' --runs {runs}' if runs > 1 else ''}`"
        f"{f' (medians of {runs} runs)' if runs > 1 else ''}:",
        f"{how}.",
        "Ratios: how many times better livechat (embedded) is (for a 'lower is better' metric, their",
        "value / ours). leads?: livechat (embedded) against Bun on that row (tie: within 1%). Server CPU:",
        "the process the subscribers connect to (livechat on Redis: node 1, which delivers; Django: daphne;",
        "floor: `livechat-bench floor`).",
        "",
        text,
        end,
    ])
    report = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    if start in report:
        report = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: section, report, flags=re.S)
    elif pinned:
        report += "\n## Per core (pinned)\n\n`python3 bench/compare.py --pinned`: the same workloads with " \
                  "each side on a core of its own.\n\n" + section + "\n"
    else:
        report += "\n## Side by side\n\n" + section + "\n"
    REPORT.write_text(report)


def parse_only(text):
    if text is None:
        return EVERYONE
    wanted = set()
    for name in (part.strip().lower() for part in text.split(",") if part.strip()):
        match = [key for key, column in SERVERS if name in (key, column.lower())]
        if not match:
            sys.exit(f"compare: unknown server `{name}` (use {', '.join(key for key, _ in SERVERS)})")
        wanted.update(match)
    return wanted


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--pinned", action="store_true",
                        help="servers (and Redis) on core 0, every livechat-bench on core 1; the table "
                             "goes to its own section, 'Per core (pinned)'")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="only these servers: " + ", ".join(key for key, _ in SERVERS) +
                             " (or column names); the table is printed, not written, unless --write")
    parser.add_argument("--rows", action="append", metavar="TEXT",
                        help="only the workloads whose row title holds TEXT (repeat for more); printed, "
                             "not written, unless --write")
    parser.add_argument("--quick", action="store_true",
                        help="short durations and small counts, to try the script (not written unless --write)")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="run each workload N times, each on a fresh server, and show the medians")
    parser.add_argument("--write", action="store_true",
                        help="write the table into docs/benchmarks.md even with --only or --quick")
    parser.add_argument("--no-build", action="store_true",
                        help="use target/release as it is, without `cargo build --release --workspace`")
    options = parser.parse_args()
    if options.runs < 1:
        sys.exit("compare: --runs takes 1 or more")
    selected = parse_only(options.only)
    write = options.write or (options.only is None and not options.quick and not options.rows)
    needs = ["npm"] if selected & {"node-ws", "bun"} else []
    needs += ["redis-server"] if selected & {"livechat-redis", "django"} else []
    needs += ["taskset"] if options.pinned else []
    for tool in needs + (["node"] if "node-ws" in selected else []):
        if not shutil.which(tool):
            sys.exit(f"compare: `{tool}` is needed (./scripts/test.sh installs redis-server)")
    # Each connection is a file: let every process started here have as many as allowed.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if not options.no_build:
        run(["cargo", "build", "--release", "--workspace"], cwd=ROOT)
    for binary in (BENCH, LIVECHAT):
        if not binary.exists():
            sys.exit(f"compare: {binary} is missing (build it, or leave out --no-build)")
    install_peers(selected)
    workloads = []
    for arguments, who in WORKLOADS:
        arguments = quick(arguments) if options.quick else arguments
        if options.rows and not any(text in title(arguments) for text in options.rows):
            continue
        # Capped, some heavy workloads become the same: run each once.
        if all(arguments != seen for seen, _ in workloads):
            workloads.append((arguments, who))
    started = time.time()
    results = {key: [] for key in selected}
    with tempfile.TemporaryDirectory(prefix="livechat-compare-") as scratch:
        redis = Servers(scratch, options.pinned)
        servers = Servers(scratch, options.pinned)
        try:
            redis_port = free_port()
            redis_url = f"redis://127.0.0.1:{redis_port}/"
            if selected & {"livechat-redis", "django"}:
                try:
                    redis.start("redis", ["redis-server", "--port", str(redis_port), "--save", "",
                                          "--appendonly", "yes", "--appendfsync", "everysec",
                                          "--dir", scratch], redis_port)
                except StartFailed as error:
                    sys.exit(f"compare: {error}")
            # A row at a time, every server back to back (with --runs, in turns): the machine's
            # load (other work on it) is then alike across the row its ratios compare.
            for arguments, who in workloads:
                print(f"\n== {title(arguments)}", flush=True)
                running = [key for key, _ in SERVERS if key in selected and key in who]
                runs = {key: [] for key in running}
                for _ in range(options.runs):
                    for key in running:
                        print(f"-- {dict(SERVERS)[key]}", flush=True)
                        try:
                            url, publish_url, pid = start_fresh(key, servers, redis_url, redis_port)
                            runs[key].append(bench(url, arguments, publish_url, pid, options.pinned))
                        except StartFailed as error:
                            print(f"compare: {error}", file=sys.stderr)
                            runs[key].append(None)
                        finally:
                            servers.stop()
                for key in selected:
                    results[key].append(median_of(runs[key]) if key in running else "not run")
        finally:
            servers.stop()
            redis.stop()
    text = table(workloads, selected, results)
    against_floor = floor_table(workloads, selected, results)
    if against_floor:
        text += "\n\nServer CPU per delivery as a multiple of the floor's (in brackets: CPU s per million deliveries):\n\n" + against_floor
    print("\n" + text)
    print(f"\ncompare: done in {time.time() - started:.0f} s", end="")
    if write:
        write_report(text, options.pinned, options.runs)
        print(f"; table written to {REPORT.relative_to(ROOT)}")
    else:
        print("; not written to the report (--only or --quick; add --write to write it)")


if __name__ == "__main__":
    main()
