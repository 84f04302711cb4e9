"""LiteLLM's launcher: serve one LiteLLM process of the front door, and take new routes
without a restart.

    python -m sparkstack_host.litellm_serve --process N [--graceful SECONDS]   ExecStart
    python -m sparkstack_host.litellm_serve --process N --reload PID           ExecReload

Process N listens on its own unix socket (`contract.litellm_process_socket`), which the
front door (nginx) sends requests to: when N is not running, connecting there is
refused at once and nginx gives the request to another process. It also accepts on
the queue socket systemd holds for all processes (LITELLM_QUEUE_SOCKET, handed over as
fd 3), which nginx uses only while no process answers: connections wait there until one
starts. A stopping LiteLLM closes both, then finishes the requests it has. On SIGHUP the running proxy re-reads the routes (model list and fallbacks) from
config.yaml into its router, in place: nothing restarts, no connection drops. It then
records the applied file's sha256 in `applied_file(N)`, which `--reload` waits
for, so `systemctl reload` returns once the routes are live. Installed into LiteLLM's
venv (this package without its extras) and run with its Python; LiteLLM reads its
config from CONFIG_FILE_PATH.
"""
import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from .contract import LITELLM_QUEUE_SOCKET, litellm_process_socket

SD_LISTEN_FDS_START = 3
log = logging.getLogger("sparkstack-litellm-serve")


def config_path() -> Path:
    return Path(os.environ["CONFIG_FILE_PATH"])


def applied_file(process: int) -> Path:
    """Beside the process's socket, in its runtime folder (root reads it there)."""
    return Path(litellm_process_socket(process)).with_name("applied")


def apply_routes(process: int) -> None:
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
    forget_cooldowns(router)
    applied_file(process).write_text(hashlib.sha256(data).hexdigest() + "\n")
    log.warning("sparkstack-litellm-serve: routes reloaded: %s",
                ", ".join(sorted({d["model_info"]["id"] for d in router.get_model_list()})))


def forget_cooldowns(router) -> None:
    """Start the new routes with no backend resting. Each process keeps its own
    cooldowns (backends it saw fail): left over from before the gate's last look, one
    process sent a profile to the cloud while another already used the model the gate
    had found ready again. The gate's routes are the one state the processes share."""
    cooldowns = getattr(getattr(router, "cooldown_cache", None), "in_memory_cache", None)
    if cooldowns is None:  # another LiteLLM release: say so rather than guess
        log.warning("sparkstack-litellm-serve: this litellm keeps its cooldowns elsewhere; "
                    "they outlive a routes reload")
        return
    cooldowns.flush_cache()


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


def try_apply(process: int) -> None:
    try:
        apply_routes(process)
    except Exception:  # keep serving the old routes; --reload times out and says so
        log.exception("sparkstack-litellm-serve: reloading routes failed")


async def apply_when_asked(server, process: int) -> None:
    """Apply routes on the event loop (where requests are routed) once LiteLLM has
    started, then at every SIGHUP, as soon as it comes: the gate signals all processes
    at once, and they change over together only if none waits to look."""
    while not server.started and not server.should_exit:
        await asyncio.sleep(0.05)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, try_apply, process)
    try_apply(process)  # config.yaml may have changed while LiteLLM was loading it
    if server.started:
        await warm_up(process)
        open_for_nginx(process)


WARM_UP = [("/v1/chat/completions", False), ("/v1/chat/completions", True),
           ("/v1/messages", False), ("/v1/messages", True)]


async def warm_up(process: int) -> None:
    """Ask this process once in each API format, plain and streaming, before nginx
    sends it clients: a fresh LiteLLM takes its first requests of each kind slowly
    (measured on a simulated Spark: 0.4 to 0.9 s each against 0.07 s after), and in a
    rolling restart those were the clients' slowest requests. The answers are LiteLLM's
    own mock (no model is asked) and kept out of the request logs (`no-log`)."""
    import httpx
    from litellm.proxy import proxy_server

    names = [m["model_name"] for m in (proxy_server.llm_model_list or [])
             if "*" not in m.get("model_name", "*")]
    key = os.environ.get("LITELLM_MASTER_KEY", "")
    if not names or not key:
        return
    start = time.monotonic()
    transport = httpx.AsyncHTTPTransport(uds=starting_path(process))
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key,   # either API's key
               "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost",
                                 headers=headers, timeout=30) as client:
        for path, stream in WARM_UP:
            body = {"model": names[0], "max_tokens": 1, "stream": stream,
                    "messages": [{"role": "user", "content": "warm-up"}],
                    "mock_response": "ok", "no-log": True}
            try:
                reply = await client.post(path, json=body)
                reply.raise_for_status()
            except httpx.HTTPError as e:  # never keep a process from serving for this
                log.warning("sparkstack-litellm-serve: warm-up %s failed: %s", path, e)
    log.warning("sparkstack-litellm-serve: warmed up in %.1f s", time.monotonic() - start)


def starting_path(process: int) -> str:
    return litellm_process_socket(process) + ".starting"


def own_socket(process: int) -> socket.socket:
    """Process `process`'s unix socket, for the front door (nginx runs as LiteLLM's user
    and reaches it through the runtime folder systemd made for this unit). It is bound
    under another name and given its own once LiteLLM has started (`open_for_nginx`):
    before that nginx would connect and wait out LiteLLM's start instead of trying the
    next process."""
    for path in (litellm_process_socket(process), starting_path(process)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a killed predecessor
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(starting_path(process))
    os.chmod(starting_path(process), 0o660)
    sock.listen(1024)
    return sock


def open_for_nginx(process: int) -> None:
    os.rename(starting_path(process), litellm_process_socket(process))


async def serve(sockets: list[socket.socket], graceful: int, process: int) -> None:
    import uvicorn

    config = uvicorn.Config("litellm.proxy.proxy_server:app", server_header=False,
                            timeout_graceful_shutdown=graceful,
                            # every request is in the request log; a line per request in
                            # the journal costs CPU the engine may need (CPU builds)
                            access_log=False,
                            # nginx keeps connections to each process open between
                            # requests; it closes them first, not this side
                            timeout_keep_alive=75)
    server = uvicorn.Server(config)
    applier = asyncio.get_running_loop().create_task(apply_when_asked(server, process))
    await server.serve(sockets=sockets)
    applier.cancel()


def run_loop(main) -> None:
    """On uvloop (LiteLLM's proxy extra installs it; uvicorn.run would pick it too)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def applied_sha(process: int) -> str | None:
    """The sha256 of the routes process `process` runs on (None: it has not started)."""
    try:
        return applied_file(process).read_text().strip()
    except FileNotFoundError:
        return None


def wait_applied(process: int, want: str, deadline: float) -> bool:
    """Has process `process` applied the routes whose sha256 is `want` by `deadline`?"""
    while time.monotonic() < deadline:
        if applied_sha(process) == want:
            return True
        time.sleep(0.02)
    return False


def reload_all(pids: dict[int, int], config: Path, timeout: float = 30) -> list[int]:
    """Make the LiteLLM processes in `pids` (process -> pid) apply `config`'s routes, all
    signalled at once so they change over together; returns the processes that did not
    confirm within `timeout`."""
    want = hashlib.sha256(config.read_bytes()).hexdigest()
    for pid in pids.values():
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    return [process for process in pids if not wait_applied(process, want, deadline)]


def reload(pid: int, process: int, config: Path, timeout: float = 30) -> int:
    """ExecReload: make this process apply `config`'s routes, and wait until it has."""
    if reload_all({process: pid}, config, timeout):
        print(f"sparkstack-litellm-serve: routes not applied within {timeout:.0f} s "
              "(see this unit's log)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="sparkstack-litellm-serve")
    p.add_argument("--process", type=int, required=True,
                   help="which of the front door's LiteLLM processes this is (1..N)")
    p.add_argument("--graceful", type=int, default=600,
                   help="seconds a stopping LiteLLM may take to finish its requests")
    p.add_argument("--reload", type=int, metavar="PID",
                   help="make the LiteLLM running as PID apply config.yaml's routes")
    args = p.parse_args()
    if args.reload:
        return reload(args.reload, args.process, config_path())
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        print("sparkstack-litellm-serve: no queue socket from systemd; start "
              f"{LITELLM_QUEUE_SOCKET}", file=sys.stderr)
        return 2
    # a SIGHUP before LiteLLM has started is never fatal: the routes it asks for are
    # read once LiteLLM has started
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    keep_tool_schemas()
    queue = socket.socket(fileno=SD_LISTEN_FDS_START)
    run_loop(serve([own_socket(args.process), queue], args.graceful, args.process))
    return 0


if __name__ == "__main__":
    sys.exit(main())
