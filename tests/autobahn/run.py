"""The Autobahn|Testsuite fuzzing client (PyPI `kosoku`) against an echo server built on livechat's
own WebSocket layer (crates/livechat/examples/ws_echo.rs), the compression cases (12.*, 13.*,
permessage-deflate) included: the echo agrees to what the server agrees to and compresses its
replies as a room frame is compressed. Prints the count per behaviour and fails on any case that is
not OK, NON-STRICT or INFORMATIONAL. An offer livechat declines (an 8-bit window asked of the
server) would end in a clean handshake without the extension, which the suite reports as
UNIMPLEMENTED (none of the 13.* offers asks for that). The largest compression sizes are left out
for time (see LARGE_COMPRESSION_CASES).
The echo is the debug build (the compression library is optimised in debug builds too: see the
workspace's Cargo.toml), so that the test command builds nothing more for it.
Usage: python tests/autobahn/run.py   (from the repository root; builds the example if needed)"""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# The compression cases send 1,000 messages each; those of 32 KiB to 128 KiB (sub-cases 8-10 and
# 13-18 of every 12.x and 13.x) are left out to keep the test command within its time: all 216
# compression cases did not finish in 10 minutes here (2 shared cores), the 108 kept run with
# the rest of the suite in about 55 s (409 cases). The sizes run (16 B to 16 KiB, whole and
# fragmented at 256 bytes) cover every offer of 13.* and every framing path.
LARGE_COMPRESSION_CASES = [
    arg
    for group in ("12", "13")
    for sub in (8, 9, 10, 13, 14, 15, 16, 17, 18)
    for arg in ("-x", f"{group}.*.{sub}")
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the echo server exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the echo server did not listen in time")


def main() -> None:
    subprocess.run(
        ["cargo", "build", "-p", "livechat", "--example", "ws_echo", "--quiet"],
        cwd=ROOT,
        check=True,
    )
    port = free_port()
    echo = subprocess.Popen([ROOT / "target/debug/examples/ws_echo", f"127.0.0.1:{port}"])
    reports = Path(tempfile.mkdtemp(prefix="autobahn-"))
    try:
        wait_listening(port, echo)
        kosoku = shutil.which("kosoku", path=str(Path(sys.executable).parent)) or "kosoku"
        subprocess.run(
            [kosoku, "-m", "fuzzingclient", f"127.0.0.1:{port}", *LARGE_COMPRESSION_CASES,
             "-p", "4", "-o", str(reports)],
            check=False,
        )
        index = json.loads((reports / "index.json").read_text())
    finally:
        echo.kill()
        echo.wait()
    cases = {case: result for agent in index.values() for case, result in agent.items()}
    behaviours = Counter(result["behavior"] for result in cases.values())
    for behaviour, count in sorted(behaviours.items()):
        print(f"autobahn {behaviour}: {count}")
    failed = sorted(case for case, result in cases.items() if result["behavior"] not in PASSING)
    for case in failed:
        print(f"autobahn case {case}: {cases[case]['behavior']} (report in {reports})")
    passed = len(cases) - len(failed)
    print(f"autobahn: {passed} passed, {len(failed)} failed")
    if failed or not cases:
        sys.exit(1)
    shutil.rmtree(reports, ignore_errors=True)


if __name__ == "__main__":
    main()
