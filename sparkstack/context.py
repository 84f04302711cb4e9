"""What one pyinfra run of a playbook knows across its hosts, kept on pyinfra's own
State (one per run): the validated fleet, the `--data` keys that are the playbook's
arguments rather than settings, each host's snapshot, the Sparks' operation locks and
the rolling update's plan.

A playbook starts with `current_host(host)`: the whole inventory is validated (a bad
setting anywhere stops the run before any host is changed), then every host of the run
is locked, one operation at a time per Spark, before anything is read from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gevent.lock
from pyinfra import logger
from pyinfra.api.exceptions import PyinfraError

from .fleet import Fleet
from .host_shell import Busy, HostShell, OperationLock, this_run
from .secrets import host_secrets
from .settings import HostSettings, validate_inventory


@dataclass
class Run:
    fleet: Fleet
    run_arguments: frozenset[str]
    snapshots: dict[str, Any] = field(default_factory=dict)      # host -> Snapshot
    locks: dict[str, OperationLock] = field(default_factory=dict)
    rollout: Any = None                                           # the update's plan
    # the hosts are planned in parallel greenlets: one of them reads or locks at a time
    guard: gevent.lock.Semaphore = field(default_factory=gevent.lock.Semaphore)

    def shell(self, host) -> HostShell:
        return HostShell(host, self.fleet[host.name].layout)


def current_run(state=None, run_arguments: tuple[str, ...] = ()) -> Run:
    """This run's shared knowledge, made when its first host is planned. Every host of
    the inventory is validated (not only --limit'ed ones): load balancing and the vLLM
    bind addresses depend on the whole fleet."""
    if state is None:
        from pyinfra import state
    run = getattr(state, "sparkstack_run", None)
    if run is None:
        args = frozenset(run_arguments)
        datas = {h.name: {k: v for k, v in h.data.dict().items() if k not in args}
                 for h in state.inventory}
        run = Run(Fleet(validate_inventory(datas)), args)
        state.sparkstack_run = run
    return run


def lock_hosts(run: Run, hosts: list) -> None:
    """Take the operation lock of each of `hosts` this run does not hold yet; held until
    the run ends (its connections close)."""
    holder = this_run()
    with run.guard:
        for h in hosts:
            if h.name not in run.locks:
                lock = OperationLock(run.shell(h), holder)
                try:
                    lock.take(say=logger.info)
                except Busy as e:
                    raise PyinfraError(f"{e}; nothing was changed (without --no-wait "
                                       "this run waits for it)")
                run.locks[h.name] = lock


def current_host(host, run_arguments: tuple[str, ...] = ()) -> tuple[HostSettings, Fleet,
                                                                      dict]:
    """The host's settings, the fleet and the host's secrets; every host of the run
    locked first. `run_arguments`: the `--data` keys the playbook takes besides the
    settings."""
    from pyinfra import state
    run = current_run(state, run_arguments)
    lock_hosts(run, list(state.inventory.get_active_hosts()))
    settings = run.fleet[host.name]
    return settings, run.fleet, host_secrets(settings["secrets_dir"], host.name)
