"""Deploy the sparkstack onto every Spark of the inventory:

    pyinfra inventory.py deploy.py

PostgreSQL, LiteLLM, Open WebUI and vLLM (one unit per model), as the host's `roles`
say (sparkstack/services/registry.py lists them, in this order); LiteLLM routes a
profile to a local model once that model is ready. The whole inventory is validated
first: a bad setting on any host stops the run before any host is changed, and each
Spark runs one operation at a time.
"""

from pyinfra import host

from sparkstack.context import current_host
from sparkstack.host_facts import snapshot
from sparkstack.services import base, registry

settings, fleet, secrets = current_host(host)
snapshot()  # what the host has now, in one round trip: every operation decides from it

services = registry.on(settings)
deployment = base.Deployment(settings, fleet, secrets, services)
base.deploy(deployment)  # CAs, proxies, pip settings, the host package, manifest
for service in services:
    service.deploy(deployment)
for service in services:
    if service.finish:
        service.finish(deployment)
