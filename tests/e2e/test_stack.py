"""End to end: the real deploy onto freshly booted simulated Sparks, checked with real
clients (openai and anthropic SDKs, httpx, psql) over real sockets.

The scenario runs in order, as a Spark owner would live it: first deploy of one Spark,
re-deploy with nothing changed, one model flag changed, a bad inventory refused, then a
second (vLLM-only) Spark added to the inventory and load-balanced.

The full-stack Spark is deployed with all three roots moved away from their defaults
(install_root, config_root, state_root under /srv/sparkstack) and LiteLLM listening on
the host's fleet address, as an owner serving the LAN would: every step below also
proves that the deploy, the gate and the health checks honour them.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from sparkstack_host.contract import Layout, read_env_file, write_env_file

from sparkstack.host_package import wheel
from sparkstack.simulated import fleet
from sparkstack.simulated.fleet import ssh
from tests.e2e.conftest import SimFleet
from tests.e2e.helpers import PYINFRA, REPO, Tunnel, checkout_copy, run_deploy, unit_starts

pytestmark = pytest.mark.e2e

VLLM_UNITS = ["sparkstack-vllm-qwen3-4b.service", "sparkstack-vllm-qwen3-coder-30b.service"]
LITELLM_UNITS = ["sparkstack-litellm@1.service", "sparkstack-litellm@2.service"]  # the default 2
UNITS = ["postgresql.service", *VLLM_UNITS, *LITELLM_UNITS, "sparkstack-frontdoor.service",
         "sparkstack-openwebui.service"]
LOCAL_PROFILES = {"fast": "qwen3-4b", "expert": "qwen3-coder-30b", "code": "qwen3-coder-30b"}
LAYOUT = Layout(install_root="/srv/sparkstack/opt", config_root="/srv/sparkstack/etc",
                state_root="/srv/sparkstack/var")


class Stack(SimFleet):
    """State shared by the ordered steps of the scenario."""

    reuse_venvs = False  # its first deploy builds every venv from nothing

    def __init__(self, tmp, cloud):
        super().__init__(tmp, cloud)
        self.secrets_dir = tmp / "secrets"
        self.boot("spark1", 1)
        self.first = None
        self.tunnels: dict[int, Tunnel] = {}

    def write(self, host_data=None, hosts=None, **group):
        spark1 = {"install_root": LAYOUT.install_root, "config_root": LAYOUT.config_root,
                  "state_root": LAYOUT.state_root,
                  "litellm_bind_address": self.hosts[0].address}
        host_data = {**(host_data or {})}
        host_data["spark1"] = {**spark1, **host_data.get("spark1", {})}
        self.write_hosts(group, host_data, hosts)

    @property
    def litellm_url(self) -> str:
        """LiteLLM listens on spark1's fleet address: clients reach it there."""
        return f"http://{self.hosts[0].address}:4000"

    def tunnel(self, port: int) -> Tunnel:
        if port not in self.tunnels:
            self.tunnels[port] = Tunnel(self.hosts[0], port)
        return self.tunnels[port]

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.litellm_url + "/v1",
                             api_key=self.master_key("spark1"), max_retries=0)

    def close(self):
        for t in self.tunnels.values():
            t.close()


@pytest.fixture(scope="module")
def stack(sim):
    s = sim(Stack)
    s.write()
    s.first = s.deploy()
    yield s
    s.close()


def test_first_deploy_leaves_every_unit_active_and_enabled(stack):
    assert stack.first.returncode == 0, stack.first.output[-5000:]
    host = stack.hosts[0]
    active = ssh(host, "systemctl is-active " + " ".join(UNITS), check=False).stdout.split()
    enabled = ssh(host, "systemctl is-enabled " + " ".join(UNITS), check=False).stdout.split()
    assert active == ["active"] * len(UNITS)
    assert enabled == ["enabled"] * len(UNITS)


def test_moved_roots_and_the_fleet_address_are_honoured_by_every_part(stack):
    host = stack.hosts[0]
    leftovers = ssh(host, "ls -d /opt/sparkstack /etc/sparkstack /var/lib/sparkstack",
                    check=False)
    assert leftovers.stdout == "" and leftovers.stderr.count("No such file") == 3
    ssh(host, f"ls {LAYOUT.host_program('sparkstack-routes')} {LAYOUT.routes_plan} "
              f"{LAYOUT.litellm_config} {LAYOUT.manifest} {LAYOUT.secrets_env('litellm')} "
              f"{LAYOUT.cache_dir('vllm', 'huggingface')} {LAYOUT.state_dir('openwebui')}/data")
    # LiteLLM listens on the fleet address only, and the gate routed every model there
    listen = ssh(host, "ss -Hltn 'sport = :4000'").stdout.split("\n")
    assert {line.split()[3] for line in listen if line.strip()} == {f"{host.address}:4000"}
    assert routed_backends(host) == {"spark1:8000", "spark1:8001"}
    # Open WebUI is pointed at LiteLLM where LiteLLM listens
    env = ssh(host, "systemctl show -p Environment sparkstack-openwebui.service").stdout
    assert f"OPENAI_API_BASE_URL=http://{host.address}:4000/v1" in env


def test_systemd_reads_environment_files_as_the_contract_reads_them(stack):
    from tests.test_contract import TRICKY
    text = write_env_file(TRICKY)
    assert read_env_file(text) == TRICKY
    ssh(stack.hosts[0], f"cat > /root/tricky.env <<'SPARKSTACK_EOF'\n{text}SPARKSTACK_EOF")
    out = ssh(stack.hosts[0], "systemd-run --quiet --wait --pipe "
                              "-p EnvironmentFile=/root/tricky.env /usr/bin/env").stdout
    seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert {key: seen.get(key) for key in TRICKY} == TRICKY


def test_systemd_reads_rendered_unit_values_back_exactly(stack):
    """What the unit templates write for a value (an argument of ExecStart, an
    Environment= assignment) is what the service gets: no specifier or variable is
    expanded, no quote or backslash lost."""
    from sparkstack.render import environment_line, exec_arg
    from tests.test_contract import TRICKY
    words = [v for v in TRICKY.values() if v]
    unit = "\n".join([
        "[Service]", "Type=oneshot", "StandardOutput=file:/root/tricky.json",
        *(environment_line(k, v) for k, v in TRICKY.items()),
        "ExecStart=/usr/bin/python3 -c " + exec_arg(
            "import json, os, sys; print(json.dumps([sys.argv[1:], dict(os.environ)]))")
        + " " + " ".join(exec_arg(w) for w in words)]) + "\n"
    host = stack.hosts[0]
    ssh(host, f"cat > /run/systemd/system/sparkstack-tricky.service <<'SPARKSTACK_EOF'\n"
              f"{unit}SPARKSTACK_EOF\nsystemctl daemon-reload && "
              "systemctl start sparkstack-tricky.service")
    argv, env = json.loads(ssh(host, "cat /root/tricky.json").stdout)
    ssh(host, "rm /run/systemd/system/sparkstack-tricky.service; systemctl daemon-reload")
    assert argv == words
    assert {k: env.get(k) for k in TRICKY} == TRICKY


def test_local_profiles_are_answered_by_vllm_and_cloud_by_the_cloud(stack):
    client = stack.openai()
    for profile, served in LOCAL_PROFILES.items():
        reply = client.chat.completions.create(
            model=profile, messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        assert reply.choices[0].message.content.startswith(f"standin:{served}@spark1"), profile
    before = stack.cloud.requests_served
    reply = client.chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content.startswith("cloud-standin:")
    assert stack.cloud.requests_served == before + 1


def test_streaming_and_tool_calls_pass_through_litellm(stack):
    client = stack.openai()
    chunks = client.chat.completions.create(
        model="code", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("standin:qwen3-coder-30b@spark1")
    reply = client.chat.completions.create(
        model="code", messages=[{"role": "user", "content": "get_weather: Oslo?"}],
        tools=[{"type": "function", "function": {
            "name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}}])
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "standin"}


def test_claude_code_names_reach_the_local_code_model_in_anthropic_format(stack):
    client = anthropic.Anthropic(base_url=stack.litellm_url,
                                 api_key=stack.secrets("spark1")["litellm_master_key"],
                                 max_retries=0)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=32,
                                     messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text.startswith("standin:qwen3-coder-30b@spark1")
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=32,
                                messages=[{"role": "user", "content": "hello"}]) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed.startswith("standin:qwen3-coder-30b@spark1")


def test_vllm_refuses_requests_without_its_api_key(stack):
    out = ssh(stack.hosts[0], "python3 -c \"import urllib.request as u, urllib.error as e\n"
              "try: u.urlopen('http://127.0.0.1:8000/v1/models')\n"
              "except e.HTTPError as x: print(x.code)\"").stdout.strip()
    assert out == "401"


ARTIFACTS = REPO / ".sim" / "artifacts"
PICKER = {"Fast — Qwen3 4B on this Spark", "Expert — Qwen3 Coder 30B on this Spark",
          "Code — Qwen3 Coder 30B on this Spark", "Cloud — OpenRouter",
          "Auto — picks Fast, Expert or Code"}


def test_open_webui_in_a_browser_offers_the_profiles_and_answers_from_the_local_model(
        stack):
    """Headless Chromium signs in as the admin the deploy made, finds exactly the
    profiles (by their display names) in the model picker, asks `auto`, and sees the
    local model's answer."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = stack.tunnel(8080).url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{base}/auth", wait_until="networkidle")
            # a fresh Open WebUI already has its admin: the one the deploy made
            page.fill("#email", "admin@localhost")
            page.fill("#password", stack.secrets("spark1")["openwebui_admin_password"])
            page.locator("#password").press("Enter")  # submits the sign-in form
            page.wait_for_url(lambda url: "/auth" not in url, timeout=60_000)
            page.wait_for_load_state("networkidle")
            # A new account is first shown the release notes ("What's New"), over the page.
            notes = page.get_by_role("dialog")
            try:
                notes.first.wait_for(timeout=10_000)
                page.keyboard.press("Escape")
                notes.first.wait_for(state="hidden", timeout=10_000)
            except PlaywrightTimeout:
                pass
            page.locator("#model-selector-model-button").click()
            items = page.get_by_role("option")
            items.first.wait_for(timeout=30_000)
            offered = {t.strip().split("\n")[0] for t in items.all_inner_texts() if t.strip()}
            page.screenshot(path=str(ARTIFACTS / "openwebui-picker.png"))
            assert offered == PICKER, offered
            # the auto profile picks the profile (Open WebUI's own request decides which:
            # it may offer tools); a local model's answer comes back either way
            page.get_by_role("option", name="Auto — picks Fast, Expert or Code").click()
            page.locator("#chat-input").click()
            page.keyboard.type("hi")
            page.keyboard.press("Enter")
            answer = page.get_by_text(re.compile(r"standin:qwen3-[a-z0-9-]+@spark1")).first
            answer.wait_for(timeout=90_000)
            page.screenshot(path=str(ARTIFACTS / "openwebui-chat.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "openwebui-chat.png").stat().st_size > 10_000
    # the request log writes its rows (and, the first time, its table) within seconds
    query = ("SELECT auto_profile FROM sparkstack_requests WHERE final AND "
             "requested = 'auto' AND status = 'ok'")
    deadline, picked = time.monotonic() + 20, ""
    while time.monotonic() < deadline and not picked:
        time.sleep(1)
        picked = ssh(stack.hosts[0], "cd / && runuser -u postgres -- psql -d litellm -XAtc "
                                     f"\"{query}\"", check=False).stdout
    assert set(picked.split()) & {"fast", "code", "expert"}, picked


def test_open_webui_is_up_and_lists_the_profiles_from_litellm(stack):
    base = stack.tunnel(8080).url
    assert httpx.get(f"{base}/health", timeout=10).json() == {"status": True}
    # the deploy made the admin before Open WebUI listened: a stranger who reaches it
    # first cannot make themselves its admin, nor sign up at all (openwebui_signup off)
    stranger = httpx.post(f"{base}/api/v1/auths/signup", timeout=30, json={
        "name": "Stranger", "email": "first@example.com", "password": "s3cret-Pass!"})
    assert stranger.status_code == 403, stranger.text
    signin = httpx.post(f"{base}/api/v1/auths/signin", timeout=30, json={
        "email": "admin@localhost",
        "password": stack.secrets("spark1")["openwebui_admin_password"]})
    assert signin.status_code == 200 and signin.json()["role"] == "admin"
    token = signin.json()["token"]
    models = httpx.get(f"{base}/api/models", timeout=30,
                       headers={"Authorization": f"Bearer {token}"}).json()["data"]
    ids = {m["id"] for m in models}
    assert ids == {"fast", "expert", "code", "cloud", "auto"}


def test_clients_see_and_can_call_only_the_profiles(stack):
    client = stack.openai()
    assert {m.id for m in client.models.list()} == {"fast", "expert", "code", "cloud",
                                                    "auto"}
    for internal in ("fast-cloud-fallback", "openrouter/qwen/qwen3-4b:free"):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model=internal, messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def exposure(host, unit: str) -> float:
    """`systemd-analyze security`'s overall exposure of a unit on the host."""
    out = ssh(host, f"systemd-analyze security --no-pager {unit} | tail -1").stdout
    match = re.search(r"exposure level for \S+: (\d+\.\d)", out)
    assert match, out
    return float(match.group(1))


def test_units_are_sandboxed_and_write_only_their_own_state(stack):
    host = stack.hosts[0]
    cluster = ssh(host, "systemctl list-units --plain --no-legend 'postgresql@*' | "
                        "cut -d' ' -f1").stdout.split()
    assert len(cluster) == 1, cluster
    limits = {"sparkstack-litellm@1.service": 2.5, "sparkstack-openwebui.service": 2.5,
              "sparkstack-frontdoor.service": 2.5,
              "sparkstack-litellm-routes.service": 2.5, cluster[0]: 5.0,
              **{unit: 4.5 for unit in VLLM_UNITS}}
    found = {unit: exposure(host, unit) for unit in limits}
    assert {u: e for u, e in found.items() if e > limits[u]} == {}, found
    for unit, service in (("sparkstack-litellm@1.service", "litellm"),
                          ("sparkstack-openwebui.service", "openwebui"),
                          (VLLM_UNITS[0], "vllm")):
        show = ssh(host, f"systemctl show -p ProtectSystem -p ReadWritePaths {unit}").stdout
        assert "ProtectSystem=strict" in show
        assert f"ReadWritePaths={LAYOUT.state_dir(service)}\n" in show, show
    # the drop-in is the administrator's (/etc), so a package upgrade keeps it
    dropin = ssh(host, f"systemctl show -p DropInPaths --value {cluster[0]}").stdout
    assert "/etc/systemd/system/postgresql@.service.d/sparkstack-sandbox.conf" in dropin


def test_postgres_has_one_database_and_role_per_consumer_on_localhost(stack):
    host = stack.hosts[0]
    dbs = ssh(host, "cd / && sudo -u postgres psql -tAc "
                    "\"SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database\"")
    assert {"litellm:litellm", "openwebui:openwebui"} <= set(dbs.stdout.split())
    pw = ssh(host, "cd / && sudo -u postgres psql -tAc \"SELECT rolname || ':' || "
                   "left(rolpassword, 13) FROM pg_authid WHERE rolname IN "
                   "('litellm','openwebui') ORDER BY 1\"").stdout.split()
    assert pw == ["litellm:SCRAM-SHA-256", "openwebui:SCRAM-SHA-256"]
    secret = stack.secrets("spark1")["postgres_litellm_password"]
    login = ssh(host, f"PGPASSWORD='{secret}' psql -h 127.0.0.1 -U litellm -d litellm "
                      "-tAc 'SELECT current_user'")
    assert login.stdout.strip() == "litellm"
    wrong = ssh(host, "PGPASSWORD=wrong psql -h 127.0.0.1 -U litellm -d litellm -c 'SELECT 1'",
                check=False)
    assert "password authentication failed" in wrong.stderr
    listen = ssh(host, "ss -Hltn 'sport = :5432'").stdout.split("\n")
    addrs = {line.split()[3].rsplit(":", 1)[0] for line in listen if line.strip()}
    assert addrs and addrs <= {"127.0.0.1", "[::1]"}


def test_no_secret_in_deploy_output_or_world_readable_files(stack):
    host = stack.hosts[0]
    secrets = [v for v in stack.secrets("spark1").values()] + [stack.cloud.api_key]
    for value in secrets:
        assert value not in stack.first.output
    patterns = "\n".join(secrets)
    ssh(host, f"cat > /root/.secret-patterns <<'EOF'\n{patterns}\nEOF")
    leaked = ssh(host, "find /etc /srv /opt /var/lib /tmp /var/tmp /run "
                       "/home -xdev -type f -perm -004 -print0 2>/dev/null | "
                       "xargs -0 grep -lsF -f /root/.secret-patterns; "
                       "ps -eo args | grep -F -f /root/.secret-patterns | grep -v grep",
                 check=False)
    assert leaked.stdout.strip() == "", f"secrets readable by everyone in: {leaked.stdout}"
    # nor in any journal, nor in what the services write (their state and logs)
    logged = ssh(host, "journalctl --no-pager -o cat | grep -cF -f /root/.secret-patterns",
                 check=False).stdout.strip()
    assert logged == "0", "a secret is in the journal"
    written = ssh(host, f"grep -rlsF -f /root/.secret-patterns {LAYOUT.state_root} "
                        "/var/log /tmp /var/tmp", check=False).stdout.strip()
    assert written == "", f"a secret is written in: {written}"
    modes = ssh(host, f"stat -c '%a %U %n' {LAYOUT.config_root}/*/secrets.env "
                      f"{LAYOUT.config_root}/postgres/roles.sql").stdout.split("\n")
    assert all(line.startswith("600 root ") for line in modes if line)


def test_second_run_changes_nothing(stack):
    before = unit_starts(stack.hosts[0], UNITS)
    again = run_deploy(stack.inventory)
    assert again.returncode == 0, again.output[-3000:]
    assert again.grand_total()["changed"] == "-", again.output[-3000:]
    assert unit_starts(stack.hosts[0], UNITS) == before


def test_a_changed_host_package_is_reinstalled_and_restarts_only_litellm(stack):
    """The host package's source changes (as after a sparkstack upgrade): the new wheel
    goes into a new versioned host venv and a new library folder for LiteLLM, and only
    LiteLLM (whose launcher runs in its process) restarts."""
    host = stack.hosts[0]
    before = unit_starts(host, UNITS)
    old = wheel().sha256
    newer = checkout_copy(stack.tmp / "newer-sparkstack")  # the repository is left alone
    marker = newer / "checks" / "sparkstack_host" / "__init__.py"
    marker.write_text(marker.read_text() + "# a change of the host package (test)\n")
    result = run_deploy(stack.inventory, checkout=newer)
    assert result.returncode == 0, result.output[-3000:]
    new = subprocess.run([sys.executable, "-c", "from sparkstack.host_package import "
                          "wheel; print(wheel().sha256)"], cwd=newer, check=True,
                         env={**os.environ, "PYTHONPATH": str(newer)},
                         capture_output=True, text=True).stdout.strip()
    assert new != old
    unit = ssh(host, "systemctl cat sparkstack-litellm@1.service").stdout
    assert LAYOUT.host_lib(new) in unit and LAYOUT.host_lib(old) not in unit
    installed = ssh(host, f"{LAYOUT.host_venv}/bin/pip show sparkstack-host >/dev/null "
                          f"&& grep -c 'a change of the host package' "
                          f"{LAYOUT.host_venv}/lib/python3*/site-packages/"
                          "sparkstack_host/__init__.py").stdout.strip()
    assert installed == "1"
    after = unit_starts(host, UNITS)
    assert {u for u in UNITS if after[u] != before[u]} == set(LITELLM_UNITS)
    assert run_deploy(stack.inventory).returncode == 0
    assert run_deploy(stack.inventory).grand_total()["changed"] == "-"


def test_changing_one_model_flag_restarts_only_that_unit(stack):
    host = stack.hosts[0]
    before = unit_starts(host, UNITS)
    stack.write(model_defaults={"max_num_seqs": 8},
                host_data={"spark1": {"models": [
                    {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507",
                     "port": 8000, "gpu_memory_utilization": 0.15,
                     "max_model_len": 32768, "max_num_seqs": 4},
                    {"name": "qwen3-coder-30b",
                     "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8", "port": 8001,
                     "gpu_memory_utilization": 0.45, "max_model_len": 65536,
                     "tool_call_parser": "qwen3_coder"}]}})
    result = run_deploy(stack.inventory)
    assert result.returncode == 0, result.output[-3000:]
    after = unit_starts(host, UNITS)
    changed = {u for u in UNITS if after[u] != before[u]}
    # LiteLLM takes the model's route out and back in place: it is not restarted
    assert changed == {"sparkstack-vllm-qwen3-4b.service"}
    exec_start = ssh(host, "systemctl show -p ExecStart --value "
                           "sparkstack-vllm-qwen3-4b.service").stdout
    assert "--max-num-seqs 4" in exec_start


def test_changing_litellm_settings_restarts_only_litellm(stack):
    host = stack.hosts[0]
    before = unit_starts(host, UNITS)
    stack.write(litellm_num_retries=2, host_data={"spark1": {"models": [
        {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
         "gpu_memory_utilization": 0.15, "max_model_len": 32768, "max_num_seqs": 4},
        {"name": "qwen3-coder-30b", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8",
         "port": 8001, "gpu_memory_utilization": 0.45, "max_model_len": 65536,
         "tool_call_parser": "qwen3_coder"}]}})
    result = run_deploy(stack.inventory)
    assert result.returncode == 0, result.output[-3000:]
    after = unit_starts(host, UNITS)
    assert {u for u in UNITS if after[u] != before[u]} == set(LITELLM_UNITS)


def test_health_checks_every_profile_in_both_formats(stack):
    result = subprocess.run([str(Path(sys.executable).with_name("sparkstack")), "health",
                             "-i", str(stack.inventory), "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    rows = {r["check"]: r for r in json.loads(result.stdout)}
    assert result.returncode == 0, result.stdout
    for profile in ("fast", "expert", "code", "cloud"):
        for api in ("openai", "anthropic"):
            assert rows[f"profile {profile} ({api})"]["ok"]
    for check in ("gpu", "postgres", "litellm", "openwebui", "vllm qwen3-4b",
                  "unit sparkstack-openwebui.service"):
        assert rows[check]["ok"], rows[check]
    # LiteLLM's own database is off on the simulated Sparks: its UI cannot log in
    assert rows["litellm ui"]["ok"] and rows["litellm ui"]["detail"].startswith("off: ")


def chat(client: openai.OpenAI, model: str) -> tuple[str, str]:
    """One completion: who answered, and how many fallbacks LiteLLM tried first."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, timeout=60)
    return (raw.parse().choices[0].message.content,
            raw.headers.get("x-litellm-attempted-fallbacks", "0"))


def routed_backends(host) -> set[str]:
    config = json.loads(ssh(host, f"sed 1d {LAYOUT.litellm_config}").stdout)
    return {e["model_info"]["sparkstack_backend"] for e in config["model_list"]
            if "sparkstack_backend" in e["model_info"]}


def test_readiness_gate_moves_a_reloading_model_to_the_cloud_and_back_without_a_failure(
        stack):
    """qwen3-4b restarts and loads for 8 s under traffic on `fast`. Its route is taken
    out before it stops and put back only once it passes the readiness probe, both in
    place (LiteLLM reloads, never restarts): `fast` is answered by the cloud meanwhile,
    and no request ever tries the loading model (no fallback attempted) or fails."""
    client = stack.openai()
    answers, failures, done = [], [], threading.Event()
    loading_routes = []

    def traffic():
        for _ in range(600):  # bounded
            if done.is_set():
                break
            try:
                answers.append(chat(client, "fast"))
            except Exception as e:  # any failure a client would see
                failures.append(repr(e))
            time.sleep(0.2)

    def watch_routes():
        # while the model is loading (its port closed), LiteLLM must not route to it
        while not done.is_set():
            # the config first: the gate writes it before the model stops
            out = ssh(stack.hosts[0], f"sed 1d {LAYOUT.litellm_config}; "
                                      "ss -Hltn 'sport = :8000' | wc -l").stdout
            config, listening = out.rstrip("\n").rsplit("\n", 1)
            if listening.strip() == "0":
                loading_routes.append({e["model_info"].get("sparkstack_backend") for e in
                                       json.loads(config)["model_list"]})
            time.sleep(0.3)

    litellm_started = unit_starts(stack.hosts[0], LITELLM_UNITS)
    sender = threading.Thread(target=traffic)
    watcher = threading.Thread(target=watch_routes)
    sender.start()
    watcher.start()
    try:
        # the same LiteLLM settings as the step before: only the model changes
        stack.write(litellm_num_retries=2, host_data={"spark1": {"models": [
            {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
             "gpu_memory_utilization": 0.15, "max_model_len": 32768,
             "environment": {"VLLM_STANDIN_LOAD_SECONDS": "8"}},
            {"name": "qwen3-coder-30b", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8",
             "port": 8001, "gpu_memory_utilization": 0.45, "max_model_len": 65536,
             "tool_call_parser": "qwen3_coder"}]}})
        result = run_deploy(stack.inventory)
        time.sleep(3)
    finally:
        done.set()
        sender.join()
        watcher.join()
    assert result.returncode == 0, result.output[-3000:]
    assert failures == []
    # the routes changed in place: LiteLLM never restarted
    assert unit_starts(stack.hosts[0], LITELLM_UNITS) == litellm_started
    who = [a.split("@")[0].split(":")[0] for a, _ in answers]
    assert "cloud-standin" in who and who[0] == who[-1] == "standin", who
    first_cloud, last_cloud = who.index("cloud-standin"), len(who) - 1 - who[::-1].index(
        "cloud-standin")
    assert set(who[first_cloud:last_cloud + 1]) == {"cloud-standin"}, who  # one switch each way
    assert {fallbacks for _, fallbacks in answers} == {"0"}, answers
    assert loading_routes and all("spark1:8000" not in r for r in loading_routes)
    assert routed_backends(stack.hosts[0]) == {"spark1:8000", "spark1:8001"}


def test_a_model_that_never_becomes_ready_leaves_its_profile_on_the_cloud(stack):
    """`expert` moves to a model that never loads: the deploy fails for the host with
    the unit's log, and `expert` is answered by its cloud model without a failed try."""
    models = [{"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
               "gpu_memory_utilization": 0.15, "max_model_len": 32768},
              {"name": "qwen3-coder-30b", "model": "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8",
               "port": 8001, "gpu_memory_utilization": 0.45, "max_model_len": 65536,
               "tool_call_parser": "qwen3_coder"},
              {"name": "stuck", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8002,
               "gpu_memory_utilization": 0.15, "max_model_len": 32768,
               "environment": {"VLLM_STANDIN_NEVER_READY": "1"}}]
    profiles = {"fast": {"local": ["qwen3-4b"], "cloud": "openrouter/qwen/qwen3-4b:free"},
                "expert": {"local": ["stuck"], "cloud": "openrouter/expert-in-the-cloud"},
                "code": {"local": ["qwen3-coder-30b"], "cloud": "openrouter/qwen/qwen3-coder"},
                "cloud": {"local": [], "cloud": "openrouter/qwen/qwen3-235b-a22b:free"}}
    # a shorter start timeout rewrites the running units: a swap of their own, first
    stack.write(vllm_start_timeout=12, host_data={"spark1": {"models": models[:2]}})
    assert run_deploy(stack.inventory).returncode == 0
    stack.write(vllm_start_timeout=12, profiles=profiles,
                host_data={"spark1": {"models": models}})
    result = run_deploy(stack.inventory)
    assert result.returncode != 0
    assert "[spark1] last log lines of sparkstack-vllm-stuck.service:" in result.output
    assert "not ready after 12 s" in result.output
    client = stack.openai()
    for _ in range(4):
        reply, fallbacks = chat(client, "expert")
        assert reply.startswith("cloud-standin:") and "expert-in-the-cloud" in reply, reply
        assert fallbacks == "0"
    assert chat(client, "fast")[0].startswith("standin:qwen3-4b@spark1")
    assert routed_backends(stack.hosts[0]) == {"spark1:8000", "spark1:8001"}
    health = subprocess.run([str(Path(sys.executable).with_name("sparkstack")), "health",
                             "-i", str(stack.inventory), "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    rows = {r["check"]: r for r in json.loads(health.stdout)}
    assert health.returncode == 1
    assert rows["litellm routes"]["detail"] == ("not routed (not ready): spark1:8002; on "
                                                "the cloud only: expert")
    assert rows["profile expert (openai)"]["ok"]  # served, by the cloud


@pytest.mark.parametrize("mistake, message", [
    ({"litellm_port": 8000},
     "models[0].port (qwen3-4b) = 8000: clashes with litellm_port = 8000"),
    ({"litellm_bind_address": "10.77.0.99"},
     "litellm_bind_address = '10.77.0.99': not an address of this host"),
    ({"openwebui_bind_address": "localhost:8080"},
     "openwebui_bind_address = 'localhost:8080': must be an IP address"),
    ({"install_root": "srv/opt"}, "install_root = 'srv/opt'"),
    ({"model_defaults": {"extra_args": ["--enforce-eager\nExecStartPre=/bin/false"]}},
     "must be a vllm serve flag"),
])
def test_bad_inventory_is_refused_before_any_host_changes(stack, mistake, message):
    host = stack.hosts[0]
    config = ssh(host, f"sha256sum {LAYOUT.litellm_config} "
                       "/etc/systemd/system/sparkstack-*.service").stdout
    before = unit_starts(host, UNITS)
    data = dict(mistake)
    spark1 = {k: data.pop(k) for k in ("litellm_bind_address", "install_root")
              if k in data}
    stack.write(host_data={"spark1": spark1}, **data)
    try:
        result = run_deploy(stack.inventory)
    finally:
        stack.write()
    assert result.returncode != 0
    assert message in result.output, result.output[-2000:]
    assert "Traceback" not in result.output
    assert ssh(host, f"sha256sum {LAYOUT.litellm_config} "
                     "/etc/systemd/system/sparkstack-*.service").stdout == config
    assert unit_starts(host, UNITS) == before


def test_a_second_spark_serving_the_same_model_is_load_balanced(stack):
    stack.boot("spark2", 2)
    models = [{"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
               "gpu_memory_utilization": 0.15, "max_model_len": 32768}]
    stack.write(host_data={"spark2": {"roles": ["vllm"], "models": models}})
    result = run_deploy(stack.inventory)
    assert result.returncode == 0, result.output[-3000:]
    spark2 = stack.hosts[1]
    # spark2 serves only vLLM, on its fleet address because spark1's LiteLLM routes to it.
    assert ssh(spark2, "systemctl is-active sparkstack-vllm-qwen3-4b.service").stdout.strip() \
        == "active"
    listen = ssh(spark2, "ss -Hltn 'sport = :8000'").stdout
    assert spark2.address in listen
    assert ssh(spark2, "systemctl list-unit-files 'sparkstack-litellm*' 'postgresql*' "
                       "--no-legend", check=False).stdout.strip() == ""
    client = stack.openai()
    answered_by = collections.Counter()
    for _ in range(24):
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        answered_by[reply.choices[0].message.content.split("@")[1].split(":")[0]] += 1
    assert set(answered_by) == {"spark1", "spark2"}, answered_by
    assert min(answered_by.values()) >= 4, answered_by


def test_a_model_removed_from_the_inventory_loses_its_unit(stack):
    spark2 = stack.hosts[1]
    models = [{"name": "qwen3-4b-b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8002,
               "gpu_memory_utilization": 0.15}]
    stack.write(host_data={"spark2": {"roles": ["vllm"], "models": models}})
    result = run_deploy(stack.inventory)
    assert result.returncode == 0, result.output[-3000:]
    listing = ssh(spark2, "systemctl list-units --all --no-legend --plain "
                          "'sparkstack-vllm-*'").stdout
    states = {line.split()[0]: line.split()[1:4] for line in listing.splitlines()}
    assert states["sparkstack-vllm-qwen3-4b-b.service"] == ["loaded", "active", "running"]
    # the removed unit may linger in systemd's memory as not-found, but never runs
    assert states.get("sparkstack-vllm-qwen3-4b.service",
                      ["not-found", "inactive", "dead"]) == ["not-found", "inactive", "dead"]
    assert ssh(spark2, "ls /etc/systemd/system/ | grep sparkstack-vllm").stdout.split() == [
        "sparkstack-vllm-qwen3-4b-b.service"]
    # spark1's LiteLLM no longer routes fast to spark2 (spark2 stopped serving qwen3-4b)
    client = stack.openai()
    for _ in range(6):
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert "@spark1:" in reply.choices[0].message.content


SPARK2 = {"spark2": {"roles": ["vllm"], "models": [
    {"name": "qwen3-4b-b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8002,
     "gpu_memory_utilization": 0.15}]}}


def every_profile_answers(stack) -> dict[str, str]:
    client = stack.openai()
    return {p: chat(client, p)[0].split(" ")[0] for p in ("fast", "expert", "code", "cloud")}


def test_a_run_that_fails_half_way_leaves_every_profile_answering(stack):
    """A new LiteLLM release from a package index that cannot be reached: the install
    fails beside the running venv, the run stops, and every service keeps serving its
    previous version; the next good run repairs what the failed one changed."""
    host = stack.hosts[0]
    stack.write(host_data=SPARK2)
    assert run_deploy(stack.inventory).returncode == 0
    before = unit_starts(host, UNITS)
    stack.write(host_data=SPARK2, litellm_version="1.103.1",
                pip_index_url="http://10.77.0.1:9/simple")
    failed = run_deploy(stack.inventory)
    assert failed.returncode != 0
    assert "10.77.0.1" in failed.output  # pip says which index it could not reach
    assert unit_starts(host, UNITS) == before
    answered = every_profile_answers(stack)
    assert answered["fast"].startswith("standin:qwen3-4b@spark1")
    assert answered["code"].startswith("standin:qwen3-coder-30b@spark1")
    assert answered["cloud"].startswith("cloud-standin:")
    stack.write(host_data=SPARK2)
    good = run_deploy(stack.inventory)
    assert good.returncode == 0, good.output[-3000:]
    assert "10.77.0.1:9" not in ssh(host, f"cat {LAYOUT.pip_conf}").stdout
    assert ssh(host, f"{LAYOUT.venv('litellm')}/bin/python -c 'import importlib.metadata as m;"
                     " print(m.version(\"litellm\"))'").stdout.strip() == "1.102.4"
    assert run_deploy(stack.inventory).grand_total()["changed"] == "-"


def test_a_unit_systemd_refuses_never_replaces_the_running_one(stack):
    """The deploy's file operation checks a unit with `systemd-analyze verify` beside
    the old one: a unit systemd refuses stops the run, the old unit file stays, nothing
    restarts, every profile answers, and a good run finds nothing to repair."""
    host = stack.hosts[0]
    unit = "/etc/systemd/system/sparkstack-openwebui.service"
    before, starts = ssh(host, f"sha256sum {unit}").stdout, unit_starts(host, UNITS)
    proc = subprocess.run([PYINFRA, "-y", str(stack.inventory),
                           "tests/e2e/deploys/refused_unit.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "systemd refuses this unit; the one in place is kept" in proc.stdout + proc.stderr
    assert "fatal error" in proc.stdout + proc.stderr
    assert ssh(host, f"sha256sum {unit}").stdout == before
    assert ssh(host, "ls -A /etc/systemd/system/.sparkstack-new",
               check=False).stdout.strip() == ""
    assert unit_starts(host, UNITS) == starts
    answered = every_profile_answers(stack)
    assert answered["fast"].startswith("standin:qwen3-4b@spark1")
    assert run_deploy(stack.inventory).grand_total()["changed"] == "-"


def test_a_service_whose_port_another_process_holds_fails_fast_and_says_why(stack):
    """Open WebUI does not exit when it cannot listen: its readiness wait sees another
    user's process on the port and fails the start in seconds (not its 10-minute start
    timeout) with the reason; with the port free again it starts."""
    host = stack.hosts[0]
    unit = "sparkstack-openwebui.service"
    ssh(host, f"systemctl stop {unit} && systemd-run --unit port-squatter -p User=nobody "
              "python3 -m http.server 8080 --bind 127.0.0.1 && sleep 1")
    try:
        start = time.monotonic()
        failed = ssh(host, f"systemctl start {unit}", check=False)
        took = time.monotonic() - start
        journal = ssh(host, f"journalctl -u {unit} -n 20 --no-pager").stdout
    finally:
        ssh(host, "systemctl stop port-squatter", check=False)
    assert failed.returncode != 0 and took < 60, took
    assert "port 8080 is held by another process" in journal
    ssh(host, f"systemctl reset-failed {unit}; systemctl start {unit}")
    assert ssh(host, f"systemctl is-active {unit}").stdout.strip() == "active"


def test_a_rebooted_spark_serves_from_the_cloud_then_locally_without_a_failure(stack):
    """After a reboot every unit comes back by itself; a client that sends as soon as
    LiteLLM accepts connections is answered by the cloud while the models load, then
    by the local models, and never fails."""
    from tests.e2e.traffic import Traffic
    # models that load for a while, so that LiteLLM is up before them
    stack.write(host_data=SPARK2, vllm_environment={"VLLM_STANDIN_LOAD_SECONDS": "25"})
    assert run_deploy(stack.inventory).returncode == 0
    key = stack.secrets("spark1")["litellm_master_key"]
    for t in stack.tunnels.values():
        t.close()
    stack.tunnels.clear()
    cluster = ssh(stack.hosts[0], "systemctl list-units --plain --no-legend "
                                  "'postgresql@*' | cut -d' ' -f1").stdout.split()
    assert len(cluster) == 1, cluster
    down = time.monotonic()
    host = stack.hosts[0] = fleet.reboot(stack.hosts[0])
    deadline = time.monotonic() + 180
    while True:
        try:
            socket.create_connection((host.address, 4000), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "LiteLLM's socket did not come back"
            time.sleep(0.2)
    print(f"reboot: the front door accepts connections {time.monotonic() - down:.1f} s "
          "after the reboot began")
    local = {"fast": "qwen3-4b@spark1", "code": "qwen3-coder-30b@spark1"}
    with Traffic(stack.litellm_url, key, list(local), rate=4) as traffic:
        deadline = time.monotonic() + 400
        while not all(traffic.sequence(p)[-1:] == [who] for p, who in local.items()):
            assert time.monotonic() < deadline, {p: traffic.sequence(p) for p in local}
            time.sleep(1)
        time.sleep(3)
    assert traffic.failures() == []
    assert {p: traffic.sequence(p) for p in local} == {
        p: ["cloud", who] for p, who in local.items()}
    # Open WebUI is the slowest to start; every unit gets there by itself, the
    # PostgreSQL cluster (behind the distribution's umbrella unit) included
    units = [*UNITS, *cluster]
    deadline = time.monotonic() + 300
    while (states := ssh(host, "systemctl is-active " + " ".join(units),
                         check=False).stdout.split()) != ["active"] * len(units):
        assert time.monotonic() < deadline, dict(zip(units, states))
        time.sleep(2)
