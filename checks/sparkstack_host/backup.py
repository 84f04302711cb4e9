"""Back up and restore the local PostgreSQL databases sparkstack created.

    sparkstack-backup [--config-root DIR] [--keep N]          dump every database
    sparkstack-backup [--config-root DIR] --restore DB [FILE] restore DB (newest dump)
    sparkstack-backup [--config-root DIR] --list

Each database the manifest lists (LiteLLM's, Open WebUI's) is dumped with pg_dump (custom format) into
`<state_root>/backups/DB-YYYYmmdd-HHMMSS.dump`, root-only, then read back with
pg_restore --list to prove it is whole; the newest N of each are kept. A restore
replaces the database's contents with the dump's (pg_restore --clean).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .contract import DEFAULT_CONFIG_ROOT, Layout, Manifest


def folder(layout: Layout) -> Path:
    return Path(layout.state_dir("backups"))


def _as_postgres(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], cwd="/",
                          capture_output=True, **kw)


def dump(layout: Layout, db: str, keep: int) -> Path:
    target = folder(layout)
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o700)
    path = target / f"{db}-{time.strftime('%Y%m%d-%H%M%S')}.dump"
    proc = _as_postgres("pg_dump", "-Fc", db)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump {db} failed: {proc.stderr.decode()[-500:]}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(proc.stdout)
    tmp.chmod(0o600)
    check = subprocess.run(["pg_restore", "--list", str(tmp)], capture_output=True)
    if check.returncode != 0 or not proc.stdout.startswith(b"PGDMP"):
        tmp.unlink()
        raise RuntimeError(f"the dump of {db} does not read back: "
                           f"{check.stderr.decode()[-300:]}")
    tmp.replace(path)
    for old in sorted(target.glob(f"{db}-*.dump"))[:-keep]:
        old.unlink()
    return path


def newest(layout: Layout, db: str) -> Path:
    dumps = sorted(folder(layout).glob(f"{db}-*.dump"))
    if not dumps:
        raise FileNotFoundError(f"no dump of {db} in {folder(layout)}")
    return dumps[-1]


def restore(db: str, path: Path) -> None:
    with open(path, "rb") as f:
        proc = subprocess.run(["runuser", "-u", "postgres", "--", "pg_restore", "--clean",
                               "--if-exists", "--no-owner", "--role", db, "-d", db],
                              stdin=f, cwd="/", capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_restore {db} failed: {proc.stderr.decode()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-backup")
    p.add_argument("--config-root", default=DEFAULT_CONFIG_ROOT)
    p.add_argument("--keep", type=int, default=5, help="dumps kept per database")
    p.add_argument("--restore", metavar="DB")
    p.add_argument("file", nargs="?", type=Path)
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    manifest = Manifest.load(args.config_root)
    layout = manifest.layout
    try:
        if args.restore:
            path = args.file or newest(layout, args.restore)
            restore(args.restore, path)
            print(f"backup: restored {args.restore} from {path}")
        elif args.list:
            for path in sorted(folder(layout).glob("*.dump")):
                print(f"{path.name}\t{path.stat().st_size} bytes")
        else:
            for db in manifest.databases:
                path = dump(layout, db, max(1, args.keep))
                print(f"backup: {db} -> {path} ({path.stat().st_size} bytes, reads back)")
    except (OSError, RuntimeError) as e:
        print(f"backup: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
