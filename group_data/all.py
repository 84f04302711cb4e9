# Settings for every Spark in the inventory. Every key, with its default and a one-line
# description, is in defaults.yaml; only set what you want to change. For example:
#
# _sudo = True                       # when ssh_user is not root (needs passwordless sudo)
# cloud_api_key = "sk-or-..."        # or export OPENROUTER_API_KEY on the controller
# litellm_bind_address = "0.0.0.0"   # serve LiteLLM to the LAN
# extra_ca_certificates = ["certs/corp-root.crt"]
# https_proxy = "http://proxy.corp.lan:3128"
