#!/usr/bin/env python3
"""A long run at a moderate, steady load, to show that nothing grows: livechat on the embedded
engine (one node) and on Redis (two nodes on one Redis), side by side, for --minutes each.

On each setup, at the same time:
  members     MEMBERS clients, each in one of ROOMS rooms with presence on and a name, that stay
              3-15 s, leave, and come back 0.2-1 s later on any node with `since=` their last
              id (a resume), typing now and then; each checks what it gets: every id once, in
              order, none missing (a lost, doubled or reordered message is counted), no `gap`
  publishers  one per room, RATE messages a second, each message carrying the time it was sent

Every 10 s it samples each node's resident memory (VmRSS), open files (/proc/PID/fd) and CPU share,
Redis' used memory, the members' publish-to-receive p99 over those 10 s (live messages only, not
those a resume replays) (and the CPU share of this
load generator, which measures it: one Python process for both setups), and what went wrong so far
(errors: refused frames, failed connections, unexpected closes; lost, doubled). The samples go
to OUT/soak.csv and a plot to OUT/soak.png (matplotlib).

With --check it fails (exit 1) on any error, lost or doubled message, or growth beyond the
margins below, measured from the end of the warm-up (the first WARMUP_SHARE of the run, at
least 30 s and at most 5 minutes; its median over the next three samples) to the median of the
last three samples:
  resident memory  + max(15 %, 16 MiB) per node
  open files       + 16 per node (connections come and go: a few are between leaving and coming back)
  Redis memory     + max(20 %, 8 MiB) (a room keeps HISTORY messages: history stops growing
                   within the warm-up)

Usage: bench/soak.py [--minutes N] [--binary PATH] [--out DIR] [--check]
  --minutes N   how long each setup runs (default 30; the test command runs 1.75)
  --binary      the livechat binary (default target/release/livechat)
  --out DIR     where soak.csv and soak.png go (default docs/)
Needs redis-server, and websockets and matplotlib from PyPI (tests/requirements.txt).
"""
import argparse
import asyncio
import csv
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

from common import cpu_seconds, free_port, redis_memory
from compare import Servers
from multinode import resident

ROOT = Path(__file__).resolve().parent.parent
ROOMS = 10
MEMBERS = 60
RATE = 2.0
HISTORY = 60
SAMPLE_EVERY = 10.0
WARMUP_SHARE = 0.25
MARGINS = {"rss": (0.15, 16 * 2**20), "files": (0.0, 16), "redis": (0.20, 8 * 2**20)}


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Setup:
    """One deployment under load: its nodes, its Redis (if any), and what its clients saw."""

    def __init__(self, name, processes, binary, nodes, redis):
        self.name = name
        self.urls = []
        self.pids = []
        self.redis_port = None
        common = ["--history-max-count", str(HISTORY)]
        if redis:
            self.redis_port = free_port()
            directory = tempfile.mkdtemp(prefix="redis-", dir=processes.scratch)
            processes.start(f"{name}-redis", ["redis-server", "--port", str(self.redis_port),
                                              "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                              "yes", "--appendfsync", "everysec", "--dir", directory],
                            self.redis_port)
            common += ["--redis-url", f"redis://127.0.0.1:{self.redis_port}/"]
        for index in range(nodes):
            port = free_port()
            data = tempfile.mkdtemp(prefix=f"{name}-{index}-", dir=processes.scratch)
            pid = processes.start(f"{name}-node{index}",
                                      [str(binary), "--bind", f"127.0.0.1:{port}", "--data-dir", data,
                                       *common], port)
            self.urls.append(f"ws://127.0.0.1:{port}")
            self.pids.append(pid)
        self.latencies = []
        self.counts = {"delivered": 0, "published": 0, "resumes": 0, "errors": 0, "lost": 0,
                       "doubled": 0}
        self.problems = []

    def problem(self, kind, what):
        self.counts[kind] += 1
        if len(self.problems) < 20:
            self.problems.append(what)

    def url(self, room, query=""):
        return f"{random.choice(self.urls)}/ws/chat/soak{room}/?meta=1{query}"


async def publisher(setup, room, until):
    interval = 1.0 / RATE
    sent = 0
    while time.monotonic() < until:
        try:
            async with websockets.connect(setup.url(room), max_queue=None) as socket_:
                next_at = time.monotonic()
                while time.monotonic() < until:
                    await socket_.send(json.dumps({"message": {"n": sent, "t": time.time()}}))
                    sent += 1
                    setup.counts["published"] += 1
                    next_at += interval
                    delay = next_at - time.monotonic()
                    # Drain our own echoes (and anything else) while waiting for the next turn.
                    while delay > 0:
                        try:
                            frame = json.loads(await asyncio.wait_for(socket_.recv(), delay))
                        except asyncio.TimeoutError:
                            break
                        if "error" in frame:
                            setup.problem("errors", f"publisher {room}: {frame}")
                        delay = next_at - time.monotonic()
        except (OSError, websockets.ConnectionClosed) as error:
            setup.problem("errors", f"publisher {room}: {error!r}")
            await asyncio.sleep(0.5)


async def member(setup, number, until):
    room = number % ROOMS
    name = f"m{number}"
    last = None
    await asyncio.sleep(random.uniform(0, 3))
    while time.monotonic() < until:
        query = f"&presence=1&name={name}"
        # What a resume replays was sent while this member was away: not a latency.
        live = last is None
        if last is not None:
            query += f"&since={last}"
            setup.counts["resumes"] += 1
        stay = time.monotonic() + random.uniform(3, 15)
        typing_at = time.monotonic() + random.uniform(1, 5)
        try:
            async with websockets.connect(setup.url(room, query), max_queue=None) as socket_:
                while (now := time.monotonic()) < min(stay, until):
                    if now >= typing_at:
                        await socket_.send('{"typing": true}')
                        typing_at = now + random.uniform(2, 8)
                    try:
                        text = await asyncio.wait_for(socket_.recv(), min(stay, until, typing_at) - now)
                    except asyncio.TimeoutError:
                        continue
                    frame = json.loads(text)
                    if "id" in frame and "message" in frame:
                        id_ = frame["id"]
                        if last is not None and id_ <= last:
                            setup.problem("doubled", f"{name}: {id_} after {last}")
                            continue
                        if last is not None and id_ != last + 1:
                            setup.problem("lost", f"{name}: {id_} after {last}")
                        last = id_
                        setup.counts["delivered"] += 1
                        sent = frame["message"].get("t") if isinstance(frame["message"], dict) else None
                        if sent is not None and live:
                            setup.latencies.append(time.time() - sent)
                    elif frame.get("event") == "caught_up":
                        live = True
                    elif frame.get("event") in ("gap", "reset"):
                        setup.problem("lost", f"{name}: {frame}")
                    elif "error" in frame:
                        setup.problem("errors", f"{name}: {frame}")
        except (OSError, websockets.ConnectionClosed, websockets.InvalidStatus) as error:
            setup.problem("errors", f"{name}: {error!r}")
        await asyncio.sleep(random.uniform(0.2, 1.0))


def p99(values):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def sampler(setups, started, samples, rows):
    """Every SAMPLE_EVERY: each node's memory, files and CPU share (of one core) since the last
    sample, and this load generator's own CPU share beside them."""
    used = {pid: cpu_seconds(pid) for setup in setups for pid in setup.pids}
    used[os.getpid()] = cpu_seconds(os.getpid())
    for sample in range(1, samples + 1):
        await asyncio.sleep(max(0.0, started + sample * SAMPLE_EVERY - time.monotonic()))
        elapsed = time.monotonic() - started
        share = {}
        for pid in used:
            now = cpu_seconds(pid)
            share[pid] = round(100 * (now - used[pid]) / SAMPLE_EVERY, 1)
            used[pid] = now
        for setup in setups:
            latencies, setup.latencies = setup.latencies, []
            redis = redis_memory(setup.redis_port) if setup.redis_port else ""
            for index, pid in enumerate(setup.pids):
                rows.append({"elapsed_s": round(elapsed, 1), "setup": setup.name, "node": index,
                             "rss_bytes": resident(pid), "open_files": open_files(pid),
                             "redis_bytes": redis, "p99_ms": round(p99(latencies) * 1000, 2),
                             "cpu_percent": share[pid], "generator_cpu_percent": share[os.getpid()],
                             **setup.counts})
            print(f"{elapsed:6.0f} s {setup.name:9} rss " +
                  " ".join(f"{resident(pid) / 2**20:.1f}" for pid in setup.pids) + " MiB, files " +
                  " ".join(str(open_files(pid)) for pid in setup.pids) +
                  (f", redis {redis / 2**20:.1f} MiB" if redis != "" else "") +
                  f", p99 {p99(latencies) * 1000:.1f} ms, cpu " +
                  " ".join(f"{share[pid]:.0f}%" for pid in setup.pids) +
                  f" (generator {share[os.getpid()]:.0f}%), {setup.counts}", flush=True)


async def soak(setups, minutes):
    started = time.monotonic()
    samples = max(1, int(minutes * 60 / SAMPLE_EVERY))
    # The load goes on a little past the last sample, so that every sample sees it whole.
    until = started + samples * SAMPLE_EVERY + 1
    rows = []
    tasks = [asyncio.create_task(sampler(setups, started, samples, rows))]
    for setup in setups:
        tasks += [asyncio.create_task(publisher(setup, room, until)) for room in range(ROOMS)]
        tasks += [asyncio.create_task(member(setup, n, until)) for n in range(MEMBERS)]
    await asyncio.gather(*tasks)
    return rows


def write_csv(rows, path):
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows, path, minutes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    series = sorted({(row["setup"], row["node"]) for row in rows})
    for setup, node in series:
        mine = [row for row in rows if row["setup"] == setup and row["node"] == node]
        x = [row["elapsed_s"] / 60 for row in mine]
        label = f"{setup} node {node}"
        axes[0].plot(x, [row["rss_bytes"] / 2**20 for row in mine], label=label)
        axes[1].plot(x, [row["open_files"] for row in mine], label=label)
        if node == 0:
            if mine[0]["redis_bytes"] != "":
                axes[2].plot(x, [row["redis_bytes"] / 2**20 for row in mine], label=setup)
            axes[3].plot(x, [row["p99_ms"] for row in mine], label=setup)
    for axis, title in zip(axes, ["resident memory (MiB)", "open files",
                                  "Redis used memory (MiB)", "publish-to-receive p99 (ms)"]):
        axis.set_ylabel(title)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[-1].set_xlabel("minutes")
    figure.suptitle(f"livechat soak: {minutes:g} minutes, {ROOMS} rooms x {MEMBERS} churning members, "
                    f"{RATE:g} msg/s per room")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def growth(rows, minutes):
    """What grew beyond its margin after the warm-up; a list of sentences."""
    warmup = min(max(minutes * 60 * WARMUP_SHARE, 30), 300)
    failures = []
    for setup, node in sorted({(row["setup"], row["node"]) for row in rows}):
        mine = [row for row in rows if row["setup"] == setup and row["node"] == node]
        after = [row for row in mine if row["elapsed_s"] >= warmup]
        if len(after) < 4:
            failures.append(f"{setup} node {node}: too few samples after the warm-up")
            continue
        for key, column in [("rss", "rss_bytes"), ("files", "open_files"), ("redis", "redis_bytes")]:
            if key == "redis" and (node != 0 or after[0][column] == ""):
                continue
            base = statistics.median(row[column] for row in after[:3])
            end = statistics.median(row[column] for row in mine[-3:])
            share, least = MARGINS[key]
            allowed = base + max(base * share, least)
            verdict = "ok" if end <= allowed else "GREW"
            print(f"{setup} node {node} {key}: {base:.0f} after the warm-up, {end:.0f} at the end, "
                  f"at most {allowed:.0f}: {verdict}")
            if end > allowed:
                failures.append(f"{setup} node {node}: {key} grew from {base:.0f} to {end:.0f} "
                                f"(at most {allowed:.0f})")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "livechat"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--check", action="store_true")
    options = parser.parse_args()
    # SIGTERM (a timeout, a CI runner) stops the servers this started, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    Path(options.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        processes = Servers(scratch, pinned=False)
        try:
            setups = [Setup("embedded", processes, options.binary, 1, redis=False),
                      Setup("redis", processes, options.binary, 2, redis=True)]
            running = list(processes.processes)
            rows = asyncio.run(soak(setups, options.minutes))
        finally:
            processes.stop()
        crashed = [p.args[0] for p in running if p.returncode not in (0, None)]
    write_csv(rows, Path(options.out) / "soak.csv")
    plot(rows, Path(options.out) / "soak.png", options.minutes)
    failures = growth(rows, options.minutes)
    for setup in setups:
        print(f"{setup.name}: {setup.counts}")
        for problem in setup.problems:
            print(f"  {problem}")
        for kind in ("errors", "lost", "doubled"):
            if setup.counts[kind]:
                failures.append(f"{setup.name}: {setup.counts[kind]} {kind}")
        if setup.counts["delivered"] == 0:
            failures.append(f"{setup.name}: nothing delivered")
    if crashed:
        failures.append(f"processes that did not exit cleanly: {crashed}")
    print(f"wrote {Path(options.out) / 'soak.csv'} and soak.png")
    if options.check and failures:
        print("soak failed:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
