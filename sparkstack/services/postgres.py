"""PostgreSQL from the distribution: localhost only, scram-sha-256, one database and
role per consumer (LiteLLM, Open WebUI) with generated passwords."""

from io import StringIO

from pyinfra import host
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, systemd

from ..operations import postgres_apply
from ..render import template
from ..settings import HostSettings

# The PostgreSQL major version each supported distribution ships.
PACKAGED_VERSIONS = {("debian", 12): 15, ("debian", 13): 17,
                     ("ubuntu", 22): 14, ("ubuntu", 24): 16}


def consumers(s: HostSettings, secrets: dict) -> list[dict]:
    out = []
    for role in ("litellm", "openwebui"):
        if s.has(role):
            out.append({"role": role, "database": role,
                        "password": secrets[f"postgres_{role}_password"]})
    return out


def database_url(s: HostSettings, secrets: dict, consumer: str) -> str:
    password = secrets[f"postgres_{consumer}_password"]
    return f"postgresql://{consumer}:{password}@127.0.0.1:{s['postgres_port']}/{consumer}"


def deploy(s: HostSettings, secrets: dict) -> None:
    dist = host.get_fact(LinuxDistribution)
    key = ((dist.get("name") or "").lower(), dist.get("major"))
    version = PACKAGED_VERSIONS.get(key)
    if version is None:
        raise PyinfraError(f"host {s.name}: {dist.get('name')} {dist.get('major')} is not "
                           "supported for the postgres role; supported: Debian 12/13, "
                           "Ubuntu 22.04/24.04 (DGX OS)")
    apt.packages(name="Install PostgreSQL", packages=["postgresql"])
    etc = f"/etc/postgresql/{version}/main"
    conf = files.put(name="Configure PostgreSQL: localhost, scram-sha-256",
                     src=StringIO(template("postgres/sparkstack.conf.j2", s=s)),
                     dest=f"{etc}/conf.d/sparkstack.conf", user="postgres",
                     group="postgres", mode="644")
    hba = files.put(name="Configure PostgreSQL client authentication",
                    src=StringIO(template("postgres/pg_hba.conf.j2", s=s)),
                    dest=f"{etc}/pg_hba.conf", user="postgres", group="postgres",
                    mode="640")
    systemd.service(name="Run PostgreSQL", service="postgresql.service", running=True,
                    enabled=True, restarted=conf.will_change or hba.will_change)
    wanted = consumers(s, secrets)
    if not wanted:
        return
    sql_file = f"{s['config_root']}/postgres/roles.sql"
    sql = files.put(name="Write PostgreSQL roles and databases (root-only)",
                    src=StringIO(template("postgres/roles.sql.j2", consumers=wanted)),
                    dest=sql_file, user="root", group="root", mode="600")
    postgres_apply(name="Create the LiteLLM / Open WebUI roles and databases",
                   sql_file=sql_file, roles=[c["role"] for c in wanted],
                   databases=[c["database"] for c in wanted],
                   sql_changed=sql.will_change)
