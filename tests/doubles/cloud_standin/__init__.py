"""TEST DOUBLE for a cloud provider (OpenRouter's OpenAI-shaped API).

Runs on the controller, on the simulated fleet's bridge address; the deploy is pointed
at it with the documented `cloud_api_base` / `cloud_api_key` settings. Answers start
with "cloud-standin:" so tests can tell them from local answers. It reuses the vLLM
stand-in's request handling, accepting any model name as a cloud provider does.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from sparkstack.simulated.vllm_standin import StandinState, build_parser, make_handler


class CloudStandin:
    def __init__(self, host: str, port: int = 0, api_key: str = "cloud-standin-key"):
        args = build_parser().parse_args(["serve", "cloud", "--api-key", api_key,
                                          "--port", str(port)])
        self.state = StandinState(args, label="cloud-standin", any_model=True)
        self.server = ThreadingHTTPServer((host, port), make_handler(self.state))
        self.server.daemon_threads = True
        self.api_key = api_key
        self.api_base = f"http://{host}:{self.server.server_address[1]}/api/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "CloudStandin":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests_served(self) -> int:
        return self.state.total
