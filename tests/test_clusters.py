"""A model that spans Sparks: the inventory's refusals, before any host is touched."""

import pytest

from sparkstack.settings import SettingsError, validate_inventory

BIG = {"name": "big", "model": "org/big", "port": 8010, "gpu_memory_utilization": 0.8,
       "cluster": {"hosts": ["spark1", "spark2"], "tensor_parallel_size": 2}}


def inventory(big=BIG, spark1=None, spark2=None):
    link = {"roles": ["vllm"], "models": []}
    return {"spark1": {"models": [big], "profiles": {"big": {"local": ["big"]}},
                       "litellm_model_aliases": {}, "link_interface": "enp1s0f0np0",
                       "link_address": "192.168.100.1", **(spark1 or {})},
            "spark2": {**link, "link_interface": "enp1s0f0np0",
                       "link_address": "192.168.100.2", **(spark2 or {})}}


def refused(datas) -> str:
    with pytest.raises(SettingsError) as err:
        validate_inventory(datas)
    return str(err.value)


def test_a_two_spark_cluster_with_its_link_is_accepted():
    hosts = validate_inventory(inventory())
    assert hosts[0].models[0]["cluster"]["hosts"] == ["spark1", "spark2"]


def test_a_host_not_in_the_inventory_is_refused():
    big = {**BIG, "cluster": {"hosts": ["spark1", "spark3"], "tensor_parallel_size": 2}}
    assert "spark3 not in the inventory" in refused(inventory(big))


def test_parallel_sizes_must_use_one_gpu_per_spark():
    big = {**BIG, "cluster": {"hosts": ["spark1", "spark2"], "tensor_parallel_size": 2,
                              "pipeline_parallel_size": 2}}
    assert "= 4, but it spans 2 Sparks" in refused(inventory(big))


def test_a_link_given_on_one_host_only_is_refused():
    message = refused(inventory(spark2={"link_interface": "", "link_address": ""}))
    assert "spark2 has no link_interface or link_address" in message


def test_two_clusters_claiming_one_host_are_refused():
    other = {**BIG, "name": "other", "port": 8011,
             "cluster": {"hosts": ["spark2", "spark1"], "tensor_parallel_size": 2}}
    datas = inventory(spark2={"models": [other]})
    assert "already given to the cluster of big on spark1" in refused(datas)


def test_the_shape_is_checked_with_the_other_model_settings():
    big = {**BIG, "cluster": {"hosts": ["spark1"], "tensor_parallel_size": 1}}
    assert "two or more different inventory host names" in refused(inventory(big))
    assert "link_interface = 'en p1'" in refused(inventory(spark1={"link_interface": "en p1"}))


def test_each_node_gets_its_rank_the_leaders_address_and_its_link():
    from sparkstack.services.vllm.cluster import link_environment, node_args, parts_on
    hosts = validate_inventory(inventory())
    (model, rank, leader), = parts_on("spark2", hosts)
    assert (model["name"], rank, leader) == ("big", 1, "192.168.100.1")
    assert node_args(model, rank, leader) == [
        "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1", "--nnodes", "2",
        "--node-rank", "1", "--master-addr", "192.168.100.1", "--master-port", "29500",
        "--headless"]
    assert "--headless" not in node_args(*parts_on("spark1", hosts)[0])
    assert link_environment(hosts[1]) == {
        "NCCL_SOCKET_IFNAME": "enp1s0f0np0", "GLOO_SOCKET_IFNAME": "enp1s0f0np0",
        "TP_SOCKET_IFNAME": "enp1s0f0np0", "UCX_NET_DEVICES": "enp1s0f0np0",
        "VLLM_HOST_IP": "192.168.100.2"}
