#!/usr/bin/env python3
"""What the app's publish hook costs: messages per second through one room, with and without it.

Starts the hook stand-in (`examples/hook_peer.rs`: answers `{}` after DELAY ms) and a release
build of livechat (embedded engine, its SQLite history) once without LIVECHAT_PUBLISH_HOOK and
once with it, and runs the bench tool against each:
- `http-publish`: POST /chat/send/ into one room over 64 keep-alive connections (each waits for
  its answer, so the hook's latency is in every request);
- `fanout`: one WebSocket publisher into one room of 10 members at a fixed rate (the hook is
  asked for each message, several at once per connection, stored in the order sent).
Prints a Markdown table for docs/benchmarks.md.

    cargo build --release -p livechat -p livechat-bench --bins --examples
    python3 bench/publish_hook.py [--delay-ms 1] [--duration 10s] [--rate 2000]
"""

import argparse
import json
import os
import subprocess
import tempfile

from common import free_port, wait_listening  # bench/common.py, beside this one

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def bench(args, *scenario):
    output = subprocess.run(
        [os.path.join(RELEASE, "livechat-bench"), *scenario],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(hook_url, options):
    port = free_port()
    env = dict(os.environ)
    env.pop("LIVECHAT_PUBLISH_HOOK", None)
    if hook_url:
        env["LIVECHAT_PUBLISH_HOOK"] = hook_url
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [os.path.join(RELEASE, "livechat"), "--bind", f"127.0.0.1:{port}",
             "--data-dir", data_dir],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, server, "livechat")
            url = f"http://127.0.0.1:{port}"
            pid = str(server.pid)
            http = bench(options, "http-publish", "--url", url, "--connections", "64",
                         "--duration", options.duration, "--server-pid", pid)
            fanout = bench(options, "fanout", "--url", url, "--rooms", "1",
                           "--subscribers", "10", "--rate", str(options.rate),
                           "--duration", options.duration, "--server-pid", pid)
        finally:
            server.terminate()
            server.wait()
    return http, fanout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=int, default=1)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--rate", type=int, default=2000)
    options = parser.parse_args()
    hook_port = free_port()
    hook = subprocess.Popen(
        [os.path.join(RELEASE, "examples", "hook_peer"), f"127.0.0.1:{hook_port}",
         str(options.delay_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(hook_port, hook, "hook_peer")
        rows = []
        for name, url in [("no hook", None),
                          (f"hook answering in {options.delay_ms} ms",
                           f"http://127.0.0.1:{hook_port}/publish")]:
            http, fanout = measure(url, options)
            rows.append((name, http, fanout))
    finally:
        hook.terminate()
        hook.wait()
    print("| Publish hook | POST /chat/send/ msg/s (64 conns) | p50 / p99 ms | server CPU s "
          f"| WebSocket {options.rate}/s into 1 room x 10: delivered/s | p50 / p99 ms | lost |")
    print("|---|---|---|---|---|---|---|")
    for name, http, fanout in rows:
        print(f"| {name} | {http['requests_per_s']:,.0f} "
              f"| {http['latency']['p50_ms']:.1f} / {http['latency']['p99_ms']:.1f} "
              f"| {http['server_cpu_s']:.2f} "
              f"| {fanout['deliveries_per_s']:,.0f} "
              f"| {fanout['latency']['p50_ms']:.1f} / {fanout['latency']['p99_ms']:.1f} "
              f"| {fanout['lost']} |")


if __name__ == "__main__":
    main()
