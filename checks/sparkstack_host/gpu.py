"""GPU probe through NVML, with the memory budget from the OS on unified memory.

    sparkstack-gpu [--json]

On a GB10 (DGX Spark) NVML answers NOT_SUPPORTED for memory because CPU and GPU share
it; the budget then comes from /proc/meminfo through psutil and the report says so.
Without an NVIDIA driver the result says so plainly instead of raising.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import psutil

GIB = 1024**3


def os_memory() -> dict[str, float]:
    """Unified-memory budget as the OS sees it, in GiB. Page cache counts as
    reclaimable: CUDA's free memory excludes it until it is dropped."""
    vm = psutil.virtual_memory()
    cached = getattr(vm, "cached", 0) + getattr(vm, "buffers", 0)
    return {"total_gib": vm.total / GIB, "available_gib": vm.available / GIB,
            "free_gib": vm.free / GIB, "reclaimable_cache_gib": cached / GIB}


def _nvml():
    import pynvml  # from nvidia-ml-py

    return pynvml


def _query(fn: Callable[[], Any]) -> Any:
    """One NVML query; None where the device does not support it."""
    nv = _nvml()
    try:
        return fn()
    except nv.NVMLError as e:
        if getattr(e, "value", None) in (nv.NVML_ERROR_NOT_SUPPORTED,
                                         nv.NVML_ERROR_FUNCTION_NOT_FOUND):
            return None
        raise


def _device(nv, index: int) -> dict[str, Any]:
    h = nv.nvmlDeviceGetHandleByIndex(index)
    name = nv.nvmlDeviceGetName(h)
    cc = _query(lambda: nv.nvmlDeviceGetCudaComputeCapability(h))
    power = _query(lambda: nv.nvmlDeviceGetPowerUsage(h))
    util = _query(lambda: nv.nvmlDeviceGetUtilizationRates(h))
    mem = _query(lambda: nv.nvmlDeviceGetMemoryInfo(h))
    # Renamed "clocks event reasons" in newer NVML; older bindings only have the old name.
    get_reasons = (getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or nv.nvmlDeviceGetCurrentClocksThrottleReasons)
    reasons = _query(lambda: get_reasons(h))
    procs = _query(lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)) or []
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else name,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "temperature_c": _query(lambda: nv.nvmlDeviceGetTemperature(
            h, nv.NVML_TEMPERATURE_GPU)),
        "power_w": power / 1000 if power is not None else None,
        "utilization_pct": util.gpu if util is not None else None,
        "throttle_reasons": _throttle_names(nv, reasons),
        "processes": [{"pid": p.pid, "used_gib": (p.usedGpuMemory or 0) / GIB}
                      for p in procs],
        "memory": None if mem is None else {
            "total_gib": mem.total / GIB, "used_gib": mem.used / GIB,
            "free_gib": mem.free / GIB},
    }


def _throttle_names(nv, mask: int | None) -> list[str] | None:
    if mask is None:
        return None
    names = []
    for attr in dir(nv):
        if attr.startswith("nvmlClocksThrottleReason") and attr not in (
                "nvmlClocksThrottleReasonAll", "nvmlClocksThrottleReasonNone"):
            bit = getattr(nv, attr)
            if isinstance(bit, int) and bit and mask & bit:
                names.append(attr.removeprefix("nvmlClocksThrottleReason"))
    return sorted(set(names))


def probe() -> dict[str, Any]:
    report: dict[str, Any] = {"gpu_found": False, "devices": [], "os_memory": os_memory()}
    try:
        nv = _nvml()
        nv.nvmlInit()
    except Exception as e:  # library missing, driver not loaded, no permission, no GPU
        report["error"] = f"no NVIDIA driver/GPU found ({e.__class__.__name__}: {e})"
        report["memory_source"] = "os"
        report["memory"] = report["os_memory"]
        return report
    try:
        driver = nv.nvmlSystemGetDriverVersion()
        cuda = _query(nv.nvmlSystemGetCudaDriverVersion_v2)
        report.update(
            gpu_found=nv.nvmlDeviceGetCount() > 0,
            driver_version=driver.decode() if isinstance(driver, bytes) else driver,
            cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
            devices=[_device(nv, i) for i in range(nv.nvmlDeviceGetCount())])
    finally:
        nv.nvmlShutdown()
    if not report["gpu_found"]:
        report["error"] = "no NVIDIA driver/GPU found (the driver reports 0 devices)"
    device_mem = [d["memory"] for d in report["devices"] if d["memory"]]
    if device_mem:
        report["memory_source"] = "nvml"
        report["memory"] = device_mem[0]
    else:  # GB10 unified memory: NVML has no memory figures
        report["memory_source"] = "os"
        report["memory"] = report["os_memory"]
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    if report.get("error"):
        lines.append(report["error"])
    else:
        lines.append(f"driver {report['driver_version']}, CUDA {report['cuda_version']}")
    for d in report["devices"]:
        lines.append(
            f"GPU {d['index']}: {d['name']}, compute capability {d['compute_capability']}, "
            f"{d['temperature_c']} C, {d['power_w']} W, {d['utilization_pct']} % busy, "
            f"throttle: {', '.join(d['throttle_reasons'] or []) or 'none'}, "
            f"{len(d['processes'])} process(es)")
    m = report["memory"]
    source = {"os": "from the OS (unified memory or no NVML memory figures)",
              "nvml": "from NVML"}[report["memory_source"]]
    figures = ", ".join(f"{k.removesuffix('_gib')} {v:.1f} GiB" for k, v in m.items())
    lines.append(f"memory {source}: {figures}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sparkstack-gpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = probe()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["gpu_found"] else 1


if __name__ == "__main__":
    sys.exit(main())
