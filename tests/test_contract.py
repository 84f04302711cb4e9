"""The contract between the controller and a Spark: environment files as systemd reads
them, the manifest and the routes plan through their file formats, paths from the
three roots."""

import json

import pytest
from sparkstack_host.contract import (
    Layout,
    Manifest,
    local_url,
    reach_address,
    read_env_file,
    write_env_file,
)

from sparkstack.fleet import Fleet
from sparkstack.services.base import manifest
from sparkstack.settings import validate_inventory

TRICKY = {
    "QUOTES": 'say "hi" and \'bye\'',
    "BACKSLASHES": "C:\\path\\to\\n\\\\share\\",
    "DOLLARS": "$HOME ${USER} $$ `id`",
    "PERCENT": "100% %h %n %%",
    "NON_ASCII": "Grüße, 東京, emoji 🚀",
    "EQUALS": "a=b=c",
    "EMPTY": "",
    "SPACES": "  leading and trailing  ",
    "HASH": "# not a comment",
}


def test_env_file_round_trip_keeps_every_value():
    text = write_env_file(TRICKY)
    assert read_env_file(text) == TRICKY
    assert len(text.splitlines()) == len(TRICKY) + 1  # a header, then one line each


@pytest.mark.parametrize("bad", ["two\nlines", "carriage\rreturn", "bell\x07", "del\x7f"])
def test_env_file_refuses_control_characters(bad):
    with pytest.raises(ValueError, match="KEY: a value in an environment file cannot"):
        write_env_file({"KEY": bad})


def test_manifest_round_trips_and_records_each_model_budget():
    host = validate_inventory({"s": {"install_root": "/srv/opt", "config_root": "/srv/etc",
                                     "state_root": "/srv/var"}})[0]
    m = manifest(host, Fleet([host]), ["litellm", "openwebui"])
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert again.layout == Layout("/srv/opt", "/srv/etc", "/srv/var")
    assert again.model("qwen3-coder-30b").gpu_memory_utilization == 0.45
    assert again.model("qwen3-4b").unit == "sparkstack-vllm-qwen3-4b.service"
    assert again.model("nope") is None


def test_a_manifest_of_another_schema_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="re-deploy this host"):
        Manifest.from_json('{"schema": 0}')


def test_every_path_follows_the_roots():
    layout = Layout("/a", "/b", "/c", runtime_dir="/r")
    assert layout.routes_plan == "/b/litellm/routes.json"
    assert layout.litellm_config == "/b/litellm/config.yaml"
    assert layout.manifest == "/b/manifest.json"
    assert layout.host_program("sparkstack-routes") == "/a/host/current/bin/sparkstack-routes"
    assert layout.venv_version("litellm", "abc") == "/a/litellm/venvs/abc"
    assert layout.secrets_env("vllm") == "/b/vllm/secrets.env"
    assert layout.cache_dir("vllm", "huggingface") == "/c/vllm/cache/huggingface"
    assert layout.drained_dir == "/r/drained"


@pytest.mark.parametrize("bind,url", [("0.0.0.0", "http://127.0.0.1:4000"),
                                      ("127.0.0.1", "http://127.0.0.1:4000"),
                                      ("10.0.0.5", "http://10.0.0.5:4000"),
                                      ("::", "http://[::1]:4000"),
                                      ("fd00::5", "http://[fd00::5]:4000")])
def test_services_are_reached_where_they_listen(bind, url):
    assert local_url(bind, 4000) == url
    assert reach_address(bind) in url


def test_a_backend_on_an_ipv6_address_is_reached_in_brackets():
    from sparkstack.fleet import Replica
    replica = Replica(host="spark-2", address="fd00::2", port=8000, served_name="m",
                      max_model_len=1024)
    assert replica.url == "http://[fd00::2]:8000"
    assert replica.api_base == "http://[fd00::2]:8000/v1"
    assert replica.id == "spark-2:8000"


def test_a_manifest_written_before_it_listed_databases_still_names_them():
    host = validate_inventory({"s": {}})[0]
    data = json.loads(manifest(host, Fleet([host]), ["litellm"]).to_json())
    del data["databases"]
    assert Manifest.from_json(json.dumps(data)).databases == ["litellm", "openwebui"]
