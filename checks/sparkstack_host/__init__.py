"""sparkstack's host package: everything that runs on a Spark (GPU probe, memory fit,
readiness probe, health, LiteLLM's readiness gate and launcher), installed by the
deploy as a wheel. `contract` is what the controller and the host agree on."""
