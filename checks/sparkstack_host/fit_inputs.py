"""What the memory-fit estimate needs from a Spark: a model's config.json, the bytes of
its weights, and /proc/meminfo.

    python3 fit_inputs.py --model REPO_OR_DIR [--hf-home DIR] [--hub URL]
                          [--download-from URL --revision REV]

prints them as one JSON object (with "unknown": reason when the model cannot be read:
the memory figures still come).
Weights come from `model.safetensors.index.json` (metadata.total_size) or the sum of the
tensor byte ranges in every `*.safetensors` header, found in a local folder, the Hugging
Face cache, or (with --hub) the Hub itself: only the headers are read, with HTTP range
requests, so a 60 GB model costs a few hundred kilobytes.

Self-contained (standard library only, no import of its own package): the deploy runs
this file as it is, with the host's python3, before anything of sparkstack is installed
on the host, to refuse a model that does not fit before any host is changed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import struct
import sys
import urllib.error
import urllib.request
from pathlib import Path


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a .safetensors file (8-byte little-endian length first)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))


def header_bytes(header: dict) -> int:
    """Bytes of tensor data a header describes (packed 4-bit types included)."""
    return sum(end - start for name, t in header.items() if name != "__metadata__"
               for start, end in [t["data_offsets"]])


def find_model_dir(model: str, hf_home: str | None = None) -> Path | None:
    """A local folder, or the newest snapshot of a Hub repo in the Hugging Face cache."""
    if os.path.isdir(model):
        return Path(model)
    hf_home = hf_home or os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface"))
    snapshots = Path(hf_home) / "hub" / f"models--{model.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def weights_bytes(model_dir: Path) -> tuple[int, str]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return int(total), index.name
    files = sorted(glob.glob(str(model_dir / "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {model_dir}")
    return sum(header_bytes(safetensors_header(f)) for f in files), \
        f"{len(files)} safetensors header(s)"


def _hub_get(url: str, first: int | None = None, last: int | None = None,
             timeout: float = 15) -> bytes:
    """GET (a byte range of) a Hub file. A server that ignores the range is read only
    as far as needed."""
    req = urllib.request.Request(url, headers={"User-Agent": "sparkstack-fit"})
    if first is not None:
        req.add_header("Range", f"bytes={first}-{last}")
    token = os.environ.get("HF_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as reply:
        if first is None:
            return reply.read()
        if reply.status == 206:
            return reply.read(last - first + 1)
        reply.read(first)  # range ignored: skip to it
        return reply.read(last - first + 1)


def hub_safetensors_header(url: str) -> dict:
    (length,) = struct.unpack("<Q", _hub_get(url, 0, 7))
    return json.loads(_hub_get(url, 8, 8 + length - 1))


def hub_inputs(model: str, endpoint: str) -> tuple[dict, int, str]:
    """config.json and weight bytes of a Hub repo, without downloading the weights."""
    files = f"{endpoint.rstrip('/')}/{model}/resolve/main"
    try:
        config = json.loads(_hub_get(f"{files}/config.json"))
    except (urllib.error.URLError, OSError) as e:
        raise FileNotFoundError(f"{model}: not readable from the Hub at {endpoint} "
                                f"({getattr(e, 'reason', e)})") from e
    try:
        index = json.loads(_hub_get(f"{files}/model.safetensors.index.json"))
        total = index.get("metadata", {}).get("total_size")
        if total:
            return config, int(total), "model.safetensors.index.json on the Hub"
        names = sorted(set(index["weight_map"].values()))
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        api = json.loads(_hub_get(f"{endpoint.rstrip('/')}/api/models/{model}"))
        names = sorted(s["rfilename"] for s in api.get("siblings", [])
                       if s["rfilename"].endswith(".safetensors") and "/" not in s["rfilename"])
    if not names:
        raise FileNotFoundError(f"{model}: no safetensors weights on the Hub at {endpoint}")
    total = sum(header_bytes(hub_safetensors_header(f"{files}/{n}")) for n in names)
    return config, total, f"{len(names)} safetensors header(s) read from the Hub by range"



def model_inputs(model: str, hf_home: str | None = None,
                 hub: str | None = None) -> tuple[dict, int, str]:
    """config.json, weight bytes and where they came from: a local folder, the Hugging
    Face cache, or (when `hub` is given) the Hub by range requests."""
    model_dir = find_model_dir(model, hf_home)
    if model_dir is not None:
        weights, source = weights_bytes(model_dir)
        return json.loads((model_dir / "config.json").read_text()), weights, source
    if hub and not os.path.isabs(model):
        return hub_inputs(model, hub)
    raise FileNotFoundError(f"{model}: not a local folder and not in the Hugging Face "
                            "cache" + ("" if hub else " (Hub lookups are off)"))


def download_state(model: str, revision: str, hf_home: str | None, endpoint: str) -> dict:
    """Can the deploy's download step get `model` at `revision`: already in the cache
    (its revision's snapshot has a config), or the Hub at `endpoint` answers for it?
    {"cached": bool, "error": "" or why not}."""
    repo = Path(hf_home or "") / "hub" / f"models--{model.replace('/', '--')}"
    ref = repo / "refs" / revision
    if ref.is_file() and (repo / "snapshots" / ref.read_text().strip() / "config.json").is_file():
        return {"cached": True, "error": ""}
    url = f"{endpoint.rstrip('/')}/api/models/{model}/revision/{revision}"
    try:
        _hub_get(url, timeout=10)
        return {"cached": False, "error": ""}
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            held = "with the token given" if os.environ.get("HF_TOKEN") else "without a token"
            return {"cached": False, "gated": True,
                    "error": f"{url} answered HTTP {e.code} {held}: the repo is gated or "
                             "private"}
        return {"cached": False, "error": f"{url} answered HTTP {e.code}"}
    except (OSError, ValueError) as e:
        return {"cached": False, "error": f"{url}: {getattr(e, 'reason', e)}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fit_inputs.py")
    p.add_argument("--model", required=True)
    p.add_argument("--hf-home")
    p.add_argument("--hub", help="read the headers from this Hub when the model is not "
                                 "on this machine (e.g. https://huggingface.co)")
    p.add_argument("--download-from", metavar="URL",
                   help="also say whether the deploy can download it from this Hub")
    p.add_argument("--revision", default="main")
    args = p.parse_args(argv)
    out = {"meminfo": Path("/proc/meminfo").read_text()}
    if args.download_from:
        out["download"] = download_state(args.model, args.revision, args.hf_home,
                                         args.download_from)
    try:
        config, weights, source = model_inputs(args.model, args.hf_home, args.hub)
        out.update(config=config, weights=weights, source=source)
    except (OSError, KeyError, ValueError) as e:
        out["unknown"] = f"{e.__class__.__name__}: {e}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
