#!/usr/bin/env python3
"""Operating the embedded store at size: `livechat migrate` of ROOMS x MESSAGES messages into
Redis (time, Redis memory), a node's start on that file (the integrity check), and what
`livechat backup` does to a loaded node's latency (p99 with and without backups running).

1. Makes a history file of ROOMS rooms x MESSAGES messages of about SIZE bytes: livechat makes the
   file (schema, epoch), then the rows are written straight into it with Python's sqlite3 (a
   million publishes over the API would measure the load generator, not the migration).
2. Times a start of livechat on it (the file is checked with PRAGMA quick_check first).
3. Migrates it into a fresh redis-server (no persistence): time, used_memory before and after,
   keys; then runs it again (nothing to add) and times that too; then starts a node on Redis and
   compares some rooms' history with the embedded node's answers.
4. Starts livechat on the file and runs livechat-bench fanout and http-publish twice each: once
   alone, once while `livechat backup` runs back to back; prints p50/p99/max and the backups'
   times.

    cargo build --release --workspace
    python3 bench/operations.py [--rooms 1000] [--messages 1000] [--size 64] [--seconds 20]
"""

import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from common import free_port, wait_listening, redis_memory  # bench/common.py, beside this one

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "livechat")
BENCH = os.path.join(ROOT, "target", "release", "livechat-bench")


def start_livechat(args, log):
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [BINARY, "--bind", f"127.0.0.1:{port}", *args],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    wait_listening(port, process, "livechat", deadline=120)
    return process, port, time.monotonic() - started


def stop(process):
    process.terminate()
    process.wait(timeout=60)


def get(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    answer = connection.getresponse()
    body = answer.read()
    if answer.status != 200:
        sys.exit(f"GET {path}: {answer.status} {body[:200]!r}")
    return json.loads(body)


def make_history(data_dir, rooms, messages, size, log):
    """livechat makes the file; the rows go in with sqlite3."""
    process, _, _ = start_livechat(["--data-dir", data_dir], log)
    stop(process)
    path = os.path.join(data_dir, "history.sqlite3")
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    now = int(time.time() * 1000)
    pad = "x" * max(0, size - 20)
    for room in range(rooms):
        name = f"room{room}"
        rows = []
        total = 0
        for n in range(1, messages + 1):
            body = json.dumps(f"{n} {pad}")
            user = json.dumps({"name": f"user{n % 50}"})
            total += len(body) + len(user)
            rows.append((name, n, now - (messages - n) * 10, body, user))
        db.executemany(
            "INSERT INTO messages (room, id, ts, body, user) VALUES (?, ?, ?, ?, ?)", rows
        )
        db.execute(
            "INSERT INTO rooms (room, last_id, bytes) VALUES (?, ?, ?)", (name, messages, total)
        )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return os.path.getsize(path)


def redis_keys(port):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "DBSIZE"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip())


def migrate(data_dir, redis_port):
    started = time.monotonic()
    run = subprocess.run(
        [BINARY, "migrate", "--data-dir", data_dir, "--to", f"redis://127.0.0.1:{redis_port}/"],
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - started
    if run.returncode != 0:
        sys.exit(f"migrate failed: {run.stderr}")
    return took, run.stderr.strip().splitlines()[-1]


def bench(args):
    run = subprocess.run([BENCH, *args], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"livechat-bench {args}: {run.stdout[-500:]} {run.stderr[-500:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def backups_meanwhile(data_dir, target, stop_event, times):
    while not stop_event.is_set():
        started = time.monotonic()
        subprocess.run(
            [BINARY, "backup", "--data-dir", data_dir, "--to", target],
            check=True,
            capture_output=True,
        )
        times.append(time.monotonic() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--build", default="release", help="target/BUILD holds the binaries")
    options = parser.parse_args()
    global BINARY, BENCH
    BINARY = os.path.join(ROOT, "target", options.build, "livechat")
    BENCH = os.path.join(ROOT, "target", options.build, "livechat-bench")
    for binary in (BINARY, BENCH):
        if not os.path.exists(binary):
            sys.exit(f"{binary} missing: cargo build --release --workspace")
    work = tempfile.mkdtemp(prefix="livechat-operations-")
    data_dir = os.path.join(work, "data")
    log = open(os.path.join(work, "livechat.log"), "w")
    total = options.rooms * options.messages
    try:
        started = time.monotonic()
        file_bytes = make_history(data_dir, options.rooms, options.messages, options.size, log)
        print(f"history: {options.rooms} rooms x {options.messages} messages = {total:,}, "
              f"{file_bytes / 2**20:.0f} MiB, written in {time.monotonic() - started:.1f} s")

        process, port, start_took = start_livechat(["--data-dir", data_dir], log)
        print(f"start on it (quick_check included): {start_took:.2f} s to listening")
        sample = random.Random(7).sample(range(options.rooms), min(5, options.rooms))
        embedded = {room: get(port, f"/chat/history/?room=room{room}&limit=1000") for room in sample}
        stop(process)

        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_listening(redis_port, redis, "redis-server")
        try:
            before = redis_memory(redis_port)
            took, said = migrate(data_dir, redis_port)
            after = redis_memory(redis_port)
            keys = redis_keys(redis_port)
            print(f"migrate: {took:.1f} s ({total / took:,.0f} messages/s); Redis used_memory "
                  f"{(after - before) / 2**20:.0f} MiB for {keys:,} keys "
                  f"({(after - before) / total:.0f} B per message); {said}")
            again, said = migrate(data_dir, redis_port)
            print(f"migrate again (idempotent): {again:.1f} s; {said}")
            node, node_port, _ = start_livechat(
                ["--redis-url", f"redis://127.0.0.1:{redis_port}/", "--data-dir", work], log)
            for room, answer in embedded.items():
                on_redis = get(node_port, f"/chat/history/?room=room{room}&limit=1000")
                assert on_redis == answer, f"room{room} differs on Redis"
            print(f"a node on Redis serves the same history ({len(embedded)} rooms compared)")
            stop(node)
        finally:
            redis.terminate()
            redis.wait()

        process, port, _ = start_livechat(["--data-dir", data_dir], log)
        url = f"http://127.0.0.1:{port}"
        duration = f"{options.seconds}s"
        workloads = {
            "fanout 10 x 100, 200 msg/s per room": [
                "--url", url, "fanout", "--rooms", "10", "--subscribers", "100", "--rate", "200",
                "--duration", duration],
            "POST /chat/send/, 16 connections": [
                "--url", url, "http-publish", "--connections", "16", "--duration", duration],
        }
        target = os.path.join(work, "backup.sqlite3")
        print("| workload | backups | p50 ms | p99 ms | max ms | rate |")
        print("|---|---|---|---|---|---|")
        for name, args in workloads.items():
            for with_backups in (False, True):
                stop_event = threading.Event()
                times = []
                copier = threading.Thread(
                    target=backups_meanwhile, args=(data_dir, target, stop_event, times))
                if with_backups:
                    copier.start()
                result = bench(args)
                stop_event.set()
                if with_backups:
                    copier.join()
                latency = result["latency"]
                rate = result.get("requests_per_s") or result.get("deliveries_per_s") or ""
                if isinstance(rate, float):
                    rate = f"{rate:,.0f}/s"
                backups = (f"{len(times)} back to back, {min(times):.1f}-{max(times):.1f} s each"
                           if times else "none")
                print(f"| {name} | {backups} | {latency['p50_ms']} | {latency['p99_ms']} | "
                      f"{latency['max_ms']} | {rate} |")
        stop(process)
    finally:
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
