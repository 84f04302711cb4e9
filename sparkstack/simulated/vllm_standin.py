"""STAND-IN for vLLM's OpenAI-compatible server (`vllm serve`).

It installs a `vllm` command that accepts vLLM's `serve` command line, rejects flags
vLLM would reject, keeps its port closed while it "loads" (like vLLM, whose port opens
only once the engine is up), then serves /health, /v1/models, /v1/chat/completions
(plain, streaming, tool calls), /version and /metrics. Answers name the served model and
the host so tests can see which backend answered. It calls a tool the way a model
would be asked to: when `tool_choice` names one, when the user's message starts with
an offered tool's name and a colon ("get_weather: Oslo?"),
or when the user asks "write the file PATH containing exactly: TEXT" and a tool called
Write is offered (as Claude Code offers it); once a tool's result comes back it
answers in text.

Behaviour knobs (environment, set through the deploy's documented vLLM environment
setting): VLLM_STANDIN_LOAD_SECONDS (default 2), VLLM_STANDIN_FAIL=1 (exit with an
error after loading, like an engine that fails to start), VLLM_STANDIN_NEVER_READY=1
(keep loading forever), VLLM_STANDIN_CHUNK_SECONDS (pause before each streamed word,
default 0: a long stream).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", nargs="+", default=None)
    serve.add_argument("--api-key", default=None)
    serve.add_argument("--max-model-len", type=int, default=None)
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    serve.add_argument("--max-num-seqs", type=int, default=256)
    serve.add_argument("--max-num-batched-tokens", type=int, default=None)
    serve.add_argument("--kv-cache-dtype", default="auto",
                       choices=["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16"])
    serve.add_argument("--quantization", "-q", default=None)
    serve.add_argument("--dtype", default="auto")
    serve.add_argument("--enable-auto-tool-choice", action="store_true")
    serve.add_argument("--tool-call-parser", default=None)
    serve.add_argument("--reasoning-parser", default=None)
    serve.add_argument("--enable-prefix-caching", action="store_true")
    serve.add_argument("--no-enable-prefix-caching", action="store_true")
    serve.add_argument("--load-format", default="auto")
    serve.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    serve.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    serve.add_argument("--distributed-executor-backend", default=None)
    serve.add_argument("--trust-remote-code", action="store_true")
    serve.add_argument("--revision", default=None)
    serve.add_argument("--download-dir", default=None)
    serve.add_argument("--swap-space", type=float, default=None)
    serve.add_argument("--enforce-eager", action="store_true")
    serve.add_argument("--chat-template", default=None)
    serve.add_argument("--generation-config", default=None)
    serve.add_argument("--uvicorn-log-level", default="info")
    serve.add_argument("--disable-log-requests", action="store_true")
    serve.add_argument("--shutdown-timeout", type=int, default=0)
    return parser


class StandinState:
    def __init__(self, args: argparse.Namespace, label: str = "standin",
                 any_model: bool = False):
        self.args = args
        self.label = label
        self.any_model = any_model  # a cloud provider serves whatever model is asked for
        self.names = args.served_model_name or [args.model]
        self.max_model_len = args.max_model_len or 32768
        self.hostname = socket.gethostname()
        self.running = 0
        self.total = 0
        self.lock = threading.Lock()
        self.chunk_seconds = float(os.environ.get("VLLM_STANDIN_CHUNK_SECONDS", "0"))


def standin_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vllm-standin")
    except PackageNotFoundError:  # run from the source tree
        return "source"


# "write the file /abs/path containing exactly: some text" (as a person asks Claude Code)
WRITE_ASK = re.compile(r"(?:write|create) the file (\S+) containing exactly: (.+)$",
                       re.IGNORECASE | re.DOTALL)


def _text_of(message: dict) -> str:
    """What the user wrote: without the <system-reminder> sections a client such as
    Claude Code adds to the message (they name tools the user did not ask for)."""
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return re.sub(r"<system-reminder>.*?</system-reminder>", "", str(content), flags=re.S)


def _tool_call(messages: list, tools: list, choice) -> dict | None:
    """A tool call when the request asks for one, as a model would decide it: a forced
    `tool_choice`, a file the user asks to be written (with a tool named Write), or a
    tool the user's message starts with ("get_weather: Oslo?"); none once a tool's result is back (then it answers)."""
    if not tools or choice == "none":
        return None
    if messages and messages[-1].get("role") == "tool":
        return None
    by_name = {t.get("function", {}).get("name"): t.get("function", {}) for t in tools}
    asked = _text_of(messages[-1]) if messages else ""
    fn, args = None, None
    if isinstance(choice, dict) and choice.get("function", {}).get("name") in by_name:
        fn = by_name[choice["function"]["name"]]
    elif (m := WRITE_ASK.search(asked.strip())) and "Write" in by_name:
        fn, args = by_name["Write"], {"file_path": m.group(1), "content": m.group(2).strip()}
    else:  # "TOOL: ..." asks for a tool by its name
        named = re.match(r"\s*([\w.-]+):", asked)
        fn = by_name.get(named.group(1)) if named else None
        if fn is None and choice == "required":
            fn = next(iter(by_name.values()))
    if fn is None:
        return None
    if args is None:
        params = fn.get("parameters", {}) or {}
        args = {}
        for key in params.get("required", []):
            kind = params.get("properties", {}).get(key, {}).get("type", "string")
            args[key] = {"integer": 1, "number": 1.0, "boolean": True}.get(kind, "standin")
    return {"id": f"chatcmpl-tool-{uuid.uuid4().hex[:16]}", "type": "function",
            "function": {"name": fn.get("name", "tool"), "arguments": json.dumps(args)}}


def make_handler(state: StandinState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # vLLM-like access log on stdout
            print(f"INFO:     {self.client_address[0]} - \"{fmt % args}\"", flush=True)

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            key = state.args.api_key or os.environ.get("VLLM_API_KEY")  # as vLLM does
            if not key or self.path in ("/health", "/metrics", "/version"):
                return True
            if self.headers.get("Authorization", "") == f"Bearer {key}":
                return True
            self._json(401, {"error": "Unauthorized"})
            return False

        def do_GET(self):
            if not self._authorized():
                return
            if self.path == "/health":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "created": int(time.time()),
                     "owned_by": "vllm", "root": state.args.model, "parent": None,
                     "max_model_len": state.max_model_len}
                    for name in state.names]})
            elif self.path == "/version":
                self._json(200, {"version": standin_version()})
            elif self.path == "/metrics":
                name = state.names[0]
                body = (
                    f'vllm:num_requests_running{{model_name="{name}"}} {state.running}\n'
                    f'vllm:num_requests_waiting{{model_name="{name}"}} 0\n'
                    f'vllm:kv_cache_usage_perc{{model_name="{name}"}} 0.0\n'
                    f'vllm:request_success_total{{model_name="{name}"}} {state.total}\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._json(404, {"detail": "Not Found"})

        def do_POST(self):
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._json(400, {"error": "invalid JSON"})
            if not self.path.endswith("/chat/completions"):
                return self._json(404, {"detail": "Not Found"})
            model = req.get("model")
            if model not in state.names and not state.any_model:
                return self._json(404, {"error": {
                    "message": f"The model `{model}` does not exist.",
                    "type": "NotFoundError", "code": 404}})
            with state.lock:
                state.running += 1
            try:
                self._complete(req, model)
            finally:
                with state.lock:
                    state.running -= 1
                    state.total += 1

        def _complete(self, req: dict, model: str) -> None:
            text = (f"{state.label}:{model}@{state.hostname}:{state.args.port} "
                    f"answered {len(req.get('messages', []))} message(s)")
            call = _tool_call(req.get("messages") or [], req.get("tools") or [],
                              req.get("tool_choice", "auto"))
            cid = f"chatcmpl-{uuid.uuid4().hex}"
            created = int(time.time())
            usage = {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
            finish = "tool_calls" if call else "stop"
            if not req.get("stream"):
                message = {"role": "assistant", "content": None if call else text}
                if call:
                    message["tool_calls"] = [call]
                return self._json(200, {
                    "id": cid, "object": "chat.completion", "created": created,
                    "model": model, "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()

            def chunk(delta: dict, finish_reason=None, extra=None) -> None:
                body = {"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta,
                                     "finish_reason": finish_reason}]}
                if extra:
                    body.update(extra)
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                self.wfile.flush()

            chunk({"role": "assistant", "content": ""})
            if call:
                chunk({"tool_calls": [{"index": 0, **call}]})
            else:
                for word in text.split(" "):
                    time.sleep(state.chunk_seconds)
                    chunk({"content": word + " "})
            chunk({}, finish)
            if (req.get("stream_options") or {}).get("include_usage"):
                body = {"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage}
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


def serve(args: argparse.Namespace) -> int:
    state = StandinState(args)
    load = float(os.environ.get("VLLM_STANDIN_LOAD_SECONDS", "2"))
    print(f"INFO vllm-standin: loading {args.model} as {state.names} "
          f"(max_model_len={state.max_model_len}, "
          f"gpu_memory_utilization={args.gpu_memory_utilization}, "
          f"max_num_seqs={args.max_num_seqs}, kv_cache_dtype={args.kv_cache_dtype})",
          flush=True)
    if os.environ.get("VLLM_STANDIN_NEVER_READY") == "1":
        while True:
            time.sleep(3600)
    time.sleep(load)
    if os.environ.get("VLLM_STANDIN_FAIL") == "1":
        print("ERROR vllm-standin: engine core initialisation failed "
              "(simulated: ValueError: No available memory for the cache blocks)",
              file=sys.stderr, flush=True)
        return 1
    host = args.host or "0.0.0.0"
    server = ThreadingHTTPServer((host, args.port), make_handler(state))
    server.daemon_threads = True
    print(f"INFO:     Uvicorn running on http://{host}:{args.port} (Press CTRL+C to quit)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
