"""LiteLLM's front door: nginx on LiteLLM's port in front of `litellm_processes`
LiteLLM processes, so that one process dying or restarting costs clients nothing.

Why nginx: a request whose process dies before answering can be saved only by
something in front that still holds the request and sends it again; processes sharing
one listening socket (workers under a supervisor, SO_REUSEPORT) lose every request the
dead one had accepted. nginx buffers each request, gives it to the next process when
one refuses the connection or closes it before answering (`proxy_next_upstream error
non_idempotent`), and passes streams through unbuffered. It is the distribution's own
package, run by its own unit as LiteLLM's user with its own config; a stock nginx is
not started by installing it and is left alone when it was already there.

The processes are one template unit, `sparkstack-litellm@N`: a change restarts them one
at a time, each answering before the next goes (`processes_running`).
"""

from __future__ import annotations

from fnmatch import fnmatch
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import server
from sparkstack_host.contract import (
    FRONTDOOR_UNIT,
    LITELLM_MIGRATE_UNIT,
    LITELLM_QUEUE_PATH,
    LITELLM_QUEUE_SOCKET,
    LITELLM_SINGLE_UNITS,
    LITELLM_TEMPLATE,
    LITELLM_UNIT_GLOB,
    UNIT_DIR,
    litellm_process_socket,
    litellm_units,
)

from ...host_facts import WANTS_DIR, snapshot
from ...operations import deb_packages, put_file, unit_running
from ...render import template
from ...settings import HostSettings

NGINX = "/usr/sbin/nginx"
NGINX_PACKAGE = "nginx"
STOCK_NGINX_UNIT = "nginx.service"
RUNTIME = "sparkstack-frontdoor"
NGINX_WORKERS = 2    # one holds thousands of connections; two ride out a busy one


def listen(s: HostSettings) -> str:
    address = s["litellm_bind_address"]
    return f"[{address}]:{s['litellm_port']}" if ":" in address else \
        f"{address}:{s['litellm_port']}"


def render_conf(s: HostSettings) -> str:
    return template("litellm/frontdoor.conf.j2", s=s, workers=NGINX_WORKERS,
                    runtime=f"/run/{RUNTIME}", listen=listen(s), queue_path=LITELLM_QUEUE_PATH,
                    process_sockets=[litellm_process_socket(i)
                                     for i in range(1, s["litellm_processes"] + 1)])


def journal_on_failure(unit: str) -> str:
    return (f"{{ echo 'last log lines of {unit}:'; journalctl -u {unit} -n 25 "
            "--no-pager -o cat; exit 1; }")


@operation()
def nginx_installed():
    """The distribution's nginx, its own unit masked first when this installs it: the
    package would otherwise start it on port 80 with its default site."""
    state = snapshot()
    if state.installed([NGINX_PACKAGE]):
        host.noop("nginx installed")
        return
    yield f"systemctl mask {STOCK_NGINX_UNIT}"
    yield from deb_packages._inner(packages=[NGINX_PACKAGE])


@operation()
def processes_running(count: int, restart: bool):
    """LiteLLM processes 1..count enabled and running; with `restart`, restarted one at
    a time (a restart returns once the new process answers, its unit's ExecStartPost);
    processes beyond `count` stopped once the others run."""
    state = snapshot()
    wanted = litellm_units(count)
    extra = sorted(u for u in state.data["units"] if fnmatch(u, LITELLM_UNIT_GLOB)
                   and u != LITELLM_TEMPLATE and u not in wanted and state.running(u))
    changed = False
    for unit in wanted:
        if not state.running(unit):
            yield f"systemctl enable --now {unit} || {journal_on_failure(unit)}"
            changed = True
        elif restart:
            yield f"systemctl restart {unit} || {journal_on_failure(unit)}"
            changed = True
        elif not state.file(f"{UNIT_DIR}/{WANTS_DIR}/{unit}"):
            yield f"systemctl enable --quiet {unit}"
            changed = True
    for unit in extra:
        yield f"systemctl disable --now {unit}"
        changed = True
    if not changed:
        host.noop(f"{count} LiteLLM process(es) running")


@operation()
def single_process_retired():
    """A deploy from before the front door ran one LiteLLM on a TCP socket: stop it and
    remove its units, now that the processes run (nginx takes the port right after)."""
    state = snapshot()
    present = [u for u in LITELLM_SINGLE_UNITS if state.file(f"{UNIT_DIR}/{u}")]
    if not present:
        host.noop("no single LiteLLM unit left from an older deploy")
        return
    units = " ".join(present)
    yield f"systemctl disable --now {units}"
    yield "rm -f " + " ".join(f"{UNIT_DIR}/{u}" for u in present)
    yield "systemctl daemon-reload"


def deploy(svc, restart_processes: bool, process_unit, queue_socket, migrate_unit,
           venv) -> None:
    """Everything after the processes' units are written: the queue socket, the
    migrations, the processes, then nginx on the port."""
    s = svc.s
    layout = svc.layout
    reload = any(op.will_change for op in (process_unit, queue_socket, migrate_unit))
    unit_running(name="Hold LiteLLM's queue socket", unit=LITELLM_QUEUE_SOCKET,
                 daemon_reload=reload)
    if s["litellm_request_log"]:
        # once per boot by itself; again now when LiteLLM changed (an upgrade)
        unit_running(name="Migrate LiteLLM's database", unit=LITELLM_MIGRATE_UNIT,
                     restarted=venv.will_change or migrate_unit.will_change)
    # nginx is ready to start before an older deploy's single LiteLLM lets the port go
    nginx_installed(name="Install nginx (the front door)")
    conf = put_file(name="Write the front door's config (nginx)",
                    src=StringIO(render_conf(s)), dest=layout.frontdoor_conf,
                    user="root", group=svc.user, mode="640")
    unit = put_file(name=f"Write unit {FRONTDOOR_UNIT}",
                    src=StringIO(template("litellm/frontdoor.service.j2", s=s, layout=layout,
                                          nginx=NGINX, runtime_name=RUNTIME,
                                          queue_socket=LITELLM_QUEUE_SOCKET)),
                    dest=f"{UNIT_DIR}/{FRONTDOOR_UNIT}", mode="644")
    processes_running(name=f"Run {s['litellm_processes']} LiteLLM process(es), "
                           "restarting them one at a time on a change",
                      count=s["litellm_processes"], restart=restart_processes)
    single_process_retired(name="Retire the single LiteLLM of an older deploy")
    # a changed config is taken by a reload (new workers; the old ones finish theirs)
    unit_running(name="Run the front door", unit=FRONTDOOR_UNIT,
                 daemon_reload=unit.will_change, restarted=unit.will_change)
    if not unit.will_change:  # a restart above has taken the new config already
        server.shell(name="Reload the front door's config", _if=conf.did_change,
                     commands=[f"systemctl reload {FRONTDOOR_UNIT} || "
                               f"{journal_on_failure(FRONTDOOR_UNIT)}"])


def process_unit_context(s: HostSettings) -> dict:
    """What the process template (litellm@.service.j2) names: its sockets and folders."""
    socket = litellm_process_socket("%i")
    return {"queue_socket": LITELLM_QUEUE_SOCKET, "migrate_unit": LITELLM_MIGRATE_UNIT,
            "process_socket": socket, "runtime_name": Path(socket).parent.name}


def units(s: HostSettings) -> list[str]:
    """What an update's rollback restarts (one at a time, in this order); the front
    door's nginx itself does not change with an update."""
    first = [LITELLM_MIGRATE_UNIT] if s["litellm_request_log"] else []
    return first + litellm_units(s["litellm_processes"])

