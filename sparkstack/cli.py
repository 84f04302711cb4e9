"""`sparkstack` command: deploy the inventory, or a local simulated Spark when the
inventory lists no Spark yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from .host_shell import NO_WAIT_VARIABLE, inventory_hosts
from .project import WORKDIR, playbook

SIM_INVENTORY = WORKDIR / ".sim" / "inventory.py"


def _pyinfra() -> str:
    return str(Path(sys.executable).with_name("pyinfra"))


def _playbook(args: list[str], no_wait: bool) -> int:
    """pyinfra running a playbook; with `no_wait`, it refuses a Spark another run
    holds instead of waiting for it."""
    env = {**os.environ, **({NO_WAIT_VARIABLE: "1"} if no_wait else {})}
    return subprocess.call(args, cwd=WORKDIR, env=env)


def _sparks(ctx, param, value: str) -> str:
    """The inventory a day-two command acts on: the one given; for the default
    inventory.py when it lists no Spark, the simulated Sparks `sparkstack deploy`
    booted; never an inventory without a host."""
    path = Path(value) if Path(value).is_absolute() else Path.cwd() / value
    if path.is_file() and inventory_hosts(path):
        return str(path)
    if param.default == value and SIM_INVENTORY.is_file() and inventory_hosts(SIM_INVENTORY):
        click.echo(f"{value} lists no Spark: acting on the simulated Spark(s) of "
                   f"{SIM_INVENTORY}", err=True)
        return str(SIM_INVENTORY)
    raise click.BadParameter(
        f"{value} lists no Spark{'' if path.is_file() else ' (no such file)'}: add your "
        "Sparks to it (see inventory.py), or run `sparkstack deploy` with an empty one to "
        "boot a simulated Spark", param_hint="-i/--inventory")


sparks_option = click.option("-i", "--inventory", default="inventory.py", show_default=True,
                             callback=_sparks, help="your Sparks (pyinfra inventory)")

no_wait_option = click.option(
    "--no-wait", is_flag=True,
    help="refuse at once when another run holds a Spark (default: wait for it)")


@click.group()
def main() -> None:
    """Provision DGX Sparks with vLLM, LiteLLM, Open WebUI and PostgreSQL."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-i", "--inventory", default="inventory.py", show_default=True,
              type=click.Path(path_type=Path))
@no_wait_option
@click.argument("pyinfra_args", nargs=-1, type=click.UNPROCESSED)
def deploy(inventory: Path, no_wait: bool, pyinfra_args: tuple[str, ...]) -> None:
    """Deploy the stack (extra arguments go to pyinfra, e.g. --limit spark-2)."""
    inventory = inventory if inventory.is_absolute() else Path.cwd() / inventory
    simulated = not inventory.exists() or not inventory_hosts(inventory)
    if simulated:
        if os.geteuid() != 0:
            raise click.ClickException("booting a simulated Spark needs root")
        from .simulated import fleet
        from .simulated.__main__ import boot_inventory

        click.echo(f"No Spark listed in {inventory.name}: booting a local simulated Spark "
                   "(systemd-nspawn, sparkstack/simulated).")
        (host,), which = boot_inventory(SIM_INVENTORY, 1)
        click.echo(which)
        inventory = SIM_INVENTORY
    rc = _playbook([_pyinfra(), "-y", str(inventory), playbook("deploy.py"), *pyinfra_args],
                   no_wait)
    if rc == 0 and simulated:
        click.echo(
            "\nThe simulated Spark is up. Reach its services through SSH, as on a real one:\n"
            f"  ssh -i {fleet.SSH_KEY} -L 4000:127.0.0.1:4000 -L 8080:127.0.0.1:8080 "
            f"root@{host.address}\n"
            "  LiteLLM: http://127.0.0.1:4000, Open WebUI: http://127.0.0.1:8080\n"
            f"  Keys and passwords: {WORKDIR / '.secrets' / 'hosts' / 'spark1.json'}\n"
            "Next (each acts on this simulated Spark while inventory.py lists none):\n"
            "  sparkstack logins                  Open WebUI's admin login and password\n"
            "  sparkstack health                  every service, model and profile\n"
            "  sparkstack usage [--html r.html]   what the platform answered, from its "
            "request log\n"
            "  eval \"$(sparkstack claude-env)\"   point Claude Code at its LiteLLM\n"
            "LiteLLM's own UI at /ui needs its database (litellm_request_log), which needs "
            "internet on the Spark; sparkstack usage works everywhere.\n"
            "  Stop it with: .venv/bin/python -m sparkstack.simulated down")
    sys.exit(rc)


@main.command()
@sparks_option
@click.option("--limit", multiple=True, help="host name, glob or group (repeatable)")
@no_wait_option
@click.argument("model")
def swap(inventory: str, limit: tuple[str, ...], no_wait: bool, model: str) -> None:
    """Run MODEL instead of the other members of its swap group, one Spark at a time
    (the same as `pyinfra INVENTORY swap.py --data model=MODEL`)."""
    args = [_pyinfra(), "-y", str(Path(inventory).resolve()), playbook("swap.py"), "--data",
            f"model={model}"]
    for pattern in limit:
        args += ["--limit", pattern]
    sys.exit(_playbook(args, no_wait))


@main.command()
@sparks_option
@click.option("--batch", default="1", show_default=True,
              help="hosts updated at once: a number, or a share such as 25%")
@click.option("--limit", multiple=True, help="host name, glob or group (repeatable)")
@click.option("--yes", is_flag=True, help="do not ask before updating")
@click.option("--force", is_flag=True,
              help="update a host even when a profile has nowhere else to go meanwhile")
@click.option("--rollback", is_flag=True,
              help="return hosts to the versions before their last update")
@no_wait_option
def update(inventory: str, batch: str, limit: tuple[str, ...], yes: bool, force: bool,
           rollback: bool, no_wait: bool) -> None:
    """Apply the inventory's versions one batch of Sparks at a time; a host that fails
    is rolled back and the rollout stops (the same as `pyinfra INVENTORY update.py`)."""
    args = [_pyinfra(), *(["-y"] if yes else []), str(Path(inventory).resolve()),
            playbook("update.py"), "--data", f"batch={batch}"]
    if force:
        args += ["--data", "force=1"]
    if rollback:
        args += ["--data", "rollback=1"]
    for pattern in limit:
        args += ["--limit", pattern]
    sys.exit(_playbook(args, no_wait))


@main.command()
@sparks_option
@click.option("--limit", multiple=True, help="host name, glob or group (repeatable)")
@click.option("--since", default="7d", show_default=True, help="e.g. 30m, 12h, 7d, 4w")
@click.option("--by", type=click.Choice(["profile", "host", "day", "key", "route", "process"]),
              default="profile", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="also write a self-contained HTML page with charts")
def usage(inventory: str, limit: tuple[str, ...], since: str, by: str, as_json: bool,
          html_file: Path | None) -> None:
    """What the platform answered: local, fallback and cloud shares, errors, tokens,
    latency and cost, from every LiteLLM host's request log."""
    from . import usage as report_of
    from .usage_html import page

    try:
        report = report_of.run(inventory, limit, since, by)
    except RuntimeError as e:
        raise click.ClickException(str(e))
    if html_file:
        html_file.write_text(page(report))
    click.echo(json.dumps(report, indent=1) if as_json else report_of.table(report))


@main.command(name="claude-env")
@sparks_option
@click.option("--host", "host_name", help="the Spark whose LiteLLM Claude Code uses "
                                          "(default: the first that runs LiteLLM)")
def claude_env(inventory: str, host_name: str | None) -> None:
    """Print the shell exports that point Claude Code at a Spark's LiteLLM:
    eval "$(sparkstack claude-env)"."""
    from .claude import exports

    try:
        click.echo(exports(inventory, host_name))
    except RuntimeError as e:
        raise click.ClickException(str(e))


@main.command(name="logins")
@sparks_option
@click.option("--host", "host_name", help="only this Spark")
def logins_command(inventory: str, host_name: str | None) -> None:
    """Print the web logins the deploy made: Open WebUI's admin and LiteLLM's UI, with
    their generated passwords (kept on this controller in secrets_dir)."""
    from .logins import logins

    try:
        click.echo(logins(inventory, host_name))
    except RuntimeError as e:
        raise click.ClickException(str(e))


@main.command()
@sparks_option
@click.option("--limit", multiple=True, help="host name, glob or group (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def health(inventory: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Check every host: GPU, units, endpoints, a completion per profile, memory."""
    from . import health as checks

    rows = checks.run(inventory, limit)
    click.echo(json.dumps(rows, indent=1) if as_json else checks.table(rows))
    sys.exit(0 if rows and all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
