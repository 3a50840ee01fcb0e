from __future__ import annotations

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    ConnectionFailed,
    LibvirtClient,
    OperationFailed,
    libvirt_errors,
)


def test_lookups_return_none_for_absent_objects(test_uri):
    with LibvirtClient(test_uri) as client:
        assert client.lookup_domain("vm1").name() == "vm1"
        assert client.lookup_domain("missing") is None
        assert client.lookup_domain_by_uuid("11111111-2222-3333-4444-555555555555").name() == "vm1"
        assert client.lookup_domain_by_uuid("99999999-2222-3333-4444-555555555555") is None
        assert client.lookup_pool("images").name() == "images"
        assert client.lookup_pool("missing") is None
        assert [d.name() for d in client.list_domains()] == ["vm1"]


def test_versions_and_host_facts(test_uri):
    with LibvirtClient(test_uri) as client:
        versions = client.versions()
        assert versions["libvirt"].count(".") == 2
        assert client.hostname()
        assert client.free_memory() >= 0


def test_connection_failure_names_the_uri_and_role():
    client = LibvirtClient("test:///no/such/node.xml", role="destination")
    with pytest.raises(ConnectionFailed) as err:
        client.open()
    assert err.value.msg.startswith("Failed to connect to the destination test:///no/such/node.xml:")
    assert err.value.details["libvirt_error"].startswith("VIR_ERR_")


def test_libvirt_errors_translates_and_keeps_other_exceptions(test_uri):
    with LibvirtClient(test_uri) as client:
        dom = client.lookup_domain("vm1")
        with pytest.raises(OperationFailed) as err:
            with libvirt_errors("read the job of vm1"):
                dom.jobStats(0)  # the test driver does not implement it
        assert err.value.msg.startswith("Failed to read the job of vm1: ")
        assert err.value.details == {"libvirt_error": "VIR_ERR_NO_SUPPORT", "error_kind": "other"}
        # Not a connection problem: no connection hint.
        assert err.value.hint is None
        with pytest.raises(KeyError):
            with libvirt_errors("anything"):
                raise KeyError("not a libvirt error")


def test_twin_is_a_second_connection_to_the_same_host(test_uri):
    with LibvirtClient(test_uri, role="source") as client:
        twin = client.twin("source monitor")
        try:
            assert twin.conn is not client.conn
            assert twin.uri == client.uri and twin.role == "source monitor"
            assert twin.alive() and client.alive()
        finally:
            twin.close()
        assert not twin.alive()
        assert client.alive()


def test_connection_kind_errors_become_connection_failed(test_uri):
    with LibvirtClient(test_uri) as client:
        client.conn.close()
        with pytest.raises(ConnectionFailed) as err:
            with libvirt_errors("list the domains"):
                client.conn.listAllDomains(0)
        assert err.value.details["error_kind"] == "connection"
        assert err.value.hint
