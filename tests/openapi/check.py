"""Keeps docs/openapi.json true: validates it as OpenAPI 3.1 (openapi-spec-validator), checks that a
running server serves the same document at /openapi.json, and runs schemathesis against the server
in three settings (defaults; auth required without a token; the server key with a rate limit), so
that 200s, refusals and 429s are all met: no 5xx, and every answer's status, content type and body
as the document says.
Usage: python tests/openapi/check.py BINARY   (from the repository root)"""

import json
import re
import subprocess
import threading
import sys
import tempfile
import urllib.request
from pathlib import Path

from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs/openapi.json"
SCHEMATHESIS = Path(sys.executable).parent / "st"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
API_KEY = "openapi-check-server-key"
SETTINGS = [
    ("defaults", [], []),
    ("auth required, no token", ["--auth", "required", "--jwt-secret", "openapi-check-secret"], []),
    ("server key, rate limit",
     ["--auth", "required", "--jwt-secret", "openapi-check-secret", "--api-key", API_KEY,
      "--rate-limit", "20/s", "--rate-burst", "20"],
     ["--header", f"Authorization: Bearer {API_KEY}"]),
]


def start(binary: str, data_dir: str, flags: list[str]) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1:0", "--data-dir", data_dir, *flags],
        stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        match = re.search(r"listening on http://(\S+)", line)
        if match:
            # Keep reading the log so that the server never blocks on a full pipe.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, match.group(1)
    sys.exit("the server did not start")


def main() -> None:
    spec, _ = read_from_filename(str(DOCUMENT))
    validate(spec)
    print("openapi: docs/openapi.json is a valid OpenAPI 3.1 document")
    failed = []
    for name, flags, client_flags in SETTINGS:
        with tempfile.TemporaryDirectory() as data_dir:
            server, address = start(sys.argv[1], data_dir, flags)
            try:
                with urllib.request.urlopen(f"http://{address}/openapi.json", timeout=10) as answer:
                    served = json.load(answer)
                if served != json.loads(DOCUMENT.read_text()):
                    failed.append(f"{name}: /openapi.json differs from docs/openapi.json")
                print(f"openapi: schemathesis, {name}", flush=True)
                run = subprocess.run(
                    [str(SCHEMATHESIS), "run", f"http://{address}/openapi.json", "--checks", CHECKS,
                     "--max-examples", "50", "--seed", "1", "--no-color",
                     # An event stream that is let in never ends: tests/e2e/sse.rs covers it.
                     "--exclude-path", "/sse/chat/{room}/", *client_flags],
                    cwd=data_dir, timeout=600)
                if run.returncode != 0:
                    failed.append(f"{name}: schemathesis found answers the document does not allow")
            finally:
                server.terminate()
                server.wait()
    for failure in failed:
        print(f"openapi: {failure}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
