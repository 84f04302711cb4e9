"""The swap and the update state machines against a fake host shell: every branch
(success, never ready, crash, download failed, refused, rolled back) in seconds,
asserting the commands each one sends and in which order."""

from __future__ import annotations

import json
import re

import pytest
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host.contract import Layout

from sparkstack.host_shell import CommandFailed
from sparkstack.rollout.apply import HostUpdate, Rollout
from sparkstack.rollout.plan import Plan
from sparkstack.services.vllm.fit import BREAK_BEFORE_MAKE, MAKE_BEFORE_BREAK
from sparkstack.services.vllm.swap import Swap, Unit


class FakeShell:
    """Records what it is asked; a command matching a pattern of `fails` fails."""

    def __init__(self, name: str, log: list, fails: tuple[str, ...] = (),
                 answers: dict[str, str] | None = None):
        self.name, self.log, self.fails = name, log, fails
        self.answers = answers or {}
        self.layout = Layout()

    def run(self, command, stream=False, timeout=None):
        self.log.append((self.name, command))
        for pattern, answer in self.answers.items():
            if re.search(pattern, command):
                return True, answer
        return not any(re.search(p, command) for p in self.fails), f"output of {command}"

    def must(self, command, stream=False, timeout=None):
        ok, out = self.run(command)
        if not ok:
            raise CommandFailed(f"{self.name}: `{command}` failed")
        return out

    def program_line(self, name, *args, config_root=True):
        return " ".join([name, *args])

    def program(self, name, *args, config_root=True, stream=False, timeout=None):
        return self.run(self.program_line(name, *args))

    def gate(self, *args):
        return self.must(self.program_line("gate", *args))

    def journal(self, unit, lines=25):
        return f"last lines of {unit}"

    def put_text(self, path, text):
        self.log.append((self.name, f"put {path}"))


def commands(log, host=None) -> list[str]:
    return [c for h, c in log if host in (None, h)]


# --- the swap -----------------------------------------------------------------------------

OLD = Unit("sparkstack-vllm-old.service", "spark1:8000", ["spark1", "spark2"])
NEW = Unit("sparkstack-vllm-new.service", "spark1:8001", ["spark1", "spark2"])


def swap(mode: str, log: list, fails: tuple[str, ...] = (), **kw) -> Swap:
    shells = {"spark1": FakeShell("spark1", log, fails), "spark2": FakeShell("spark2", log)}
    return Swap(host="spark1", shells=shells, mode=mode, stop=[OLD], start=[NEW],
                previous={"/etc/sparkstack/manifest.json": "old manifest",
                          "/etc/systemd/system/sparkstack-vllm-new.service": None},
                record={"/var/lib/sparkstack/vllm/swap-choices.json": "{}"},
                disable=[OLD.unit], **kw)


def test_make_before_break_starts_and_routes_the_new_model_before_the_old_one_drains():
    log = []
    swap(MAKE_BEFORE_BREAK, log).run()
    order = commands(log)
    start, route = order.index(f"systemctl start {NEW.unit}"), order.index(
        "gate --undrain spark1:8001")
    drain, stop = order.index("gate --drain spark1:8000"), order.index(
        f"systemctl stop {OLD.unit}")
    assert start < route < drain < stop
    assert ("spark2", "gate --drain spark1:8000") in log     # the other LiteLLM drains it
    assert f"systemctl enable --quiet {NEW.unit}" in order
    assert f"systemctl disable --now --quiet {OLD.unit}" in order
    assert "put /var/lib/sparkstack/vllm/swap-choices.json" in order  # recorded once it worked


def test_break_before_make_stops_the_old_model_first_and_drops_caches_when_asked():
    log = []
    swap(BREAK_BEFORE_MAKE, log, drop_caches=True).run()
    order = commands(log, "spark1")
    assert order.index(f"systemctl stop {OLD.unit}") < order.index(
        "sync; echo 3 > /proc/sys/vm/drop_caches") < order.index(f"systemctl start {NEW.unit}")


def test_a_page_cache_that_cannot_be_dropped_is_said_and_the_swap_goes_on():
    """In a container (a simulated Spark) /proc/sys is read-only."""
    log = []
    done = swap(BREAK_BEFORE_MAKE, log, fails=("drop_caches",), drop_caches=True)
    done.run()
    assert f"systemctl start {NEW.unit}" in commands(log, "spark1")
    assert any(line.startswith("could not drop the page cache") and "read-only in a "
               "container" in line for line in done.log_lines)


@pytest.mark.parametrize("mode", [MAKE_BEFORE_BREAK, BREAK_BEFORE_MAKE])
def test_a_model_that_never_becomes_ready_is_rolled_back(mode):
    log = []
    with pytest.raises(PyinfraError, match="(?s)swap rolled back, sparkstack-vllm-new.service "
                                           "did not become ready.*last lines of"):
        swap(mode, log, fails=(f"systemctl start {NEW.unit}",)).run()
    order = commands(log, "spark1")
    after = order[order.index(f"systemctl start {NEW.unit}") + 1:]
    assert f"systemctl stop {NEW.unit}; systemctl reset-failed {NEW.unit}" in after
    assert "put /etc/sparkstack/manifest.json" in after       # the files put back
    assert "rm -f /etc/systemd/system/sparkstack-vllm-new.service" in after  # new: removed
    if mode == BREAK_BEFORE_MAKE:                             # the old one serves again
        assert f"systemctl start {OLD.unit}" in after
        assert ("spark2", "gate --undrain spark1:8000") in log
    else:                                                     # it never stopped
        assert f"systemctl stop {OLD.unit}" not in order
    assert f"systemctl enable --quiet {NEW.unit}" not in order
    assert "put /var/lib/sparkstack/vllm/swap-choices.json" not in order


def test_a_failed_download_changes_nothing():
    log = []
    with pytest.raises(PyinfraError, match="download failed, nothing changed"):
        swap(MAKE_BEFORE_BREAK, log, fails=("download",),
             downloads=[("org/new", "main", "runuser -u vllm -- download org/new")]).run()
    order = commands(log, "spark1")
    assert not any(c.startswith("systemctl start") or c.startswith("systemctl stop")
                   for c in order)
    assert "rm -f /etc/systemd/system/sparkstack-vllm-new.service" in order


def test_a_first_start_is_a_swap_with_nothing_to_stop():
    log = []
    first = Swap(host="spark1", shells={"spark1": FakeShell("spark1", log),
                                        "spark2": FakeShell("spark2", log)},
                 mode=MAKE_BEFORE_BREAK, stop=[], start=[NEW])
    assert first.describe() == f"start {NEW.unit}"
    first.run()
    # the other Sparks' LiteLLM routes a new model at the end of the run, not here
    assert commands(log) == ["systemctl daemon-reload", f"systemctl start {NEW.unit}",
                             f"systemctl enable --quiet {NEW.unit}"]


def test_a_first_start_that_fails_is_left_trying_with_its_log():
    """Nothing ran before it: nothing to roll back to."""
    log = []
    first = Swap(host="spark1", shells={"spark1": FakeShell("spark1", log, fails=(
        f"systemctl start {NEW.unit}",))}, mode=MAKE_BEFORE_BREAK, stop=[], start=[NEW],
        previous={"/etc/systemd/system/sparkstack-vllm-new.service": None})
    with pytest.raises(PyinfraError, match="did not become ready; it keeps trying"):
        first.run()
    order = commands(log)
    assert not any(c.startswith("rm -f") or "reset-failed" in c for c in order)
    assert f"systemctl enable --quiet {NEW.unit}" in order


# --- the update of one host --------------------------------------------------------------

HEALTHY = json.dumps([{"check": "unit x", "ok": True, "detail": "active"}])
SICK = json.dumps([{"check": "unit x", "ok": False, "detail": "failed"}])


def update(log: list, fails=(), health=(HEALTHY, HEALTHY), dark=(), deploy_fails=False,
           rollback_only=False) -> tuple[HostUpdate, Rollout]:
    answers = iter(health)

    class Host(FakeShell):
        def run(self, command, stream=False, timeout=None):
            if command.startswith("sparkstack-health"):
                self.log.append((self.name, command))
                return True, next(answers, HEALTHY)
            return super().run(command, stream, timeout)

    shells = {"spark1": Host("spark1", log, fails), "spark2": FakeShell("spark2", log)}
    rollout = Rollout(Plan({"spark1": ["vLLM: a -> b"]}, [["spark1"]], {}, set()))

    def deploy(host, say):
        log.append((host, "deploy.py --limit " + host))
        if deploy_fails:
            from sparkstack.rollout.apply import Failed
            raise Failed("the deploy of spark1 failed")

    return HostUpdate(rollout=rollout, shells=shells, host="spark1",
                      units=["sparkstack-litellm.service", "sparkstack-vllm-m.service"],
                      backends={"spark1:8000": ["spark1", "spark2"]}, dark=list(dark),
                      databases=["litellm"], backup_keep=5, deploy=deploy,
                      rollback_only=rollback_only), rollout


def test_an_update_checkpoints_drains_deploys_proves_and_routes_again():
    log = []
    host, rollout = update(log)
    host.run()
    order = commands(log)
    steps = ["sparkstack-health --json", "sparkstack-checkpoint save update",
             "sparkstack-backup --keep 5", "gate --drain spark1:8000",
             "deploy.py --limit spark1", "sparkstack-health --json",
             "sparkstack-checkpoint commit update", "gate --undrain spark1:8000"]
    positions = [order.index(step, order.index(steps[i - 1]) + 1 if i else 0)
                 for i, step in enumerate(steps)]
    assert positions == sorted(positions)
    assert ("spark2", "gate --drain spark1:8000") in log   # every LiteLLM routing to it
    assert rollout.outcome == {"spark1": "updated"}


def test_an_unhealthy_host_is_refused_and_nothing_changes():
    log = []
    host, rollout = update(log, health=(SICK,))
    with pytest.raises(PyinfraError, match="update refused, nothing changed: the host is "
                                           "not healthy before the update: unit x: failed"):
        host.run()
    assert commands(log) == ["sparkstack-health --json"]
    assert rollout.stopped_by == "spark1"


def test_a_profile_with_nowhere_else_to_go_is_refused():
    log = []
    host, rollout = update(log, dark=("fast",))
    with pytest.raises(PyinfraError, match=r"profile\(s\) fast would have no other Spark"):
        host.run()
    assert not any("checkpoint" in c for c in commands(log))


@pytest.mark.parametrize("why", ["deploy", "health"])
def test_a_failed_update_rolls_the_host_back_by_itself(why):
    log = []
    host, rollout = update(log, deploy_fails=why == "deploy",
                           health=(HEALTHY, SICK if why == "health" else HEALTHY))
    with pytest.raises(PyinfraError, match="update failed, rolled back"):
        host.run()
    order = commands(log, "spark1")
    after = order[order.index("sparkstack-checkpoint restore update"):]
    assert "sparkstack-checkpoint commit update" not in order  # a rollback skips it
    assert "systemctl restart sparkstack-litellm.service" in after
    assert "systemctl restart sparkstack-vllm-m.service" in after
    assert "gate --undrain spark1:8000" in after                     # routed again
    assert not any("sparkstack-backup --restore" in c for c in after)  # data untouched
    assert rollout.outcome == {"spark1": "rolled back"}


def test_a_service_that_cannot_start_after_the_rollback_gets_its_database_back():
    log = []
    host, rollout = update(log, deploy_fails=True,
                           fails=("systemctl restart sparkstack-litellm.service",))
    with pytest.raises(PyinfraError, match="rollback incomplete: "
                                           "sparkstack-litellm.service do not start"):
        host.run()
    assert "sparkstack-backup --restore litellm" in commands(log, "spark1")


def test_a_rollback_on_request_returns_to_before_the_last_update_that_took_effect():
    log = []
    host, rollout = update(log, rollback_only=True)
    host.run()
    order = commands(log)
    assert order.index("gate --drain spark1:8000") < order.index(
        "sparkstack-checkpoint rollback") < order.index("gate --undrain spark1:8000")
    assert "deploy.py --limit spark1" not in order
    assert rollout.outcome == {"spark1": "rolled back (on request)"}
