"""Deploy the sparkstack onto every Spark of the inventory:

    pyinfra inventory.py deploy.py

PostgreSQL, LiteLLM, Open WebUI and vLLM (one unit per model), as the host's `roles`
say; LiteLLM routes a profile to a local model once that model is ready. The whole
inventory is validated first: a bad setting on any host stops the run before any host
is changed.
"""

from pyinfra import host

from sparkstack.context import current_host
from sparkstack.host_facts import snapshot
from sparkstack.services import base, litellm, openwebui, postgres, vllm

settings, fleet, secrets = current_host(host)
snapshot()  # what the host has now, in one round trip: every operation decides from it

base.deploy(settings, fleet)  # CAs, proxies, pip settings, the host package, manifest
if settings.has("postgres"):
    postgres.deploy(settings, secrets)
# The front door first: while the models load, their profiles are served by the cloud.
if settings.has("litellm"):
    litellm.deploy(settings, fleet, secrets)
if settings.has("openwebui"):
    openwebui.deploy(settings, fleet, secrets)
if settings.has("vllm"):
    vllm.deploy(settings, fleet, secrets)
if settings.has("litellm"):
    litellm.route_ready_models(settings, fleet)
