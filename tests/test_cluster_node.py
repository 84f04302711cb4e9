"""A cluster node's launcher: it reads who is connected from /proc/net/tcp and stops its
vLLM once the cluster has lost a member (systemd then starts it again)."""

import sys

from sparkstack_host import cluster_node

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def row(local: str, local_port: int, remote: str, remote_port: int, state: str = "01") -> str:
    return (f"   0: {cluster_node.hex_address(local, local_port)} "
            f"{cluster_node.hex_address(remote, remote_port)} {state} 00000000:00000000 "
            "00:00000000 00000000   998        0 1 1 0000000000000000 20 4 30 10 -1\n")


def mapped(row_text: str) -> str:
    """The same row as /proc/net/tcp6 writes an IPv4-mapped connection."""
    fields = row_text.split()
    for i in (1, 2):
        address, port = fields[i].split(":")
        fields[i] = f"{cluster_node.MAPPED}{address}:{port}"
    return "   " + " ".join(fields) + "\n"


def test_connections_are_read_as_the_kernel_writes_them_in_both_families(tmp_path):
    assert cluster_node.hex_address("10.0.0.1", 29500) == "0100000A:733C"
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    tcp.write_text(HEADER + row("10.0.0.2", 40000, "10.0.0.1", 29500)
                   + row("10.0.0.2", 40001, "10.0.0.5", 29500, state="06"))  # TIME_WAIT
    tcp6.write_text(HEADER + mapped(row("10.0.0.2", 50000, "10.0.0.3", 41234)))
    tables = (str(tcp), str(tcp6))
    assert cluster_node.peers(tables) == {"10.0.0.1", "10.0.0.3"}
    # a node sees its leader; the leader sees which nodes it is connected with
    assert cluster_node.missing("10.0.0.1", [], tables) == []
    assert cluster_node.missing(None, ["10.0.0.3", "10.0.0.4"], tables) == ["10.0.0.4"]
    assert cluster_node.missing("10.0.0.5", [], tables) == ["the leader at 10.0.0.5"]


def test_the_cluster_breaks_only_after_it_was_whole_and_a_member_stayed_away():
    watch = cluster_node.Watch(gone_after=10)
    assert not watch.broken(False, now=0)      # forming: vLLM waits for the others
    assert not watch.broken(False, now=100)
    assert not watch.broken(True, now=101)     # whole
    assert not watch.broken(False, now=102)    # away, not yet for long
    assert not watch.broken(True, now=105)     # back: a blip
    assert not watch.broken(False, now=106)
    assert watch.broken(False, now=116)


def test_a_node_whose_leader_is_gone_stops_its_vllm_and_exits_non_zero(tmp_path, capsys):
    table = tmp_path / "tcp"
    table.write_text(HEADER + row("10.0.0.2", 40000, "10.0.0.1", 29500))
    marker = tmp_path / "child-ran"
    child = [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(marker)!r})"
                                   ".write_text('x'); time.sleep(60)"]
    import threading
    threading.Timer(0.5, lambda: table.write_text(HEADER)).start()   # the leader stops
    code = cluster_node.run("10.0.0.1", [], child, gone_after=0.5, poll=0.05,
                            tables=(str(table),))
    assert code == 1 and marker.exists()
    assert "the leader at 10.0.0.1 gone" in capsys.readouterr().err


def test_a_leader_that_lost_a_node_names_it_and_stops(tmp_path, capsys):
    table = tmp_path / "tcp"
    table.write_text(HEADER + row("10.0.0.1", 29500, "10.0.0.2", 41000))
    import threading
    threading.Timer(0.5, lambda: table.write_text(HEADER)).start()   # spark2 dies
    code = cluster_node.run(None, ["spark2=10.0.0.2"],
                            [sys.executable, "-c", "import time; time.sleep(60)"],
                            gone_after=0.5, poll=0.05, tables=(str(table),))
    assert code == 1
    assert "spark2 (10.0.0.2) gone" in capsys.readouterr().err


def test_a_node_whose_vllm_exits_by_itself_exits_as_it_did(tmp_path):
    code = cluster_node.run(None, ["10.0.0.3"], [sys.executable, "-c", "exit(3)"],
                            poll=0.05, tables=(str(tmp_path / "none"),))
    assert code == 3


def test_health_names_the_node_that_has_not_joined(tmp_path, monkeypatch):
    from sparkstack_host import health
    from sparkstack_host.contract import ManifestModel, ManifestPart
    table = tmp_path / "tcp"
    table.write_text(HEADER + row("10.0.0.1", 29500, "10.0.0.2", 41000))
    real = cluster_node.missing
    monkeypatch.setattr(health, "missing", lambda *a: real(*a, tables=(str(table),)))
    big = ManifestModel("big", "org/big", 8010, "127.0.0.1", 4096, 0.8,
                        cluster_nodes={"spark2": "10.0.0.2", "spark3": "10.0.0.3"},
                        master_port=29500)
    ok, detail, advice = health.check_cluster("spark1", big)
    assert not ok and detail == "spark1 leads; spark2 joined, spark3 MISSING"
    assert advice.startswith("on spark3: systemctl status sparkstack-cluster-big.service")
    part = ManifestPart("big", "spark1", "10.0.0.1", 29500, rank=1)
    assert health.check_part(part)[0] is False      # no connection with 10.0.0.1
    table.write_text(HEADER + row("10.0.0.2", 41000, "10.0.0.1", 45001))
    assert health.check_part(part) == (
        True, "node 1, joined to its leader spark1 (10.0.0.1:29500)", "")
