"""STAND-IN for the Hugging Face Hub's file and model API, for `hf_endpoint` (the
simulated Sparks cannot reach huggingface.co).

Serves a folder laid out as <org>/<repo>/<file> the way the Hub does:
`/<org>/<repo>/resolve/<revision>/<file>` (with HTTP range requests, answered 206),
`/api/models/<org>/<repo>` (the file list as `siblings`) and
`/api/models/<org>/<repo>/revision/<rev>` (the same with each file's size and the
commit, a fixed hash of the repo). A repo holding a file named `.gated` is gated the
way the Hub gates Llama or Gemma: its API and files answer 401 unless the request
carries `Authorization: Bearer <the file's text>`. It counts the bytes and requests it
serves, so tests can tell header reads from downloads and when a download happened.

    python -m sparkstack.simulated.hub_standin ROOT --host ADDRESS --port N

serves ROOT until it is stopped (the simulated fleet runs it for its test models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/[^/]+/([^?]+)$")
API = re.compile(r"^/api/models/([^/]+/[^/]+)(/revision/[^/?]+)?(\?.*)?$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
GATE_FILE = ".gated"


def commit_of(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


class HubStandin:
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0):
        self.root, self.bytes_sent, self.requests = root, 0, []
        # (time.monotonic() once answered, path): comparable with systemd's *Monotonic
        # timestamps on the simulated Sparks, which share this machine's kernel
        self.answered: list[tuple[float, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                hub.bytes_sent += len(body)
                hub.answered.append((time.monotonic(), self.path))

            def refused(self, repo: Path) -> bool:
                """A gated repo asked for without its token: answered 401."""
                gate = repo / GATE_FILE
                if not gate.is_file() or self.headers.get("Authorization") == \
                        f"Bearer {gate.read_text().strip()}":
                    return False
                self.send(401, b'{"error": "Access to this model is restricted. You must '
                               b'be authenticated to access it."}')
                return True

            def do_GET(self):
                hub.requests.append(self.path)
                if m := API.match(self.path):
                    repo = hub.root / m.group(1)
                    if not repo.is_dir():
                        return self.send(404, b'{"error": "Repository not found"}')
                    if self.refused(repo):
                        return
                    siblings = [{"rfilename": p.name, "size": p.stat().st_size}
                                for p in sorted(repo.iterdir()) if p.name != GATE_FILE]
                    return self.send(200, json.dumps({"id": m.group(1),
                                                      "sha": commit_of(m.group(1)),
                                                      "siblings": siblings}).encode())
                m = RESOLVE.match(self.path)
                path = hub.root / m.group(1) / m.group(2) if m else None
                if path is not None and self.refused(path.parent):
                    return
                if path is None or not path.is_file() or path.name == GATE_FILE:
                    return self.send(404, b"Entry not found")
                data = path.read_bytes()
                if r := RANGE.match(self.headers.get("Range", "")):
                    first = int(r.group(1))
                    if first >= len(data):
                        return self.send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    last = min(int(r.group(2) or len(data) - 1), len(data) - 1)
                    return self.send(206, data[first:last + 1], {
                        "Content-Range": f"bytes {first}-{last}/{len(data)}"})
                self.send(200, data)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubStandin":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparkstack.simulated.hub_standin")
    p.add_argument("root", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    hub = HubStandin(args.root, args.host, args.port)
    print(f"Hub stand-in serving {args.root} at {hub.endpoint}", flush=True)
    hub.server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
