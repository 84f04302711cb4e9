"""Validated settings, fleet view and secrets for the host pyinfra is planning."""

from __future__ import annotations

from functools import lru_cache

from pyinfra import inventory

from .fleet import Fleet
from .secrets import host_secrets
from .settings import HostSettings, validate_inventory

_run_arguments: set[str] = set()


@lru_cache(maxsize=1)
def _validated(inventory_id: int) -> Fleet:
    # Every host of the inventory (not only --limit'ed ones): load balancing and the
    # vLLM bind addresses depend on the whole fleet.
    datas = {h.name: {k: v for k, v in h.data.dict().items() if k not in _run_arguments}
             for h in inventory}
    return Fleet(validate_inventory(datas))


def current_host(host, run_arguments: tuple[str, ...] = ()) -> tuple[HostSettings, Fleet,
                                                                      dict]:
    """`run_arguments`: `--data` keys a playbook takes besides the settings (the
    playbook's first call names them)."""
    _run_arguments.update(run_arguments)
    fleet = _validated(id(inventory))
    settings = fleet[host.name]
    return settings, fleet, host_secrets(settings["secrets_dir"], host.name)


def run_arguments() -> set[str]:
    """The `--data` keys of this run that are not settings."""
    return set(_run_arguments)
