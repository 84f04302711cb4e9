"""HostShell over a stand-in pyinfra host: what a host program's answer becomes."""

from __future__ import annotations

import pytest
from pyinfra.api.command import StringCommand
from sparkstack_host.contract import Layout

from sparkstack.host_shell import HostShell


class Output:
    def __init__(self, stdout: str, stderr: str = ""):
        self.stdout, self.stderr, self.output = stdout, stderr, stdout + stderr


class Host:
    """Answers every command with `ok` and `stdout`, as a connected pyinfra host."""

    name, connected, data = "spark1", True, {}

    def __init__(self, ok: bool, stdout: str, stderr: str = ""):
        self.answer = (ok, Output(stdout, stderr))
        self.ran: list[str] = []

    def run_shell_command(self, command: StringCommand, **kwargs):
        self.ran.append(str(command))
        return self.answer


def test_a_programs_json_counts_also_when_it_exits_with_a_failure():
    """Health answers an unhealthy host's rows and exits 1: they are its answer."""
    rows = '[{"check": "unit x", "ok": false}]'
    assert HostShell(Host(False, rows), Layout()).program_json("sparkstack-health") == [
        {"check": "unit x", "ok": False}]
    assert HostShell(Host(True, "[]"), Layout()).program_json("sparkstack-health") == []


@pytest.mark.parametrize("ok, stdout, stderr", [(False, "", "usage: no such table"),
                                                (True, "not json", "")])
def test_no_json_is_an_error_saying_what_the_program_said(ok, stdout, stderr):
    with pytest.raises(RuntimeError) as err:
        HostShell(Host(ok, stdout, stderr), Layout()).program_json("sparkstack-usage")
    assert str(err.value) == f"spark1: sparkstack-usage: {(stdout + stderr).strip()}"
