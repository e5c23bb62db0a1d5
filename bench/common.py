"""Helpers the bench scripts share: free ports, waiting for a process to listen, CPU time read from
/proc, Redis INFO fields. Imported as `common` (the scripts run from bench/, beside it)."""

import os
import socket
import subprocess
import sys
import time


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port, process, what, deadline=30):
    """Waits until `process` listens on `port`; exits the script when it ends or `deadline`
    seconds pass first."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {deadline} s")


def cpu_seconds(pid):
    """User and system CPU time process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_memory(port, field="used_memory"):
    """A field of `INFO memory` of the redis-server on `port` (0 when it has none)."""
    answer = subprocess.run(["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True,
                            text=True, check=True).stdout
    for line in answer.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":", 1)[1])
    return 0
