"""The host package (`checks/`), built into a wheel on the controller for the deploy.

The wheel is built once per change of its source (cached under build/, keyed by a
digest of the source) and reproducibly (SOURCE_DATE_EPOCH), so the same source gives
the same bytes on any controller and a host re-installs it only when it changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .project import HOST_PACKAGE_SOURCE as SOURCE
from .project import WORKDIR

BUILDS = WORKDIR / "build" / "host-package"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        rel = path.relative_to(SOURCE)
        if not path.is_file() or any(part == "__pycache__" or part == "build"
                                     or part.endswith(".egg-info") for part in rel.parts):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _build(into: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sparkstack-host-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(SOURCE, src, ignore=_IGNORED)
        out = Path(tmp) / "out"
        # a fixed timestamp makes the wheel's bytes depend on the source alone
        env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--disable-pip-version-check", "-w", str(out), str(src)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the host package failed:\n{proc.stderr[-2000:]}")
        into.parent.mkdir(parents=True, exist_ok=True)
        try:
            out.rename(into)  # atomic: a parallel build of the same source loses quietly
        except OSError:
            if not into.is_dir():
                raise


@lru_cache(maxsize=1)
def wheel() -> Wheel:
    folder = BUILDS / source_digest()
    if not list(folder.glob("*.whl")):
        _build(folder)
    path = next(folder.glob("*.whl"))
    return Wheel(path, hashlib.sha256(path.read_bytes()).hexdigest())
