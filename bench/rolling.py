#!/usr/bin/env python3
"""A rolling restart: three livechat nodes on one Redis behind nginx (deploy/nginx/livechat.conf,
its upstreams and port replaced), CLIENTS clients chatting through nginx in ROOMS rooms; each node
in turn gets SIGTERM, is started again on its port and is ready (/readyz) before the next.

Each client does what the chat page does: it connects with `meta=1` (and after a drop with
`since=` its last id and `epoch=`), sends a message every few seconds with a nonce, takes a
message as acknowledged when its own copy comes back with an id, and after a close sends again,
with the same nonce, whatever was not acknowledged. It reconnects after the page's backoff:
500 ms doubling to 5 s, each wait drawn from half to one and a half times that (--no-jitter:
the wait itself, as the page did before).

Checked at the end (exit 1 with --check when not): every client received every message of its
room from its first one on exactly once and in order (as history has them), every acknowledged
message is in history once, and every message sent was stored once.
Measured: each client's reconnect time (from the close to `caught_up`), and the handshakes per
second the survivors took while a node was away (the busiest 100 ms, as a rate, and the busiest
second).

Usage: bench/rolling.py [--clients N] [--binary PATH] [--no-jitter] [--check] [--logs DIR]
Needs redis-server, nginx and websockets (tests/requirements.txt).
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import websockets

from common import free_port
from compare import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ROOMS = 10
NODES = 3
SEND_EVERY = (2.0, 6.0)
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


def nginx_config(directory, listen, upstreams):
    """The project's site file with these upstreams and port, and a main file around it."""
    site = (ROOT / "deploy" / "nginx" / "livechat.conf").read_text()
    lines = []
    for line in site.splitlines():
        stripped = line.strip()
        if stripped.startswith("server 127.0.0.1:"):
            continue
        if stripped == "upstream livechat {":
            lines.append(line)
            lines += [f"    server 127.0.0.1:{port};" for port in upstreams]
            continue
        if stripped == "listen 80;":
            line = f"    listen 127.0.0.1:{listen};"
        if stripped.startswith("access_log /var/log/nginx/"):
            line = f"    access_log {directory}/access.log livechat_no_query;"
        lines.append(line)
    (Path(directory) / "site.conf").write_text("\n".join(lines) + "\n")
    (Path(directory) / "nginx.conf").write_text(
        f"user root;\nworker_processes 1;\npid {directory}/nginx.pid;\nerror_log {directory}/error.log warn;\n"
        f"events {{ worker_connections 4096; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {directory}/body;\n"
        f"  proxy_temp_path {directory}/proxy;\n  fastcgi_temp_path {directory}/fastcgi;\n"
        f"  uwsgi_temp_path {directory}/uwsgi;\n  scgi_temp_path {directory}/scgi;\n"
        f"  include {directory}/site.conf;\n}}\n")
    return Path(directory) / "nginx.conf"


class Node:
    def __init__(self, binary, scratch, index, redis_url):
        self.port = free_port()
        self.command = [str(binary), "--bind", f"127.0.0.1:{self.port}",
                        "--data-dir", tempfile.mkdtemp(prefix=f"node{index}-", dir=scratch),
                        "--redis-url", redis_url, "--trusted-proxies", "127.0.0.1/32",
                        "--node-ttl", "3s"]
        self.log = Path(scratch) / f"node{index}.log"
        self.index = index
        self.process = None

    def start(self):
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, f"node {self.index}", self.process, self.log)

    def ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


class Client:
    def __init__(self, number, url, jitter, log):
        self.room = f"roll{number % ROOMS}"
        self.url = url
        self.jitter = jitter
        self.log = log
        self.name = f"c{number}"
        self.last = 0
        self.epoch = None
        self.caught_up = False
        self.joined = False
        self.dropped = None
        self.received = []  # ids, in the order received
        self.pending = {}  # nonce -> text, not acknowledged yet
        self.acknowledged = {}  # nonce -> id
        self.sent = 0
        self.reconnects = []  # seconds from a close to caught_up
        self.doubled = 0
        self.errors = []
        self.stopping = False
        self.quiet = False

    def wait(self, retry):
        return retry / 2 + random.random() * retry if self.jitter else retry

    async def run(self, connected):
        retry = RETRY_FIRST
        while not self.stopping:
            # From the room's first message on: every client must end with the room's history.
            query = f"?meta=1&since={self.last}" + (f"&epoch={self.epoch}" if self.epoch else "")
            try:
                async with websockets.connect(f"{self.url}/ws/chat/{self.room}/{query}",
                                              max_queue=None, open_timeout=10) as socket_:
                    self.log.append(time.monotonic())
                    await self.talk(socket_, connected)
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
                    websockets.ConnectionClosed):
                pass
            if self.stopping:
                return
            if self.caught_up:
                # Dropped after it was live: the backoff starts again.
                self.caught_up = False
                self.dropped = time.monotonic()
                retry = RETRY_FIRST
            else:
                retry = min(retry * 2, RETRY_MAX)
            await asyncio.sleep(self.wait(retry))

    async def flush(self, socket_):
        for nonce, text in self.pending.items():
            await socket_.send(json.dumps({"message": text, "nonce": nonce}))

    async def talk(self, socket_, connected):
        next_send = time.monotonic() + random.uniform(*SEND_EVERY)
        while not self.stopping:
            timeout = max(0.0, next_send - time.monotonic())
            try:
                text = await asyncio.wait_for(socket_.recv(), timeout)
            except asyncio.TimeoutError:
                next_send = time.monotonic() + random.uniform(*SEND_EVERY)
                if self.quiet:
                    continue
                nonce = str(uuid.uuid4())
                self.pending[nonce] = f"{self.name} {self.sent}"
                self.sent += 1
                await socket_.send(json.dumps({"message": self.pending[nonce], "nonce": nonce}))
                continue
            frame = json.loads(text)
            if frame.get("event") == "caught_up":
                self.epoch = frame.get("epoch", self.epoch)
                if not self.joined:
                    self.joined = True
                    connected.release()
                if self.dropped is not None:
                    self.reconnects.append(time.monotonic() - self.dropped)
                    self.dropped = None
                self.caught_up = True
                await self.flush(socket_)
            elif frame.get("event") in ("gap", "reset"):
                self.errors.append(f"{self.name}: {frame}")
            elif "error" in frame:
                if frame.get("nonce") not in self.pending:
                    self.errors.append(f"{self.name}: {frame}")
                # A refused publish (Redis away) stays pending and goes again after a reconnect.
            elif "id" in frame:
                nonce = frame.get("nonce")
                mine = nonce in self.pending or nonce in self.acknowledged
                if frame["id"] <= self.last:
                    if not mine:
                        self.doubled += 1
                        self.errors.append(f"{self.name}: {frame['id']} after {self.last}")
                else:
                    self.last = frame["id"]
                    self.received.append(frame["id"])
                if nonce in self.pending:
                    del self.pending[nonce]
                    self.acknowledged[nonce] = frame["id"]


def history(url, room):
    with urllib.request.urlopen(f"{url}/chat/history/?room={room}&limit=1000", timeout=10) as answer:
        return json.load(answer)["chat_history"]


def rates(times, start, end):
    """The busiest 100 ms (as handshakes/s) and the busiest second within [start, end]."""
    inside = sorted(t for t in times if start <= t <= end)
    busiest_tenth = busiest_second = 0
    j = k = 0
    for i, t in enumerate(inside):
        while inside[j] < t - 0.1:
            j += 1
        while inside[k] < t - 1.0:
            k += 1
        busiest_tenth = max(busiest_tenth, i - j + 1)
        busiest_second = max(busiest_second, i - k + 1)
    return busiest_tenth * 10, busiest_second, len(inside)


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


async def rolling(options, scratch):
    redis_port = free_port()
    nodes = [Node(options.binary, scratch, index, f"redis://127.0.0.1:{redis_port}/")
             for index in range(NODES)]
    redis = nginx = None
    clients, tasks = [], []
    try:
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                                  "--dir", scratch], stdout=open(Path(scratch) / "redis.log", "w"))
        wait_for_port(redis_port, "redis-server", redis, Path(scratch) / "redis.log")
        for node in nodes:
            node.start()
        listen = free_port()
        config = nginx_config(scratch, listen, [node.port for node in nodes])
        nginx = subprocess.Popen(["nginx", "-p", scratch, "-c", str(config), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        wait_for_port(listen, "nginx", nginx, Path(scratch) / "error.log")
        handshakes = []
        clients = [Client(n, f"ws://127.0.0.1:{listen}", not options.no_jitter, handshakes)
                   for n in range(options.clients)]
        connected = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(client.run(connected)) for client in clients]
        for _ in clients:
            await asyncio.wait_for(connected.acquire(), 60)
        print(f"{len(clients)} clients connected through nginx to {NODES} nodes", flush=True)
        await asyncio.sleep(5)
        windows = []
        for node in nodes:
            away = time.monotonic()
            # Off the event loop: the clients must go on reading (and answer the close) meanwhile.
            status = await asyncio.to_thread(node.stop)
            if status != 0:
                raise SystemExit(f"node {node.index} exited with {status} after SIGTERM")
            stopped = time.monotonic()
            await asyncio.to_thread(node.start)
            while not await asyncio.to_thread(node.ready):
                await asyncio.sleep(0.05)
            back = time.monotonic()
            # The node's clients come back on the survivors within the backoff's longest waits.
            await asyncio.sleep(6)
            windows.append((node.index, away, back, stopped - away, back - stopped))
            print(f"node {node.index}: SIGTERM to exit {stopped - away:.2f} s, "
                  f"start to ready {back - stopped:.2f} s", flush=True)
        await asyncio.sleep(5)
        # Nothing new is sent; everything sent is acknowledged and delivered before the end.
        for client in clients:
            client.quiet = True
        deadline = time.monotonic() + 30
        while any(client.pending for client in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        stored = {f"roll{room}": history(f"http://127.0.0.1:{nodes[0].port}", f"roll{room}")
                  for room in range(ROOMS)}
    finally:
        for client in clients:
            client.stopping = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.stop()
        if nginx is not None:
            os.killpg(nginx.pid, signal.SIGTERM)
            nginx.wait()
        if redis is not None:
            redis.terminate()
            redis.wait()
    return clients, handshakes, windows, stored


def check(clients, stored):
    """What went wrong: a list of sentences."""
    problems = []
    by_room = {room: [m["id"] for m in messages] for room, messages in stored.items()}
    texts = {}
    for room, messages in stored.items():
        for message in messages:
            texts.setdefault((room, message.get("nonce")), []).append(message["id"])
    for client in clients:
        ids = by_room[client.room]
        if client.received:
            start = ids.index(client.received[0]) if client.received[0] in ids else None
            if start is None or client.received != ids[start:]:
                problems.append(f"{client.name}: received {len(client.received)} ids, not history's "
                                f"run from its first one")
        if client.pending:
            problems.append(f"{client.name}: {len(client.pending)} messages never acknowledged")
        for nonce, id_ in client.acknowledged.items():
            if texts.get((client.room, nonce)) != [id_]:
                problems.append(f"{client.name}: acknowledged {id_} stored as {texts.get((client.room, nonce))}")
        problems += client.errors[:3]
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "livechat"))
    parser.add_argument("--no-jitter", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--logs", help="copy the nodes' and nginx's logs into this directory")
    options = parser.parse_args()
    # SIGTERM (a timeout, a CI runner) stops the servers this started, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="rolling-") as scratch:
        clients, handshakes, windows, stored = asyncio.run(rolling(options, scratch))
        if options.logs:
            shutil.copytree(scratch, options.logs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("appendonlydir", "node*-*"))
    reconnects = [t for client in clients for t in client.reconnects]
    sent = sum(client.sent for client in clients)
    print(f"\n{len(clients)} clients, {sent} messages sent, "
          f"{sum(len(m) for m in stored.values())} stored, {len(reconnects)} reconnects, "
          f"jitter {'off' if options.no_jitter else 'on'}")
    if reconnects:
        print(f"reconnect time (close to caught_up): p50 {percentile(reconnects, 0.5) * 1000:.0f} ms, "
              f"p90 {percentile(reconnects, 0.9) * 1000:.0f} ms, p99 {percentile(reconnects, 0.99) * 1000:.0f} ms, "
              f"max {max(reconnects) * 1000:.0f} ms")
    for index, away, back, exiting, starting in windows:
        peak, second, count = rates(handshakes, away, back + 6)
        print(f"node {index} away: {count} handshakes on the survivors, busiest 100 ms {peak}/s, "
              f"busiest second {second}; SIGTERM to exit {exiting:.2f} s, start to ready {starting:.2f} s")
    problems = check(clients, stored)
    for problem in problems[:30]:
        print(f"  {problem}")
    print("every client got every message once, in order; every acknowledged message stored once"
          if not problems else f"{len(problems)} problems")
    if options.check and problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
