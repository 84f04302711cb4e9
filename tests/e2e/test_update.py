"""Rolling updates on three simulated Sparks under client traffic through LiteLLM
(openai and anthropic SDKs, no retries, at least 5 requests/s): spark1 runs the whole
stack, spark2 and spark3 serve models to it; `fast` is load-balanced over all three.

In order: the vLLM stand-in upgraded on every host one at a time (zero failed
requests, every host on the new version), a no-op update that skips every host, a
version that cannot start on the second host (rolled back, the third untouched, zero
failed requests), a refused update when a profile has nowhere else to go, and a real
LiteLLM upgrade and its rollback on request, with Open WebUI's users and chats kept.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from sparkstack_host.contract import Layout

from sparkstack.simulated import fleet
from sparkstack.simulated import vllm_standin as standin
from sparkstack.simulated.fleet import ssh
from tests.e2e.conftest import SimFleet
from tests.e2e.helpers import Tunnel, run_deploy
from tests.e2e.traffic import Traffic

pytestmark = pytest.mark.e2e
MODEL = {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
         "gpu_memory_utilization": 0.15}


def build_standin(version: str, broken: bool = False) -> None:
    """Another release of the vLLM stand-in where the hosts install packages from;
    a broken one exits at start as a vLLM built for the wrong CUDA would."""
    source = Path(standin.__file__)
    with tempfile.TemporaryDirectory() as tmp:
        text = source.read_text()
        if broken:
            text = text.replace('def serve(args: argparse.Namespace) -> int:\n',
                                'def serve(args: argparse.Namespace) -> int:\n'
                                '    raise SystemExit("ImportError: libcudart.so.13: '
                                'cannot open shared object file (this build is broken)")\n')
        Path(tmp, "vllm_standin.py").write_text(text)
        Path(tmp, "pyproject.toml").write_text(
            source.with_name("vllm_standin.pyproject.toml").read_text().replace(
                'version = "0.1.0"', f'version = "{version}"'))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                        str(fleet.STANDIN_WHEELS), tmp], check=True)


class Fleet3(SimFleet):
    def __init__(self, tmp, cloud):
        super().__init__(tmp, cloud)
        for i in (1, 2, 3):
            self.boot(f"spark{i}", i)
        self.package = {"spark1": "vllm-standin==0.1.0", "spark2": "vllm-standin==0.1.0",
                        "spark3": "vllm-standin==0.1.0"}
        self.extra: dict = {}

    def write(self, **group) -> None:
        hosts = {"spark1": {"litellm_bind_address": self.hosts[0].address,
                            "models": [MODEL]}}
        for name in ("spark2", "spark3"):
            hosts[name] = {"roles": ["vllm"], "models": [MODEL]}
        for name, package in self.package.items():
            hosts[name]["vllm_package"] = package
        for name, extra in self.extra.items():
            hosts[name].update(extra)
        self.write_hosts({"litellm_model_aliases": {},
                          "profiles": {"fast": {"local": ["qwen3-4b"],
                                                "cloud": "openrouter/fast"}}, **group}, hosts)

    def update(self, *args: str) -> subprocess.CompletedProcess:
        """`sparkstack update --yes ...`; its whole output in .stdout."""
        return self.sparkstack("update", "--yes", *args, timeout=1200)

    def key(self) -> str:
        return self.master_key("spark1")

    def fast_traffic(self) -> Traffic:
        return self.traffic(self.hosts[0], ["fast"], rate=6)

    def versions(self) -> dict[str, str]:
        found = {}
        for h in self.hosts:
            out = ssh(h, "python3 -c \"import urllib.request as u; "
                         "print(u.urlopen('http://localhost:8000/version').read().decode())\" "
                         f"2>/dev/null || python3 -c \"import urllib.request as u; print(u."
                         f"urlopen('http://{h.address}:8000/version').read().decode())\"",
                      check=False).stdout
            found[h.name] = json.loads(out)["version"] if out.strip() else "down"
        return found


@pytest.fixture(scope="module")
def three(sim):
    fleet.ensure_standin_wheels()
    build_standin("0.2.0")
    build_standin("0.3.0")
    build_standin("0.3.1", broken=True)
    f = sim(Fleet3)
    f.write()
    first = f.deploy()
    assert first.returncode == 0, first.output[-3000:]
    return f


def outcome(output: str) -> dict[str, str]:
    """The results table the update ends with: host -> what happened to it."""
    table = output.split("--> Update results:", 1)[1]
    return dict(re.findall(r"^    (spark\d+)\s+(\S.*)$", table, re.MULTILINE))


def test_the_vllm_stand_in_is_upgraded_one_spark_at_a_time_without_a_failure(three):
    three.package = {name: "vllm-standin==0.2.0" for name in three.package}
    three.write()
    with three.fast_traffic() as traffic:
        time.sleep(3)
        result = three.update("--batch", "1")
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "batch 1: spark1" in result.stdout and "batch 3: spark3" in result.stdout
    assert "vLLM: vllm-standin==0.1.0 -> vllm-standin==0.2.0" in result.stdout
    assert outcome(result.stdout) == {n: "updated" for n in ("spark1", "spark2", "spark3")}
    assert traffic.failures() == [], traffic.failures()[:3]
    assert traffic.rate("fast") >= 5
    assert three.versions() == {n: "0.2.0" for n in ("spark1", "spark2", "spark3")}
    # every host's previous vLLM stays beside the new one for a rollback
    layout = Layout()
    links = ssh(three.hosts[1], f"readlink {layout.venv('vllm')} "
                                f"{layout.service_root('vllm')}/previous").stdout.split()
    assert len(links) == 2 and links[0] != links[1]


def test_an_update_with_nothing_to_change_skips_every_host(three):
    result = three.update()
    assert result.returncode == 0, result.stdout[-3000:]
    for name in ("spark1", "spark2", "spark3"):
        assert f"{name}: up to date, skipped" in result.stdout


def test_a_version_that_cannot_start_is_rolled_back_and_the_rollout_stops(three):
    three.package = {"spark1": "vllm-standin==0.3.0", "spark2": "vllm-standin==0.3.1",
                     "spark3": "vllm-standin==0.3.0"}
    three.write()
    with three.fast_traffic() as traffic:
        time.sleep(3)
        result = three.update("--batch", "1")
        time.sleep(3)
    assert result.returncode != 0
    assert outcome(result.stdout) == {"spark1": "updated", "spark2": "rolled back",
                                      "spark3": "untouched"}
    assert "this build is broken" in result.stdout  # the journal excerpt
    assert traffic.failures() == [], traffic.failures()[:3]
    assert three.versions() == {"spark1": "0.3.0", "spark2": "0.2.0", "spark3": "0.2.0"}
    three.package["spark2"] = "vllm-standin==0.2.0"  # the owner pins it back
    three.write()


def test_a_rollback_after_a_failed_update_returns_the_fleet_to_one_version(three):
    """The last update that changed the fleet took effect on spark1 only (spark2 rolled
    itself back, spark3 never got there): a rollback undoes it on spark1, and reports
    the other two as they are, untouched."""
    back = three.update("--rollback")
    assert back.returncode == 0, back.stdout[-4000:]
    found = outcome(back.stdout)
    assert found["spark1"] == "rolled back (on request)"
    assert found["spark2"].startswith("skipped (not changed by update-")
    assert found["spark3"].startswith("skipped (not changed by update-")
    assert three.versions() == {n: "0.2.0" for n in ("spark1", "spark2", "spark3")}
    three.package = {name: "vllm-standin==0.2.0" for name in three.package}
    three.write()  # the owner puts the versions back in the inventory too
    assert run_deploy(three.inventory).returncode == 0
    assert three.versions() == {n: "0.2.0" for n in ("spark1", "spark2", "spark3")}


def test_an_update_is_refused_when_a_profile_would_have_nowhere_to_go(three):
    three.package["spark3"] = "vllm-standin==0.2.0"  # as it runs since the rollout stopped
    three.extra = {"spark3": {"models": [MODEL, {**MODEL, "name": "solo", "port": 8001}]}}
    three.write(profiles={"fast": {"local": ["qwen3-4b"], "cloud": "openrouter/fast"},
                          "solo": {"local": ["solo"]}})
    assert run_deploy(three.inventory).returncode == 0
    three.package["spark3"] = "vllm-standin==0.3.0"
    three.write(profiles={"fast": {"local": ["qwen3-4b"], "cloud": "openrouter/fast"},
                          "solo": {"local": ["solo"]}})
    before = ssh(three.hosts[2], "readlink /opt/sparkstack/vllm/current").stdout
    result = three.update("--limit", "spark3")
    assert result.returncode != 0
    assert ("spark3: update refused, nothing changed: profile(s) solo would have no other "
            "Spark and no cloud fallback while it updates") in result.stdout
    assert ssh(three.hosts[2], "readlink /opt/sparkstack/vllm/current").stdout == before
    three.extra = {}
    three.package["spark3"] = "vllm-standin==0.2.0"
    three.write()
    assert run_deploy(three.inventory).returncode == 0


def webui_chat(base: str, password: str) -> tuple[str, str]:
    """A chat of the Open WebUI admin the deploy made: (token, chat id)."""
    signin = httpx.post(f"{base}/api/v1/auths/signin", timeout=60, json={
        "email": "admin@localhost", "password": password})
    token = signin.json()["token"]
    chat = httpx.post(f"{base}/api/v1/chats/new", timeout=60,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"chat": {"title": "kept across updates", "models": ["fast"],
                                     "messages": [{"role": "user", "content": "hi"}]}})
    return token, chat.json()["id"]


def webui_still_has(base: str, chat_id: str, password: str) -> bool:
    signin = httpx.post(f"{base}/api/v1/auths/signin", timeout=60, json={
        "email": "admin@localhost", "password": password})
    chat = httpx.get(f"{base}/api/v1/chats/{chat_id}", timeout=60,
                     headers={"Authorization": f"Bearer {signin.json()['token']}"})
    return chat.status_code == 200 and chat.json()["chat"]["title"] == "kept across updates"


def litellm_version(host) -> str:
    return ssh(host, "/opt/sparkstack/litellm/current/bin/python -c 'import importlib."
                     "metadata as m; print(m.version(\"litellm\"))'").stdout.strip()


def test_a_litellm_upgrade_and_its_rollback_keep_open_webui_data(three):
    spark1 = three.hosts[0]
    tunnel = Tunnel(spark1, 8080)
    password = three.secrets("spark1")["openwebui_admin_password"]
    try:
        _, chat_id = webui_chat(tunnel.url, password)
        three.write(litellm_version="1.103.1")
        result = three.update("--limit", "spark1")
        assert result.returncode == 0, result.stdout[-4000:]
        assert re.search(r"LiteLLM: litellm\[proxy\]==1\.102\.4 .*-> litellm\[proxy\]==1\.103\.1",
                         result.stdout), result.stdout[-3000:]
        assert litellm_version(spark1) == "1.103.1"
        assert webui_still_has(tunnel.url, chat_id, password)
        with three.fast_traffic() as traffic:
            time.sleep(2)
        assert traffic.failures() == [] and len(traffic.answers) > 5
        back = three.update("--rollback", "--limit", "spark1")
        assert back.returncode == 0, back.stdout[-4000:]
        assert outcome(back.stdout)["spark1"] == "rolled back (on request)"
        assert litellm_version(spark1) == "1.102.4"
        assert webui_still_has(tunnel.url, chat_id, password)
        with three.fast_traffic() as traffic:
            time.sleep(2)
        assert traffic.failures() == [] and len(traffic.answers) > 5
    finally:
        tunnel.close()
