"""A bind address must be one the host can listen on, known before anything changes."""

from sparkstack_host import host_state

from sparkstack.host_facts import Snapshot


def snap(addresses):
    return Snapshot({"files": {}, "units": {}, "users": {}, "packages": [], "contents": {},
                     "postgres": None, "distribution": {}, "addresses": addresses}, [])


def test_own_loopback_and_any_addresses_can_be_bound():
    s = snap(["127.0.0.1", "10.77.0.11", "::1", "fe80::1"])
    for address in ("10.77.0.11", "127.0.0.1", "127.0.0.2", "0.0.0.0", "::", "::1"):
        assert s.can_bind(address), address


def test_an_address_of_another_machine_cannot():
    s = snap(["127.0.0.1", "10.77.0.11"])
    assert not s.can_bind("10.77.0.12")
    assert not s.can_bind("192.168.1.20")


def test_the_snapshot_lists_this_machines_addresses():
    found = host_state.addresses()
    assert "127.0.0.1" in found
