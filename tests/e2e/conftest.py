"""The end-to-end tests' one harness: simulated Sparks booted fresh for each module
(their disks start with the venvs earlier modules built, SimFleet.reuse_venvs),
the cloud stand-in (one for the whole session), and what every module asks of them:
an inventory written with the module's settings, the deploy and the `sparkstack`
commands run as an owner would, a host's secrets, SQL on its PostgreSQL.

A module subclasses `SimFleet` for what only it needs, and gets its instance from the
`sim` fixture's `make`."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sparkstack.simulated import engine, fleet
from sparkstack.simulated.fleet import SimHost, ssh
from sparkstack.simulated.inventory import write_inventory
from tests.doubles.cloud_standin import CloudStandin
from tests.e2e.helpers import REPO, DeployResult, run_deploy
from tests.e2e.traffic import Traffic

SPARKSTACK = str(Path(sys.executable).with_name("sparkstack"))


class SimFleet:
    """Simulated Sparks of one module, and its inventory."""

    # Its hosts start with the venvs earlier modules' first deploys built (the same
    # inputs, the same venv: a deploy finds them done), and its own first deploy keeps
    # what it built for later modules. A module that proves a first deploy from nothing
    # says False.
    reuse_venvs = True

    def __init__(self, tmp: Path, cloud: CloudStandin):
        self.tmp, self.cloud = tmp, cloud
        self.inventory = tmp / "inventory.py"
        self.hosts: list[SimHost] = []
        self.venvs_kept = False

    def boot(self, name: str, index: int, gpu: bool = True) -> SimHost:
        host = fleet.boot(name, index, gpu=gpu, reuse_venvs=self.reuse_venvs)
        self.hosts.append(host)
        return host

    def host(self, name: str) -> SimHost:
        return next(h for h in self.hosts if h.name == name)

    def write_hosts(self, group: dict, host_data: dict[str, dict], hosts=None,
                    vllm: str = engine.STANDIN, hub: str = "") -> Path:
        """The inventory: these hosts (all booted, by default) with their data, and the
        group settings over the module's defaults (its secrets folder, the cloud
        stand-in as the cloud)."""
        group = {"secrets_dir": str(self.tmp / "secrets"),
                 "cloud_api_base": self.cloud.api_base, "cloud_api_key": self.cloud.api_key,
                 **group}
        return write_inventory(self.inventory, hosts or self.hosts, group, host_data,
                               vllm=vllm, hub=hub)

    def deploy(self, *extra: str, **kw) -> DeployResult:
        result = run_deploy(self.inventory, *extra, **kw)
        if result.returncode == 0 and not self.venvs_kept:
            # only the first deploy's: venvs a test builds later (an upgrade's) stay
            # that test's to build
            fleet.keep_venvs(self.hosts)
            self.venvs_kept = True
        return result

    def deployed(self) -> SimFleet:
        """This fleet once its first deploy has succeeded (a module's fixture)."""
        first = self.deploy()
        assert first.returncode == 0, first.output[-3000:]
        return self

    def sparkstack(self, command: str, *args: str, timeout: float = 600,
                   merged: bool = True) -> subprocess.CompletedProcess:
        """`sparkstack COMMAND -i INVENTORY ARGS`; stdout and stderr both in .stdout
        unless not `merged` (a JSON answer is stdout alone)."""
        return subprocess.run([SPARKSTACK, command, "-i", str(self.inventory), *args],
                              cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                              text=True, timeout=timeout)

    def secrets(self, host: str) -> dict[str, str]:
        values = json.loads((self.tmp / "secrets" / "hosts" / f"{host}.json").read_text())
        values.update(json.loads((self.tmp / "secrets" / "fleet.json").read_text()))
        return values

    def master_key(self, host: str) -> str:
        """The LiteLLM master key of `host`."""
        return self.secrets(host)["litellm_master_key"]

    def traffic(self, host: SimHost, profiles: list[str], rate: float = 6,
                by_backend: bool = False) -> Traffic:
        """Clients of `host`'s LiteLLM, on its fleet address."""
        return Traffic(f"http://{host.address}:4000", self.master_key(host.name), profiles,
                       rate=rate, by_backend=by_backend)

    def psql(self, host: SimHost, query: str, database: str = "litellm") -> str:
        return ssh(host, f"cd / && runuser -u postgres -- psql -d {database} -XAtc "
                         f"{shlex.quote(query)}").stdout.strip()


@pytest.fixture(scope="session")
def cloud():
    """The cloud stand-in, on the fleet's bridge, for every module."""
    fleet.ensure_network()
    with CloudStandin(fleet.BRIDGE_ADDR) as standin:
        yield standin


@pytest.fixture(scope="module")
def sim(tmp_path_factory, cloud):
    """Makes the module's SimFleet (or subclass) on freshly booted Sparks; every
    simulated Spark is stopped before and after the module."""
    made = []

    def make(kind=SimFleet, *args, **kw):
        instance = kind(tmp_path_factory.mktemp("fleet"), cloud, *args, **kw)
        made.append(instance)
        return instance

    fleet.down_all()
    fleet.ensure_network()
    yield make
    fleet.down_all()
