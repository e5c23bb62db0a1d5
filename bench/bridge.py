#!/usr/bin/env python3
"""What the Django Channels layer bridge costs: messages per second through one room, both ways.

Starts a redis-server and a release build of livechat (embedded engine, SQLite in a temporary
directory) with LIVECHAT_CHANNELS_LAYER on that Redis, then:

- layer -> livechat: the app's `group_send` (channels_redis, CONCURRENCY sends in flight) of
  MESSAGES messages to the room's group; timed until a WebSocket client of livechat in the room
  has received them all;
- livechat -> layer: a WebSocket client sends MESSAGES messages; timed until livechat has sent them
  all to the group (`livechat_channels_sent_total`) and the app's consumer channel holds them all
  (ZCARD; its capacity raised so that none is refused);
- the same WebSocket publishing with the bridge off, for the difference;
- the bridge's own pace into livechat: messages already waiting in its channel (another holder
  keeps the reading lease while they are added), timed from the first a client receives to the
  last.

Prints a Markdown table for docs/benchmarks.md with livechat's CPU time per message (user +
system, from /proc) and the generator's, so that a generator that cannot keep up shows.
Needs the test virtualenv of tests/channels (channels_redis, websockets):

    cargo build --release
    target/channels-venv/bin/python bench/bridge.py [--messages 20000]
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

from channels_redis.core import RedisChannelLayer
from websockets.asyncio.client import connect

from common import cpu_seconds, free_port  # bench/common.py, beside this one

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "livechat")
ROOM = "bench"
GROUP = f"chat_{ROOM}"


def wait_for(condition, what, deadline=120.0):
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            sys.exit(f"waited {deadline:.0f} s for {what}")
        time.sleep(0.01)


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


class Livechat:
    def __init__(self, binary, redis_port, bridge, workdir):
        self.port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "LIVECHAT_BIND": f"127.0.0.1:{self.port}",
            "LIVECHAT_DATA_DIR": os.path.join(workdir, f"data-{self.port}"),
            "LIVECHAT_LOG": "warn",
            "LIVECHAT_MAX_CONNECTIONS": "100",
        }
        if bridge:
            env |= {
                "LIVECHAT_CHANNELS_LAYER": f"redis://127.0.0.1:{redis_port}/",
                "LIVECHAT_CHANNELS_ROOMS": ROOM,
                "LIVECHAT_CHANNELS_CAPACITY": "1000000",
            }
        self.process = subprocess.Popen([binary], env=env, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.ready(), "livechat to be ready")

    def ready(self):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status == 200
        except OSError:
            return False

    def metric(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


async def receive(socket, count):
    for _ in range(count):
        await socket.recv()


async def layer_to_livechat(livechat, redis_port, messages, concurrency):
    app = RedisChannelLayer(
        hosts=[f"redis://127.0.0.1:{redis_port}/"], channel_capacity={"livechat!*": 1_000_000}
    )
    wait_for(lambda: "livechat!" + GROUP in redis_cli(redis_port, "ZRANGE", f"asgi:group:{GROUP}", "0", "-1"),
             "the bridge in the group")
    async with connect(f"ws://127.0.0.1:{livechat.port}/ws/chat/{ROOM}/", max_queue=None, compression=None) as ws:
        cpu, mine, started = cpu_seconds(livechat.process.pid), own_cpu(), time.monotonic()
        receiving = asyncio.create_task(receive(ws, messages))
        sent = 0
        while sent < messages:
            batch = min(concurrency, messages - sent)
            await asyncio.gather(*(
                app.group_send(GROUP, {"type": "chat.message", "message": {"n": sent + n, "text": "x" * 64}})
                for n in range(batch)
            ))
            sent += batch
        await receiving
        elapsed = time.monotonic() - started
        return elapsed, cpu_seconds(livechat.process.pid) - cpu, own_cpu() - mine


async def drain(livechat, redis_port, messages):
    """The bridge's own pace: MESSAGES bodies (sealed by channels_redis) wait in livechat's
    channel while another holder keeps the reading lease; then the lease is freed, and the time
    from the first message a WebSocket client receives to the last is livechat's."""
    app = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{redis_port}/"])
    redis_cli(redis_port, "SET", "asgilivechat!$lease", "someone else", "PX", "600000")
    async with connect(f"ws://127.0.0.1:{livechat.port}/ws/chat/{ROOM}/", max_queue=None, compression=None) as ws:
        connection = app.connection(0)
        for start in range(0, messages, 1000):
            pipe = connection.pipeline()
            for n in range(start, min(start + 1000, messages)):
                _, body, _ = app._map_channel_keys_to_connection(
                    [f"livechat!{GROUP}"], {"type": "chat.message", "message": {"n": n, "text": "x" * 64}}
                )
                pipe.zadd("asgilivechat!", {list(body.values())[0]: time.time()})
            await pipe.execute()
        cpu = cpu_seconds(livechat.process.pid)
        redis_cli(redis_port, "DEL", "asgilivechat!$lease")
        await ws.recv()
        mine, started = own_cpu(), time.monotonic()
        await receive(ws, messages - 1)
        elapsed = time.monotonic() - started
        return elapsed, cpu_seconds(livechat.process.pid) - cpu, own_cpu() - mine


async def livechat_to_layer(livechat, redis_port, messages, bridged):
    if bridged:
        redis_cli(redis_port, "ZADD", f"asgi:group:{GROUP}", "1e12", "bench.reader")
        redis_cli(redis_port, "DEL", "asgibench.reader")
    async with connect(f"ws://127.0.0.1:{livechat.port}/ws/chat/{ROOM}/", max_queue=None, compression=None) as ws:
        before = livechat.metric("livechat_channels_sent_total{outcome=\"sent\"}")
        cpu, mine, started = cpu_seconds(livechat.process.pid), own_cpu(), time.monotonic()
        receiving = asyncio.create_task(receive(ws, messages))
        for n in range(messages):
            await ws.send(json.dumps({"message": {"n": n, "text": "x" * 64}}))
        await receiving
        if bridged:
            await asyncio.to_thread(
                wait_for,
                lambda: livechat.metric("livechat_channels_sent_total{outcome=\"sent\"}") - before >= messages,
                "every message sent to the layer",
            )
        elapsed = time.monotonic() - started
        result = elapsed, cpu_seconds(livechat.process.pid) - cpu, own_cpu() - mine
    if bridged:
        held = int(redis_cli(redis_port, "ZCARD", "asgibench.reader"))
        assert held == messages, f"the app's consumer holds {held} of {messages}"
    return result


def row(what, messages, result):
    elapsed, cpu, generator = result
    return (f"| {what} | {messages:,} | {messages / elapsed:,.0f} | {cpu / messages * 1e6:,.0f} µs "
            f"| {generator / elapsed * 100:.0f}% |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--binary", default=BINARY, help="the livechat binary (default: the release build)")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary} is missing: cargo build --release")
    with tempfile.TemporaryDirectory() as workdir:
        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: redis_cli(redis_port, "PING") == "PONG", "redis-server")
            plain = Livechat(args.binary, redis_port, False, workdir)
            without = asyncio.run(livechat_to_layer(plain, redis_port, args.messages, False))
            plain.stop()
            bridged = Livechat(args.binary, redis_port, True, workdir)
            inbound = asyncio.run(layer_to_livechat(bridged, redis_port, args.messages, args.concurrency))
            drained = asyncio.run(drain(bridged, redis_port, args.messages))
            outbound = asyncio.run(livechat_to_layer(bridged, redis_port, args.messages, True))
            bridged.stop()
        finally:
            redis.terminate()
            redis.wait()
    print("| path | messages | messages/s | livechat CPU per message | generator CPU |")
    print("|---|---|---|---|---|")
    print(row("WebSocket publish, bridge off (the baseline)", args.messages, without))
    print(row("WebSocket publish -> livechat -> the layer (the app's consumer channel)", args.messages, outbound))
    print(row(f"the app's `group_send` ({args.concurrency} in flight) -> the layer -> livechat -> a WebSocket client",
              args.messages, inbound))
    print(row("the layer (messages waiting) -> livechat -> a WebSocket client", args.messages, drained))


if __name__ == "__main__":
    main()
