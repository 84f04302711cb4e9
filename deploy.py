"""Deploy the sparkstack onto every Spark of the inventory:

    pyinfra inventory.py deploy.py

PostgreSQL, vLLM (one unit per model), LiteLLM and Open WebUI, as the host's `roles`
say. The whole inventory is validated first: a bad setting on any host stops the run
before any host is changed.
"""

from pyinfra import host

from sparkstack.context import current_host
from sparkstack.services import base, checks, litellm, openwebui, postgres, vllm

settings, fleet, secrets = current_host(host)

base.deploy(settings, fleet)
checks.deploy(settings)
if settings.has("postgres"):
    postgres.deploy(settings, secrets)
if settings.has("vllm"):
    vllm.deploy(settings, fleet, secrets)
if settings.has("litellm"):
    litellm.deploy(settings, fleet, secrets)
if settings.has("openwebui"):
    openwebui.deploy(settings, fleet, secrets)
