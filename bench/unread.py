#!/usr/bin/env python3
"""How long GET /chat/unread/ takes for a user with read positions in many rooms.

Starts a release build of livechat (embedded engine with its SQLite history, then the Redis
engine on a redis-server of its own), writes MESSAGES messages in each of ROOMS rooms, gives one
user a read position in each, then times REQUESTS calls of GET /chat/unread/ on one keep-alive
connection, and prints a Markdown table for docs/benchmarks.md.

    cargo build --release
    python3 bench/unread.py [--rooms 1000] [--messages 5] [--requests 200]
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import free_port, wait_listening  # bench/common.py, beside this one

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "livechat")


class Client:
    def __init__(self, port):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None):
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        self.connection.request(method, path, body=payload, headers=headers)
        answer = self.connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            sys.exit(f"{method} {path}: {answer.status} {data[:200]!r}")
        return json.loads(data)


def measure(port, rooms, messages, requests):
    client = Client(port)
    for room in range(rooms):
        for n in range(messages):
            client.call("POST", "/chat/send/?name=writer", {"room": f"r{room}", "message": n})
        client.call("POST", "/chat/read/?name=reader", {"room": f"r{room}", "id": messages // 2})
    answer = client.call("GET", "/chat/unread/?name=reader")
    assert len(answer["rooms"]) == rooms, len(answer["rooms"])
    expected = messages - messages // 2
    assert all(room["unread"] == expected for room in answer["rooms"])
    took = []
    for _ in range(requests):
        start = time.perf_counter()
        client.call("GET", "/chat/unread/?name=reader")
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return {
        "p50": statistics.median(took),
        "p99": took[min(len(took) - 1, int(len(took) * 0.99))],
        "max": took[-1],
        "bytes": len(json.dumps(answer)),
    }


def run_embedded(args):
    data = tempfile.mkdtemp(prefix="lc-unread-")
    port = free_port()
    server = subprocess.Popen(
        [BINARY, "--bind", f"127.0.0.1:{port}", "--data-dir", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, server, "livechat")
        return measure(port, args.rooms, args.messages, args.requests)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def run_redis(args):
    data = tempfile.mkdtemp(prefix="lc-unread-redis-")
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--save", "", "--dir", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = None
    try:
        wait_listening(redis_port, redis, "redis-server")
        server = subprocess.Popen(
            [BINARY, "--bind", f"127.0.0.1:{port}", "--data-dir", data,
             "--redis-url", f"redis://127.0.0.1:{redis_port}/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_listening(port, server, "livechat")
        return measure(port, args.rooms, args.messages, args.requests)
    finally:
        for process in (server, redis):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if not os.path.exists(BINARY):
        sys.exit("build it first: cargo build --release")
    rows = [("embedded (SQLite)", run_embedded(args))]
    if shutil.which("redis-server"):
        rows.append(("Redis", run_redis(args)))
    print(f"| engine | rooms with a read position | answer | p50 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for engine, figures in rows:
        print(
            f"| {engine} | {args.rooms:,} | {figures['bytes'] / 1024:.0f} KiB "
            f"| {figures['p50']:.1f} ms | {figures['p99']:.1f} ms | {figures['max']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
