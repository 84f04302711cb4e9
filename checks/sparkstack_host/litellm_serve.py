"""LiteLLM's launcher: serve the proxy on the socket systemd hands over, and take new
routes without a restart.

    sparkstack-litellm-serve [--graceful SECONDS]   ExecStart (socket activation)
    sparkstack-litellm-serve --reload PID           ExecReload: apply config.yaml's routes

systemd keeps the socket open while LiteLLM restarts, so clients connecting meanwhile
wait in its queue instead of being refused; a stopping LiteLLM finishes the requests it
has. On SIGHUP the running proxy re-reads the routes (model list and fallbacks) from
config.yaml into its router, in place: nothing restarts, no connection drops. It then
records the applied file's sha256 in $RUNTIME_DIRECTORY/applied, which `--reload` waits
for, so `systemctl reload` returns once the routes are live. Installed into LiteLLM's
venv (this package without its extras) and run with its Python; LiteLLM reads its
config from CONFIG_FILE_PATH.
"""
import argparse
import asyncio
import hashlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from .contract import LITELLM_SOCKET

SD_LISTEN_FDS_START = 3
log = logging.getLogger("sparkstack-litellm-serve")


def config_path() -> Path:
    return Path(os.environ["CONFIG_FILE_PATH"])


def applied_file() -> Path:
    return Path(os.environ.get("RUNTIME_DIRECTORY", "/run/sparkstack-litellm")) / "applied"


def apply_routes() -> None:
    """Swap the router's deployments and fallbacks for those in config.yaml."""
    import yaml
    from litellm.proxy import proxy_server
    from litellm.router_utils.pattern_match_deployments import PatternMatchRouter

    data = config_path().read_bytes()
    config = yaml.safe_load(data)
    router = proxy_server.llm_router
    # set_model_list rebuilds every index except the wildcard one (claude-*)
    router.pattern_router = PatternMatchRouter()
    router.set_model_list(config["model_list"])
    router.update_settings(fallbacks=config.get("router_settings", {}).get("fallbacks", []))
    proxy_server.llm_model_list = router.get_model_list()
    applied_file().write_text(hashlib.sha256(data).hexdigest() + "\n")
    log.warning("sparkstack-litellm-serve: routes reloaded: %s",
                ", ".join(sorted({d["model_info"]["id"] for d in router.get_model_list()})))


def keep_tool_schemas() -> None:
    """LiteLLM's hosted_vllm provider strips a tool's `strict` and its schemas'
    `additionalProperties` before it calls vLLM, and vLLM holds a forced tool call
    (`tool_choice` naming a function) to the tool's schema only when `strict` is set:
    through LiteLLM a forced call came back with arguments such as `true`, which the
    Anthropic format cannot even return. vLLM accepts both fields, so they are passed
    on as the client sent them."""
    from litellm.llms.hosted_vllm.chat import transformation

    for name in ("_remove_strict_from_schema", "_remove_additional_properties"):
        if hasattr(transformation, name):
            setattr(transformation, name, lambda tools: tools)
        else:  # another LiteLLM release: say so rather than guess
            log.warning("sparkstack-litellm-serve: litellm has no %s; tool schemas are "
                        "passed to vLLM as this release does", name)


def try_apply() -> None:
    try:
        apply_routes()
    except Exception:  # keep serving the old routes; --reload times out and says so
        log.exception("sparkstack-litellm-serve: reloading routes failed")


async def apply_when_asked(server, asked: threading.Event) -> None:
    """Apply routes on the event loop (where requests are routed) once LiteLLM has
    started, then at every SIGHUP."""
    while not server.started and not server.should_exit:
        await asyncio.sleep(0.05)
    asked.set()  # config.yaml may have changed while LiteLLM was loading it
    while not server.should_exit:
        if asked.is_set():
            asked.clear()
            try_apply()
        await asyncio.sleep(0.05)


async def serve(sock: socket.socket, graceful: int, asked: threading.Event) -> None:
    import uvicorn

    config = uvicorn.Config("litellm.proxy.proxy_server:app", server_header=False,
                            timeout_graceful_shutdown=graceful)
    server = uvicorn.Server(config)
    applier = asyncio.get_running_loop().create_task(apply_when_asked(server, asked))
    await server.serve(sockets=[sock])
    applier.cancel()


def reload(pid: int, timeout: float = 30) -> int:
    want = hashlib.sha256(config_path().read_bytes()).hexdigest()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if applied_file().read_text().strip() == want:
                return 0
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    print(f"sparkstack-litellm-serve: routes not applied within {timeout:.0f} s "
          "(see this unit's log)", file=sys.stderr)
    return 1


def main() -> int:
    p = argparse.ArgumentParser(prog="sparkstack-litellm-serve")
    p.add_argument("--graceful", type=int, default=600,
                   help="seconds a stopping LiteLLM may take to finish its requests")
    p.add_argument("--reload", type=int, metavar="PID",
                   help="make the LiteLLM running as PID apply config.yaml's routes")
    args = p.parse_args()
    if args.reload:
        return reload(args.reload)
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        print(f"sparkstack-litellm-serve: no socket from systemd; start {LITELLM_SOCKET}",
              file=sys.stderr)
        return 2
    # a SIGHUP before LiteLLM has started is kept for later, never fatal
    asked = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: asked.set())
    keep_tool_schemas()
    # the family (AF_INET or AF_INET6) is read from the descriptor itself
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    asyncio.run(serve(sock, args.graceful, asked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
