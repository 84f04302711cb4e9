"""The memory-fit gate: refuse, at plan time, a model that will not fit.

The estimate needs the model's config.json and safetensors headers and the host's
/proc/meminfo, so a fact runs checks/fit.py (standard library only) on the host itself.
A model that does not fit stops the deploy before any host is changed, so the running
model is never stopped for one that cannot start.
"""

from __future__ import annotations

import json
import re

from pyinfra.api import FactBase
from pyinfra.api.exceptions import PyinfraError

from .settings import REPO_ROOT

# checks/fit.py as a script, without its command-line entry point
FIT_SOURCE = (REPO_ROOT / "checks" / "fit.py").read_text().split(
    'if __name__ == "__main__":')[0]
_PROBE = """{source}
try:
    c, w, src = model_inputs({model!r}, {hf_home!r}, {hub!r})
    print(json.dumps({{"config": c, "weights": w, "source": src,
                      "meminfo": open("/proc/meminfo").read()}}))
except Exception as e:
    print(json.dumps({{"unknown": f"{{e.__class__.__name__}}: {{e}}"}}))
"""


class ModelFitInputs(FactBase):
    """config.json, weight bytes and /proc/meminfo for one model on the host."""

    def command(self, model: str, hf_home: str, hub: str | None) -> str:
        script = _PROBE.format(source=FIT_SOURCE, model=model, hf_home=hf_home, hub=hub)
        return f"python3 - <<'SPARKSTACK_FIT'\n{script}\nSPARKSTACK_FIT"

    def process(self, output):
        return json.loads("\n".join(output))


def gpu_memory_utilization_of(unit_text: list[str] | None) -> float:
    """The --gpu-memory-utilization of an installed unit file (0 when none)."""
    match = re.search(r"--gpu-memory-utilization\s+'?([0-9.]+)", "\n".join(unit_text or []))
    return float(match.group(1)) if match else 0.0


def refuse(host_name: str, model: dict, estimate) -> PyinfraError:
    return PyinfraError(
        f"host {host_name}: model {model['name']} ({model['model']}) does not fit, "
        f"no host was changed: {estimate.reason}. Figures in GiB: weights "
        f"{estimate.weights_gib}, KV cache per sequence {estimate.kv_one_sequence_gib}, "
        f"activations {estimate.activations_gib}, overhead {estimate.overhead_gib}, "
        f"budget {estimate.budget_gib}, free now {estimate.free_now_gib}, available "
        f"after dropping caches {estimate.available_now_gib}. If you know better, set "
        f"skip_fit_check: true on this model entry.")
