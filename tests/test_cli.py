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
