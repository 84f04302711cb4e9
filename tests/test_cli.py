"""Which Sparks the day-two commands act on: those of the inventory given, the simulated
ones `sparkstack deploy` booted when the default inventory lists none, and never none."""

from __future__ import annotations

from click.testing import CliRunner

from sparkstack import cli


def test_an_inventory_without_a_host_is_an_error_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "SIM_INVENTORY", tmp_path / ".sim" / "inventory.py")
    (tmp_path / "inventory.py").write_text("sparks = []\n")
    for command in (["health"], ["usage"], ["claude-env"], ["swap", "m"], ["update"]):
        result = CliRunner().invoke(cli.main, command)
        assert result.exit_code == 2, (command, result.output)
        assert "inventory.py lists no Spark: add your Sparks to it" in result.output
        assert "sparkstack deploy" in result.output


def test_with_no_spark_listed_the_commands_act_on_the_simulated_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sim = tmp_path / ".sim" / "inventory.py"
    sim.parent.mkdir()
    sim.write_text('sparks = [("spark1", {"ssh_hostname": "10.213.77.11"})]\n')
    monkeypatch.setattr(cli, "SIM_INVENTORY", sim)
    (tmp_path / "inventory.py").write_text("sparks = []\n")
    seen = {}
    monkeypatch.setattr("sparkstack.health.run",
                        lambda inventory, limit: seen.setdefault("inventory", inventory) and [])
    result = CliRunner().invoke(cli.main, ["health"])
    assert seen["inventory"] == str(sim)
    assert "acting on the simulated Spark(s) of" in result.output
    assert "no host was checked" in result.output and result.exit_code == 1


def _deployed(tmp_path, host_data: dict) -> str:
    """An inventory of one Spark whose first deploy made its secrets."""
    from sparkstack.secrets import host_secrets
    inventory = tmp_path / "inventory.py"
    data = {"ssh_hostname": "10.0.0.5", "secrets_dir": str(tmp_path / "secrets"), **host_data}
    inventory.write_text(f"sparks = [('spark1', {data!r})]\n")
    host_secrets(str(tmp_path / "secrets"), "spark1")
    return str(inventory)


def test_logins_prints_the_admin_the_deploy_made_and_where_to_open_it(tmp_path):
    inventory = _deployed(tmp_path, {"openwebui_admin_email": "owner@example.com",
                                     "litellm_bind_address": "0.0.0.0"})
    from sparkstack.secrets import host_secrets
    secrets = host_secrets(str(tmp_path / "secrets"), "spark1")
    result = CliRunner().invoke(cli.main, ["logins", "-i", inventory])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "spark1:"
    assert lines[1] == ("  Open WebUI  http://127.0.0.1:8080  admin owner@example.com  "
                        f"password {secrets['openwebui_admin_password']}")
    assert lines[2] == "              (loopback only: first ssh -N -L 8080:127.0.0.1:8080 spark1)"
    assert lines[3] == ("  LiteLLM UI  http://spark1:4000/ui  user admin  password "
                        f"{secrets['litellm_ui_password']}")


def test_logins_before_the_first_deploy_says_so(tmp_path):
    inventory = tmp_path / "inventory.py"
    inventory.write_text(f"sparks = [('spark1', {{'secrets_dir': '{tmp_path}/none'}})]\n")
    result = CliRunner().invoke(cli.main, ["logins", "-i", str(inventory)])
    assert result.exit_code == 1 and "spark1 has no secrets yet" in result.output
    assert "deploy it first" in result.output
