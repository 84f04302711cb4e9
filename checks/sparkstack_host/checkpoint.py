"""Save and restore what a deploy changes on a host, so an update can be undone.

    sparkstack-checkpoint [--config-root DIR] save NAME      before an update
    sparkstack-checkpoint [--config-root DIR] commit NAME    the update took effect
    sparkstack-checkpoint [--config-root DIR] restore NAME   a failed update, undone
    sparkstack-checkpoint [--config-root DIR] rollback       undo the last that took effect
    sparkstack-checkpoint [--config-root DIR] list

A checkpoint holds the whole config root (configuration, secrets, the manifest, the
routes plan), every sparkstack unit file, and each service's `current` and `previous`
venv links (the venvs themselves stay: the deploy keeps the one before). `restore`
puts all of it back as it was, removes such files that were not there, and reloads
systemd; restarting the services is the caller's. Each update saves its own checkpoint
(named by its run); only one that took effect is committed to the host's history, so
`rollback` returns to the versions before the last update that changed the host, not
before a failed attempt. Checkpoints are root-only tar files under
`<state_root>/update/checkpoints/` (they hold secrets); those of the last few updates
in the history, and the newest, are kept.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from .contract import DEFAULT_CONFIG_ROOT, UNIT_DIR, Layout, Manifest

NOTHING_TO_ROLL_BACK = "no update took effect on this host: nothing to roll back"
KEEP = 3   # updates that can be rolled back, one after the other


def folder(layout: Layout) -> Path:
    return Path(layout.checkpoints)


def history(layout: Layout) -> list[str]:
    path = Path(layout.update_history)
    return path.read_text().split() if path.is_file() else []


def _write_history(layout: Layout, names: list[str]) -> None:
    path = Path(layout.update_history)
    tmp = path.with_name(".history.tmp")
    tmp.write_text("".join(f"{n}\n" for n in names))
    tmp.replace(path)


def commit(layout: Layout, name: str) -> None:
    """The update saved as `name` took effect: a rollback returns to before it."""
    if not (folder(layout) / f"{name}.tar").is_file():
        raise FileNotFoundError(f"no checkpoint {name!r} in {folder(layout)}")
    _write_history(layout, [n for n in history(layout) if n != name][-(KEEP - 1):] + [name])
    _prune(layout)


def rollback(layout: Layout) -> tuple[str, list[str]] | None:
    """Restore the checkpoint of the last update that took effect, and forget it;
    None when no update took effect here."""
    names = history(layout)
    if not names:
        return None
    changed = restore(layout, names[-1])
    _write_history(layout, names[:-1])
    return names[-1], changed


def _prune(layout: Layout, newest: Path | None = None) -> None:
    keep = {f"{n}.tar" for n in history(layout)}
    for old in folder(layout).glob("*.tar"):
        if old.name not in keep and old != newest:
            old.unlink()


def managed(layout: Layout) -> list[str]:
    """Every path a checkpoint covers, as it is now."""
    paths = [p for p in glob.glob(f"{layout.config_root}/**", recursive=True)
             if os.path.isfile(p) or os.path.islink(p)]
    paths += glob.glob(f"{UNIT_DIR}/sparkstack-*")
    paths += [p for p in glob.glob(f"{layout.install_root}/*/current")
              + glob.glob(f"{layout.install_root}/*/previous") if os.path.islink(p)]
    return sorted(paths)


def save(layout: Layout, name: str) -> Path:
    target = folder(layout)
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    path = target / f"{name}.tar"
    tmp = path.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w") as tar:
        for p in managed(layout):
            tar.add(p, recursive=False)
        listing = "\n".join(managed(layout)).encode()
        info = tarfile.TarInfo(".sparkstack-paths")
        info.size, info.mtime = len(listing), int(time.time())
        tar.addfile(info, io.BytesIO(listing))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    _prune(layout, newest=path)
    return path


def restore(layout: Layout, name: str) -> list[str]:
    """Put the checkpoint back; returns the paths that differed."""
    path = folder(layout) / f"{name}.tar"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {name!r} in {folder(layout)}")
    changed = []
    with tarfile.open(path) as tar:
        saved = set(tar.extractfile(".sparkstack-paths").read().decode().split("\n"))
        for gone in sorted(set(managed(layout)) - saved):
            os.unlink(gone)
            changed.append(gone)
        for member in tar.getmembers():
            if member.name == ".sparkstack-paths":
                continue
            dest = "/" + member.name
            before = _read(dest)
            if member.issym():
                if os.path.islink(dest) and os.readlink(dest) == member.linkname:
                    continue
                tmp = dest + ".sparkstack-restore"
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                os.symlink(member.linkname, tmp)
                os.replace(tmp, dest)
            else:
                data = tar.extractfile(member).read()
                if before == data and _mode(dest) == member.mode:
                    continue
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                tmp = dest + ".sparkstack-restore"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.chmod(tmp, member.mode)
                os.chown(tmp, member.uid, member.gid)
                os.replace(tmp, dest)
            changed.append(dest)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    return changed


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-checkpoint")
    p.add_argument("--config-root", default=DEFAULT_CONFIG_ROOT)
    p.add_argument("action", choices=["save", "commit", "restore", "rollback", "list"])
    p.add_argument("name", nargs="?", default="before-update")
    args = p.parse_args(argv)
    layout = Manifest.load(args.config_root).layout
    try:
        if args.action == "save":
            print(f"checkpoint: saved {len(managed(layout))} paths in "
                  f"{save(layout, args.name)}")
        elif args.action == "commit":
            commit(layout, args.name)
            print(f"checkpoint: {args.name} is the one a rollback returns to")
        elif args.action == "restore":
            changed = restore(layout, args.name)
            print(f"checkpoint: restored {args.name}; {len(changed)} path(s) put back"
                  + "".join(f"\n  {p}" for p in changed))
        elif args.action == "rollback":
            done = rollback(layout)
            if done is None:
                print(f"checkpoint: {NOTHING_TO_ROLL_BACK}")
                return 3
            print(f"checkpoint: rolled back to {done[0]}; {len(done[1])} path(s) put back"
                  + "".join(f"\n  {p}" for p in done[1]))
        else:
            committed = set(history(layout))
            for path in sorted(folder(layout).glob("*.tar")):
                print(f"{path.stem}\t{time.ctime(path.stat().st_mtime)}\t"
                      f"{'took effect' if path.stem in committed else 'not committed'}")
    except (OSError, tarfile.TarError, KeyError) as e:
        print(f"checkpoint: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
