"""Switch swap groups to another of their members, on every Spark that has one:

    pyinfra inventory.py swap.py --data model=MODEL        (or: sparkstack swap MODEL)

Models declared with the same `swap_group` on a host are alternatives: one runs, the
others stand by. This runs the group holding MODEL on MODEL instead, as a swap (the
same as a deploy that changes which model runs: fit checked first, weights downloaded
while the old model serves, make-before-break when both fit, rolled back when the new
model does not become ready), one Spark at a time. The choice is recorded on the host:
later deploys keep it. Nothing else of the inventory is applied.
"""

from pyinfra import host
from pyinfra.api.exceptions import PyinfraError

from sparkstack.context import current_host
from sparkstack.host_facts import snapshot
from sparkstack.services import base, litellm, registry, vllm

settings, fleet, secrets = current_host(host, run_arguments=("model",))
model = host.data.get("model")
members = {m["name"]: h.name for h in fleet.hosts.values() for m in h.models
           if m["swap_group"]}
if model not in members:
    raise PyinfraError(f"swap: model = {model!r} is not a member of a swap group on any "
                       f"host; members: {', '.join(sorted(members)) or 'none'} (give it "
                       "with --data model=NAME)")

groups = {m["swap_group"] for m in settings.models if m["name"] == model}
snapshot()  # what the host has now, in one round trip
deployment = base.Deployment(settings, fleet, secrets, registry.on(settings),
                             choose={group: model for group in groups})
if groups:
    vllm.deploy(deployment)
if settings.has("litellm"):
    litellm.route_ready_models(deployment)
