"""The state of everything a deploy manages on this host, read in one go.

    python3 host_state.py [--hash PATTERN]... [--stat PATTERN]... [--units PATTERN]...
                          [--users NAME]... [--packages NAME]... [--read PATH]...
                          [--postgres]

prints one JSON object: type, mode, owner (and the sha256 of the contents, for --hash
patterns) of every path the patterns match; the active, sub and enablement state of
the units; the users; which of the Debian packages are installed; the text of the
files the --read patterns match; the roles and databases in the local PostgreSQL; the distribution; the host's
IP addresses.

A pattern is a path with shell wildcards in each segment and `**` for any number of
segments; `covers(path, pattern)` says whether a path falls under one, so a path that
is covered but not reported does not exist. The deploy runs this file as it is, with
the host's python3 (standard library only, no import of its own package), as the first
and, on a host with nothing to change, the only round trip of a run.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys


def covers(path: str, pattern: str) -> bool:
    """Does `pattern` (wildcards per segment, `**` for any number of segments) match
    `path`? The same rule as glob's, so a covered path missing from a scan is absent."""
    def match(parts: list[str], pats: list[str]) -> bool:
        if not pats:
            return not parts
        if pats[0] == "**":
            return any(match(parts[i:], pats[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and \
            match(parts[1:], pats[1:])
    return match(path.strip("/").split("/"), pattern.strip("/").split("/"))


def describe(path: str, with_hash: bool) -> dict | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
    entry = {"type": kind, "mode": format(stat.S_IMODE(st.st_mode), "o"),
             "user": _name(pwd.getpwuid, st.st_uid), "group": _name(grp.getgrgid, st.st_gid)}
    if kind == "f" and with_hash:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        entry["sha256"] = digest.hexdigest()
    if kind == "l":
        entry["target"] = os.readlink(path)
    return entry


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def _lines(*cmd: str) -> list[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    except OSError:  # the tool is not installed
        return []
    return proc.stdout.splitlines()


def units(patterns: list[str]) -> dict:
    found: dict[str, dict] = {}
    for line in _lines("systemctl", "list-units", "--all", "--plain", "--no-legend",
                       "--full", *patterns):
        parts = line.split()
        if len(parts) >= 4:
            found.setdefault(parts[0], {}).update(load=parts[1], active=parts[2],
                                                  sub=parts[3])
    for line in _lines("systemctl", "list-unit-files", "--no-legend", "--full", *patterns):
        parts = line.split()
        if len(parts) >= 2:
            found.setdefault(parts[0], {"active": "inactive", "sub": "dead"})
            found[parts[0]]["enabled"] = parts[1]
    return found


def users(names: list[str]) -> dict:
    found = {}
    for name in names:
        try:
            p = pwd.getpwnam(name)
        except KeyError:
            continue
        found[name] = {"uid": p.pw_uid, "home": p.pw_dir, "shell": p.pw_shell,
                       "group": _name(grp.getgrgid, p.pw_gid)}
    return found


def packages(names: list[str]) -> list[str]:
    if not names:
        return []
    lines = _lines("dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *names)
    return sorted(line.split()[0] for line in lines if line.endswith(" installed"))


def postgres_objects() -> list[str] | None:
    """'role:NAME' and 'db:NAME' of the local PostgreSQL; None when it is not running."""
    try:
        if subprocess.run(["pg_isready", "-q"], cwd="/").returncode != 0:
            return None
    except OSError:  # not installed
        return None
    return _lines("runuser", "-u", "postgres", "--", "psql", "-XtAqc",
                  "SELECT 'role:' || rolname FROM pg_roles "
                  "UNION ALL SELECT 'db:' || datname FROM pg_database")


def distribution() -> dict:
    info = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                info[key] = value.strip('"')
    except OSError:
        pass
    return {"id": info.get("ID", ""), "version_id": info.get("VERSION_ID", "")}


def addresses() -> list[str]:
    """The IP addresses of this host's interfaces (what a service can bind to)."""
    found = set()
    for line in _lines("ip", "-o", "addr", "show"):
        parts = line.split()
        if len(parts) > 3 and parts[2] in ("inet", "inet6"):
            found.add(parts[3].split("/")[0])
    return sorted(found)


def snapshot(args: argparse.Namespace) -> dict:
    files: dict[str, dict] = {}
    for patterns, with_hash in ((args.stat, False), (args.hash, True)):
        for pattern in patterns:
            for path in glob.glob(pattern, recursive=True):
                entry = describe(path.rstrip("/") or "/", with_hash)
                if entry:
                    files[path.rstrip("/") or "/"] = entry
    contents = {}
    for pattern in args.read:
        for path in glob.glob(pattern):
            try:
                with open(path) as f:
                    contents[path] = f.read()
            except (OSError, UnicodeDecodeError):
                pass
    return {"files": files, "units": units(args.units) if args.units else {},
            "users": users(args.users), "packages": packages(args.packages),
            "contents": contents,
            "postgres": postgres_objects() if args.postgres else None,
            "distribution": distribution(), "addresses": addresses()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="host_state.py")
    p.add_argument("--hash", action="append", default=[], metavar="PATTERN")
    p.add_argument("--stat", action="append", default=[], metavar="PATTERN")
    p.add_argument("--units", action="append", default=[], metavar="PATTERN")
    p.add_argument("--users", action="append", default=[], metavar="NAME")
    p.add_argument("--packages", action="append", default=[], metavar="NAME")
    p.add_argument("--read", action="append", default=[], metavar="PATH")
    p.add_argument("--postgres", action="store_true")
    print(json.dumps(snapshot(p.parse_args(argv)), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
