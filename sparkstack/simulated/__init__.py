"""Simulated DGX Sparks, for trying the stack without one and for the tests.

Each is a Debian systemd machine booted with systemd-nspawn; where this machine cannot
have what a Spark has, stand-ins take its place, each installed through a documented
setting a user has too: `vllm_standin` (vLLM's `vllm serve` without a GPU, installed
as `vllm_package`) and `nvml_gb10_standin.c` (a GB10-shaped libnvidia-ml.so.1).
"""
