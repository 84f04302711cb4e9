"""Download a model from the Hugging Face Hub into a Hugging Face cache: resumable,
with progress (bytes, rate, time left).

    sparkstack-download REPO [--revision REV] --hf-home DIR [--endpoint URL]
                        [--as-user USER --token-from ENV_FILE]

The files vLLM reads to load a model (the top level's *.json, *.safetensors, *.txt,
*.model, *.jinja and *.py) land where huggingface_hub, and so vLLM, finds them:
HF_HOME/hub/models--ORG--NAME/snapshots/COMMIT/FILE, with refs/REVISION naming the
commit. A file is written to FILE.incomplete and renamed once whole; an interrupted
download resumes where it stopped (HTTP range requests), a finished one is not fetched
again. A Hugging Face token, when there is one, is sent for gated repos: HF_TOKEN from
the environment, or (started as root) read from the root-only environment file
`--token-from` before the program becomes `--as-user`, the owner of the cache, so the
token is never on a command line. Exits 1 with the reason when the Hub cannot be read;
nothing that was already in the cache is touched then.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import pwd
import sys
import time
from pathlib import Path

import httpx

from .contract import load_env_file

WANTED = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.py")
GIB, MIB = 1024**3, 1024**2


def _size(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


class Progress:
    """Prints the download's progress at most every `every` seconds."""

    def __init__(self, total: int, already: int, out=print, every: float = 2.0):
        self.total, self.done, self.start_done = total, already, already
        self.out, self.every = out, every
        self.start = self.last = time.monotonic()

    def add(self, n: int, name: str, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = (self.done - self.start_done) / max(now - self.start, 1e-6)
        left = (self.total - self.done) / rate if rate > 0 and self.total else 0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        self.out(f"download: {name}: {_size(self.done)} of {_size(self.total)}{share}, "
                 f"{_size(rate)}/s, {left:.0f} s left", flush=True)


def _fetch(http: httpx.Client, url: str, dest: Path, progress: Progress, name: str) -> None:
    partial = dest.with_name(dest.name + ".incomplete")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with http.stream("GET", url, headers=headers) as reply:
        if reply.status_code == 416:  # the partial file is already whole
            partial.rename(dest)
            return
        reply.raise_for_status()
        mode = "ab" if reply.status_code == 206 else "wb"  # a server may ignore Range
        if mode == "wb" and have:
            progress.add(-have, name)
        with open(partial, mode) as f:
            for chunk in reply.iter_bytes(1 << 20):
                f.write(chunk)
                progress.add(len(chunk), name)
    partial.rename(dest)


def download(repo: str, revision: str, hf_home: str, endpoint: str, out=print) -> Path:
    """Download `repo` at `revision`; returns the snapshot folder."""
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = endpoint.rstrip("/")
    with httpx.Client(headers=headers, timeout=60, follow_redirects=True) as http:
        info = http.get(f"{base}/api/models/{repo}/revision/{revision}",
                        params={"blobs": "true"})
        info.raise_for_status()
        meta = info.json()
        commit = meta["sha"]
        files = [s for s in meta.get("siblings", []) if "/" not in s["rfilename"]
                 and any(fnmatch.fnmatch(s["rfilename"], w) for w in WANTED)]
        cache = Path(hf_home) / "hub" / f"models--{repo.replace('/', '--')}"
        snapshot = cache / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        (cache / "refs").mkdir(exist_ok=True)
        total = sum(s.get("size") or 0 for s in files)
        done = sum((snapshot / s["rfilename"]).stat().st_size for s in files
                   if (snapshot / s["rfilename"]).exists())
        progress = Progress(total, done, out)
        out(f"download: {repo}@{revision} ({commit[:12]}): {len(files)} files, "
            f"{_size(total)}, {_size(done)} already here", flush=True)
        for s in files:
            dest = snapshot / s["rfilename"]
            if not dest.exists():
                _fetch(http, f"{base}/{repo}/resolve/{commit}/{s['rfilename']}", dest,
                       progress, s["rfilename"])
        (cache / "refs" / revision).write_text(commit)
        progress.add(0, "all files", force=True)
    return snapshot


def become(user: str) -> None:
    """Drop root for `user` (the files it writes are that user's), as runuser would."""
    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)


def refusal(error: httpx.HTTPStatusError, repo: str) -> str:
    """Why the Hub refused, and what to do about a gated repo."""
    code = error.response.status_code
    if code in (401, 403):
        held = "with the token given" if os.environ.get("HF_TOKEN") else "without a token"
        return (f"the Hub answered HTTP {code} {held}: {repo} is gated or private; set "
                "hf_token (or HF_TOKEN on the controller) to a token whose account was "
                "granted access to it")
    return f"{error.__class__.__name__}: {error}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-download")
    p.add_argument("repo")
    p.add_argument("--revision", default="main")
    p.add_argument("--hf-home", required=True)
    p.add_argument("--endpoint", default="https://huggingface.co")
    p.add_argument("--token-from", metavar="ENV_FILE",
                   help="read HF_TOKEN from this environment file (when it holds one)")
    p.add_argument("--as-user", metavar="USER", help="download as this user")
    args = p.parse_args(argv)
    if args.token_from and os.path.isfile(args.token_from) and \
            (token := load_env_file(args.token_from).get("HF_TOKEN")):
        os.environ["HF_TOKEN"] = token
    if args.as_user:
        become(args.as_user)
    start = time.monotonic()
    try:
        folder = download(args.repo, args.revision or "main", args.hf_home, args.endpoint)
    except httpx.HTTPStatusError as e:
        print(f"download: {args.repo} failed: {refusal(e, args.repo)}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, KeyError, ValueError) as e:
        print(f"download: {args.repo} failed: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1
    print(f"download: {args.repo} complete in {time.monotonic() - start:.1f} s: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
