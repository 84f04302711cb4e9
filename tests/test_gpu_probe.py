"""GPU probe: the no-driver path runs for real on machines without an NVIDIA driver
(this CI); the GB10 NVML path needs the NVML stand-in planned in issue 3."""

import ctypes.util

import psutil
import pytest
from sparkstack_host import gpu

no_driver = pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None,
    reason="this machine has an NVIDIA driver; the no-driver path cannot be shown here")


@no_driver
def test_without_a_driver_the_probe_says_so_and_uses_os_memory():
    report = gpu.probe()
    assert report["gpu_found"] is False
    assert report["error"].startswith("no NVIDIA driver/GPU found")
    assert report["memory_source"] == "os"
    total = psutil.virtual_memory().total / gpu.GIB
    assert report["memory"]["total_gib"] == pytest.approx(total)
    assert 0 < report["memory"]["available_gib"] <= total


@no_driver
def test_the_command_exits_non_zero_with_a_plain_message(capsys):
    assert gpu.main([]) == 1
    out = capsys.readouterr().out
    assert out.startswith("no NVIDIA driver/GPU found")
    assert "Traceback" not in out


def test_report_of_a_gb10_names_the_memory_source():
    report = {"gpu_found": True, "driver_version": "580.95", "cuda_version": "13.0",
              "devices": [{"index": 0, "name": "NVIDIA GB10", "compute_capability": "12.1",
                           "temperature_c": 41, "power_w": 11.5, "utilization_pct": 0,
                           "throttle_reasons": ["GpuIdle"], "processes": [],
                           "memory": None}],
              "memory_source": "os",
              "memory": {"total_gib": 119.7, "available_gib": 110.2}}
    text = gpu.format_report(report)
    assert "NVIDIA GB10, compute capability 12.1" in text
    assert "memory from the OS (unified memory" in text
    assert "total 119.7 GiB, available 110.2 GiB" in text
