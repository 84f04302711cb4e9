# Your DGX Sparks. One entry per Spark: "address" or ("address", {settings for it}).
# Settings shared by every Spark go in group_data/all.py; every setting, with its
# default, is documented in defaults.yaml.
#
# With no Spark listed here, `sparkstack deploy` boots a local simulated Spark instead.

sparks = [
    # ("spark-1.lan", {"ssh_user": "ops"}),
    # A second Spark that only serves models to spark-1's LiteLLM:
    # ("spark-2.lan", {"ssh_user": "ops", "roles": ["vllm"], "models": [
    #     {"name": "qwen3-4b", "model": "Qwen/Qwen3-4B-Instruct-2507", "port": 8000,
    #      "gpu_memory_utilization": 0.15}]}),
]
