"""Simulated DGX Spark hosts, where no real Spark is at hand.

Each host is a Debian systemd machine booted with systemd-nspawn on an overlay of one
cached root filesystem, in its own network namespace with its own address on a private
bridge. Hosts reach each other, the controller (the bridge address) and, through NAT,
the package registries. The controller reaches them over SSH as root with a generated key.

Shared caches (bind-mounted into every host, kept between runs on one machine):
apt archives, the pip cache, and the machine's local wheels (/opt/wheels), so a fresh
host installs quickly. A host booted with `reuse_venvs` also starts with the venvs
earlier hosts built (keep_venvs: read-only overlay layers under its disk). Each host's
/proc/meminfo shows a DGX Spark's memory, not this machine's (SPARK_MEMINFO_KIB), so
the memory-fit gate decides alike on any machine.

Beside the hosts runs a Hub stand-in (hub_standin.py) on the bridge, serving the test
models made on this machine (test_model.py) as Hugging Face repos, so a model reaches a
simulated Spark the way a user's model reaches a Spark: downloaded from `hf_endpoint`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sparkstack_host.contract import DEFAULT_INSTALL_ROOT, VENV_STAMP

CACHE = Path(os.environ.get("SPARKSTACK_SIM_CACHE", "/var/cache/sparkstack"))
STATE = Path(os.environ.get("SPARKSTACK_SIM_STATE", "/var/lib/sparkstack-sim"))
SUBNET_PREFIX = "10.213.77"  # only these simulated hosts use this /24
BRIDGE = "ssbr0"
BRIDGE_ADDR = f"{SUBNET_PREFIX}.1"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2,ca-certificates"
)
BASE_ROOTFS = CACHE / f"rootfs-{SUITE}"
# venvs that hosts built, kept as read-only layers a new host may start on (reuse_venvs)
VENV_LAYERS = CACHE / "venv-layers"
MAX_VENV_LAYERS = 32
SSH_KEY = CACHE / "ssh" / "id_ed25519"
HERE = Path(__file__).resolve().parent
STANDIN_WHEELS = CACHE / "standin-wheels"  # the stand-in's and the CPU engine's wheels
HUB_ROOT = CACHE / "hub"
HUB_PORT = 8090
HUB_ENDPOINT = f"http://{BRIDGE_ADDR}:{HUB_PORT}"
# Hugging Face repo ids of the test models (test_model.py) and their seeds
TEST_MODELS = {"sparkstack-test/tiny-chat": 0, "sparkstack-test/tiny-chat-b": 1}


@dataclass
class SimHost:
    name: str
    address: str
    pid: int
    binds: list[str] = field(default_factory=list)  # what its container is given


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def _say(msg: str) -> None:
    print(f"[simspark] {msg}", flush=True)


# --- one-time machine preparation ----------------------------------------------------


def ensure_tools() -> None:
    missing = [t for t in ("systemd-nspawn", "debootstrap", "ip", "iptables", "ssh-keygen")
               if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"simspark needs {', '.join(missing)}: apt-get install systemd-container "
            "debootstrap iproute2 iptables openssh-client"
        )


def ensure_base_rootfs() -> Path:
    """Build the cached root filesystem once (about a minute), then reuse it."""
    if (BASE_ROOTFS / ".sparkstack-ready").exists():
        return BASE_ROOTFS
    ensure_tools()
    build = CACHE / f"rootfs-{SUITE}.build"
    shutil.rmtree(build, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    _say(f"building the base root filesystem in {BASE_ROOTFS} (once per machine)")
    _run("debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE,
         str(build), MIRROR)
    # Package lists so the first deploy's apt-get does not start from nothing; a real
    # Spark has them too.
    shutil.copy("/etc/resolv.conf", build / "etc/resolv.conf")
    _run("chroot", str(build), "apt-get", "update", "-qq")
    _run("chroot", str(build), "apt-get", "clean")
    (build / "etc/machine-id").write_text("")  # nspawn gives each boot its own id
    (build / ".sparkstack-ready").write_text(time.strftime("%F %T\n"))
    shutil.rmtree(BASE_ROOTFS, ignore_errors=True)
    build.rename(BASE_ROOTFS)
    return BASE_ROOTFS


def ensure_ssh_key() -> Path:
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "simspark", "-f",
             str(SSH_KEY))
    return SSH_KEY


def ensure_standin_wheels() -> Path:
    """Build the vLLM stand-in's wheel and the CPU engine's (engine.py); hosts install
    them like any package from a `pip_find_links` folder."""
    from .engine import ensure_wheels

    sources = {HERE / "vllm_standin.py": "vllm_standin.py",
               HERE / "vllm_standin.pyproject.toml": "pyproject.toml"}
    STANDIN_WHEELS.mkdir(parents=True, exist_ok=True)
    ensure_wheels(STANDIN_WHEELS)
    stamp = STANDIN_WHEELS / ".source-mtime"
    newest = max(p.stat().st_mtime for p in sources)
    if stamp.exists() and float(stamp.read_text()) >= newest:
        return STANDIN_WHEELS
    for old in STANDIN_WHEELS.glob("vllm_standin-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="simspark-") as tmp:
        for src, name in sources.items():
            shutil.copy(src, Path(tmp) / name)
        _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
             "-w", str(STANDIN_WHEELS), tmp)
    stamp.write_text(str(newest))
    return STANDIN_WHEELS


NVML_SOURCE = HERE / "nvml_gb10_standin.c"
NVML_LIB = CACHE / "nvml-gb10" / "libnvidia-ml.so.1"


def ensure_nvml_standin() -> Path:
    """Compile the GB10-shaped NVML stand-in when its source changed."""
    if NVML_LIB.exists() and NVML_LIB.stat().st_mtime >= NVML_SOURCE.stat().st_mtime:
        return NVML_LIB
    NVML_LIB.parent.mkdir(parents=True, exist_ok=True)
    _run("cc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(NVML_LIB), str(NVML_SOURCE))
    return NVML_LIB


def ensure_hub() -> str:
    """The test models, and the Hub stand-in serving them on the bridge (started once,
    left running until `down_all`); returns its endpoint, the hosts' `hf_endpoint`."""
    from .test_model import build

    for repo, seed in TEST_MODELS.items():
        build(HUB_ROOT / repo, seed)
    ensure_network()
    info = STATE / "hub.json"
    if info.exists():
        try:
            with socket.create_connection((BRIDGE_ADDR, HUB_PORT), timeout=1):
                return HUB_ENDPOINT
        except OSError:
            _stop_pid(json.loads(info.read_text())["pid"])
    STATE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkstack.simulated.hub_standin", str(HUB_ROOT),
         "--host", BRIDGE_ADDR, "--port", str(HUB_PORT)],
        stdin=subprocess.DEVNULL, stdout=open(STATE / "hub.log", "a"),
        stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE.parents[1])
    info.write_text(json.dumps({"pid": proc.pid}))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((BRIDGE_ADDR, HUB_PORT), timeout=1):
                return HUB_ENDPOINT
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the Hub stand-in did not answer at {HUB_ENDPOINT}; see "
                       f"{STATE / 'hub.log'}")


def stop_hub() -> None:
    info = STATE / "hub.json"
    if info.exists():
        _stop_pid(json.loads(info.read_text())["pid"])
        info.unlink(missing_ok=True)


def _stop_pid(pid: int, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(int(grace * 10)):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ensure_network() -> None:
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    rule = ["-t", "nat", "POSTROUTING", "-s", f"{SUBNET_PREFIX}.0/24", "!", "-d",
            f"{SUBNET_PREFIX}.0/24", "-j", "MASQUERADE"]
    if _run("iptables", rule[0], rule[1], "-C", *rule[2:], check=False).returncode != 0:
        _run("iptables", rule[0], rule[1], "-A", *rule[2:])


# --- hosts ----------------------------------------------------------------------------


def _host_dir(name: str) -> Path:
    return STATE / name


def _address(index: int) -> str:
    return f"{SUBNET_PREFIX}.{10 + index}"


def _setup_netns(name: str, address: str) -> None:
    veth = f"ss-{name}"[:15]
    _run("ip", "netns", "del", name, check=False)
    _run("ip", "link", "del", veth, check=False)
    _run("ip", "netns", "add", name)
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
    _run("ip", "link", "set", veth, "master", BRIDGE, "up")
    ns = ("ip", "netns", "exec", name)
    _run(*ns, "ip", "link", "set", "lo", "up")
    _run(*ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    _run(*ns, "ip", "link", "set", "eth0", "up")
    _run(*ns, "ip", "route", "add", "default", "via", BRIDGE_ADDR)


# What a simulated Spark's /proc/meminfo says, whatever this machine has: a DGX Spark's
# 128 GB shows as about 121.7 GiB MemTotal, mostly free after boot. The memory-fit gate
# reads it, so every simulated Spark gives the same verdicts on any machine. A real
# model on the CPU engine takes its KV cache from --kv-cache-memory-bytes, not from it.
SPARK_MEMINFO_KIB = {"MemTotal": 127_612_108, "MemFree": 118_489_088,
                     "MemAvailable": 121_634_816, "Buffers": 262_144, "Cached": 3_145_728,
                     "SwapCached": 0, "Active": 2_097_152, "Inactive": 2_097_152,
                     "Shmem": 65_536, "SReclaimable": 262_144, "SwapTotal": 0,
                     "SwapFree": 0}
MEMINFO_FILE = "etc/sparkstack-sim/meminfo"
MEMORY_UNIT = "sparkstack-sim-memory.service"
MEMORY_UNIT_TEXT = f"""[Unit]
Description=Simulated Spark: the memory of a DGX Spark in /proc/meminfo
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind -o ro /{MEMINFO_FILE} /proc/meminfo
"""


def _simulate_memory(root: Path) -> None:
    """Bind a Spark-sized meminfo over the container's /proc/meminfo at every boot
    (systemd-nspawn cannot bind over a /proc file itself)."""
    meminfo = root / MEMINFO_FILE
    meminfo.parent.mkdir(parents=True, exist_ok=True)
    meminfo.write_text("".join(f"{k + ':':<16}{v:>8} kB\n"
                               for k, v in SPARK_MEMINFO_KIB.items()))
    (root / "etc/systemd/system" / MEMORY_UNIT).write_text(MEMORY_UNIT_TEXT)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / MEMORY_UNIT
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{MEMORY_UNIT}")


def _venv_layers() -> list[Path]:
    """The kept venv layers, newest first."""
    return sorted(VENV_LAYERS.glob("[0-9]*"), reverse=True)  # none while it is absent


def _prepare_root(name: str, gpu: bool, reuse_venvs: bool) -> Path:
    hdir = _host_dir(name)
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    root = hdir / "root"
    if not os.path.ismount(root):
        lower = [*(_venv_layers() if reuse_venvs else []), BASE_ROOTFS]
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={':'.join(map(str, lower))},upperdir={hdir / 'upper'},"
             f"workdir={hdir / 'work'}", str(root))
    (root / "etc/hostname").write_text(name + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy(f"{SSH_KEY}.pub", ssh_dir / "authorized_keys")
    _simulate_memory(root)
    if gpu:  # dlopen finds /usr/lib without ldconfig; no library = no driver
        shutil.copy(ensure_nvml_standin(), root / "usr/lib/libnvidia-ml.so.1")
    for mount_point in ("var/cache/apt/archives", "root/.cache/pip", "opt/wheels",
                        "opt/sparkstack-test-wheels"):
        (root / mount_point).mkdir(parents=True, exist_ok=True)
    return root


def _wait_for_ssh(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"simulated host {address} did not open SSH within {timeout:.0f} s")


def ssh(host: SimHost | str, command: str, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell command on a simulated host as root."""
    address = host.address if isinstance(host, SimHost) else host
    return subprocess.run(
        ["ssh", "-i", str(SSH_KEY), "-o", "StrictHostKeyChecking=no", "-o",
         "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
         f"root@{address}", command],
        check=check, text=True, capture_output=True, timeout=timeout,
    )


def boot(name: str, index: int, gpu: bool = True, reuse_venvs: bool = False) -> SimHost:
    """Boot one fresh simulated Spark (its previous state, if any, is discarded).
    `gpu`: give it the GB10-shaped NVML stand-in; without it the host has no driver.
    `reuse_venvs`: its disk starts with the venvs earlier hosts built (keep_venvs), so
    a deploy finds the ones built from the same inputs done, as a re-deploy does."""
    ensure_tools()
    ensure_base_rootfs()
    ensure_ssh_key()
    wheels = ensure_standin_wheels()
    ensure_network()
    stop(name)
    address = _address(index)
    _setup_netns(name, address)
    _prepare_root(name, gpu, reuse_venvs)
    # One apt archive per host name (apt locks it; parallel hosts must not share it),
    # kept between runs.
    apt_archives = CACHE / "apt-archives" / name
    (apt_archives / "partial").mkdir(parents=True, exist_ok=True)
    (CACHE / "pip").mkdir(parents=True, exist_ok=True)
    binds = [
        f"--bind={apt_archives}:/var/cache/apt/archives",
        f"--bind={CACHE / 'pip'}:/root/.cache/pip",
        f"--bind-ro={wheels}:/opt/sparkstack-test-wheels",
    ]
    if Path("/opt/wheels").is_dir():
        binds.append("--bind-ro=/opt/wheels:/opt/wheels")
    return _start(name, address, binds)


def _start(name: str, address: str, binds: list[str], settle: bool = True) -> SimHost:
    """Run the host's systemd in its container; return once it has settled."""
    root = _host_dir(name) / "root"
    log = open(_host_dir(name) / "console.log", "a")
    proc = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", str(root), "-b", "-M", name, "--register=no",
         "--keep-unit", f"--network-namespace-path=/run/netns/{name}", *binds],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    host = SimHost(name=name, address=address, pid=proc.pid, binds=binds)
    (_host_dir(name) / "host.json").write_text(json.dumps(asdict(host)))
    _wait_for_ssh(address)
    # sshd answers before boot finishes; wait until systemd settles.
    deadline = time.monotonic() + (60 if settle else 0)
    while time.monotonic() < deadline:
        state = ssh(host, "systemctl is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.5)
    _say(f"{name} up at {address} (nspawn pid {proc.pid})")
    return host


def reboot(host: SimHost) -> SimHost:
    """Reboot the host as `systemctl reboot` on a Spark would: its disk is kept, /run
    and every process are not. Returns as soon as sshd answers again (its services
    may still be starting); the caller decides what to wait for."""
    ssh(host, "systemctl reboot", check=False)
    for _ in range(600):  # nspawn exits when the container asks for a reboot
        try:
            os.kill(host.pid, 0)
        except ProcessLookupError:
            break
        try:
            if os.waitpid(host.pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        raise RuntimeError(f"{host.name} did not go down for its reboot")
    return _start(host.name, host.address, host.binds, settle=False)


def stop(name: str) -> None:
    hdir = _host_dir(name)
    info = hdir / "host.json"
    if info.exists():
        _stop_pid(json.loads(info.read_text())["pid"], grace=15)
        info.unlink(missing_ok=True)
    root = hdir / "root"
    if os.path.ismount(root):
        _run("umount", "-l", str(root), check=False)
    _run("ip", "netns", "del", name, check=False)
    _run("ip", "link", "del", f"ss-{name}"[:15], check=False)
    shutil.rmtree(hdir, ignore_errors=True)


def running() -> list[SimHost]:
    hosts = []
    if STATE.is_dir():
        for info in sorted(STATE.glob("*/host.json")):
            host = SimHost(**json.loads(info.read_text()))
            try:
                os.kill(host.pid, 0)
                hosts.append(host)
            except ProcessLookupError:
                pass
    return hosts


def up(count: int, prefix: str = "spark") -> list[SimHost]:
    return [boot(f"{prefix}{i}", i) for i in range(1, count + 1)]


def keep_venvs(hosts: list[SimHost], install_root: str = DEFAULT_INSTALL_ROOT) -> int:
    """Keep the venvs these hosts built (complete: stamped) as a new read-only layer for
    hosts booted later with `reuse_venvs`. A venv's folder is named by the digest of
    everything it was built from, so one found on a later host is what its deploy would
    build. Returns how many venvs were kept."""
    venvs = f"{install_root.strip('/')}/*/venvs/*"
    have = {p.relative_to(layer) for layer in _venv_layers() for p in layer.glob(venvs)}
    new = VENV_LAYERS / f".{time.time_ns()}"
    kept = 0
    for host in hosts:
        upper = _host_dir(host.name) / "upper"
        for stamp in upper.glob(f"{venvs}/{VENV_STAMP}"):
            venv = stamp.parent.relative_to(upper)
            if venv in have:
                continue
            (new / venv.parent).mkdir(parents=True, exist_ok=True)
            # hard links: no copy, and the files outlive the host's upper layer
            _run("cp", "-R", "--link", "--preserve=mode,ownership,timestamps,links",
                 str(stamp.parent), str(new / venv))
            have.add(venv)
            kept += 1
    if kept:
        new.rename(VENV_LAYERS / new.name[1:])
    return kept


def _prune_venv_layers() -> None:
    """Past MAX_VENV_LAYERS, drop the oldest (a layer in use cannot be changed: only
    while no host runs)."""
    for layer in _venv_layers()[MAX_VENV_LAYERS:]:
        shutil.rmtree(layer, ignore_errors=True)
    for unfinished in VENV_LAYERS.glob(".*"):
        shutil.rmtree(unfinished, ignore_errors=True)


def down_all() -> None:
    if STATE.is_dir():
        for hdir in sorted(p for p in STATE.iterdir() if p.is_dir()):
            stop(hdir.name)
    _prune_venv_layers()
    stop_hub()
