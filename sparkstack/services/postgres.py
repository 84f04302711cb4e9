"""PostgreSQL from the distribution: localhost only, scram-sha-256, one database and
role per consumer (LiteLLM, Open WebUI) with generated passwords."""

from io import StringIO

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.exceptions import PyinfraError
from sparkstack_host.contract import POSTGRES_CLUSTER_UNIT, POSTGRES_UNIT, UNIT_DIR

from ..host_facts import snapshot
from ..operations import deb_packages, put_file, unit_running
from ..project import FILES
from ..render import template
from ..settings import HostSettings
from .base import Deployment, ServiceInfo

# The PostgreSQL major version each supported distribution ships.
PACKAGED_VERSIONS = {("debian", 12): 15, ("debian", 13): 17,
                     ("ubuntu", 22): 14, ("ubuntu", 24): 16}


@operation()
def postgres_apply(sql_file: str, roles: list[str], databases: list[str],
                   sql_changed: bool):
    """Run the root-only SQL file as the postgres superuser when it changed or when a
    role or database it creates is missing. Passwords stay in the file, never in a
    command line."""
    present = set(snapshot().postgres_objects or [])
    wanted = {f"role:{r}" for r in roles} | {f"db:{d}" for d in databases}
    if not sql_changed and wanted <= present:
        host.noop("PostgreSQL roles and databases are in place")
        return
    yield f"cd / && sudo -u postgres psql -X -q -d postgres < {sql_file}"


def consumers(d: Deployment) -> list[dict]:
    """A database and a role of the same name for each service on this host that has
    one, with its generated password."""
    return [{"role": db, "database": db, "password": d.secrets[f"postgres_{db}_password"]}
            for db in d.databases]


def database_url(s: HostSettings, secrets: dict, consumer: str) -> str:
    password = secrets[f"postgres_{consumer}_password"]
    return f"postgresql://{consumer}:{password}@127.0.0.1:{s['postgres_port']}/{consumer}"


def deploy(d: Deployment) -> None:
    s = d.s
    distribution = snapshot().distribution
    version = PACKAGED_VERSIONS.get(distribution)
    if version is None:
        raise PyinfraError(f"host {s.name}: {' '.join(map(str, distribution))} is not "
                           "supported for the postgres role; supported: Debian 12/13, "
                           "Ubuntu 22.04/24.04 (DGX OS)")
    deb_packages(name="Install PostgreSQL", packages=["postgresql"])
    etc = f"/etc/postgresql/{version}/main"
    conf = put_file(name="Configure PostgreSQL: localhost, scram-sha-256",
                    src=StringIO(template("postgres/sparkstack.conf.j2", s=s)),
                    dest=f"{etc}/conf.d/sparkstack.conf", user="postgres",
                    group="postgres", mode="644")
    hba = put_file(name="Configure PostgreSQL client authentication",
                   src=str(FILES / "postgres" / "pg_hba.conf"),
                   dest=f"{etc}/pg_hba.conf", user="postgres", group="postgres",
                   mode="640")
    sandbox = put_file(
        name="Sandbox PostgreSQL (a drop-in, kept by package upgrades)",
        src=StringIO(template("postgres/sandbox.conf.j2", writable=[
            "/var/lib/postgresql", "/var/log/postgresql", "/run/postgresql"])),
        dest=f"{UNIT_DIR}/{POSTGRES_CLUSTER_UNIT}.d/sparkstack-sandbox.conf",
        user="root", group="root", mode="644")
    unit_running(name="Run PostgreSQL", unit=POSTGRES_UNIT,
                 restarted=conf.will_change or hba.will_change or sandbox.will_change,
                 daemon_reload=sandbox.will_change)
    wanted = consumers(d)
    if not wanted:
        return
    sql_file = f"{s.layout.conf_dir('postgres')}/roles.sql"
    sql = put_file(name="Write PostgreSQL roles and databases (root-only)",
                   src=StringIO(template("postgres/roles.sql.j2", consumers=wanted)),
                   dest=sql_file, user="root", group="root", mode="600")
    postgres_apply(name="Create the LiteLLM / Open WebUI roles and databases",
                   sql_file=sql_file, roles=[c["role"] for c in wanted],
                   databases=[c["database"] for c in wanted],
                   sql_changed=sql.will_change)


SERVICE = ServiceInfo(role="postgres", label="PostgreSQL", deploy=deploy)
