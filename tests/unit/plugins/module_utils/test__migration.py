"""The migration engine's decisions, against libvirt's test driver.

The test driver has no host UUID, so each client's host_uuid() is patched: that is the one thing
two test-driver "hosts" in one process cannot have.  Real migrations are in tests/integration."""

from __future__ import annotations

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, LibvirtClient
from ansible_collections.kvm.migration.plugins.module_utils._migration import (
    Migration,
    MigrationRequest,
    summarize,
)


@pytest.fixture
def hosts(test_uri, tmp_path, monkeypatch):
    dest_node = tmp_path / "dest.xml"
    dest_node.write_text("<node/>")
    source = LibvirtClient(test_uri, role="source").open()
    dest = LibvirtClient(f"test://{dest_node}", role="destination").open()
    monkeypatch.setattr(source, "host_uuid", lambda: "aaaaaaaa-0000-4000-8000-000000000001")
    monkeypatch.setattr(dest, "host_uuid", lambda: "aaaaaaaa-0000-4000-8000-000000000002")
    yield source, dest
    source.close()
    dest.close()


def migration(hosts, **kw):
    source, dest = hosts
    return Migration(source, dest, MigrationRequest(name=kw.pop("name", "vm1"), dest_uri=dest.uri, **kw))


def test_a_running_domain_is_planned_for_migration(hosts, tmp_path):
    m = migration(hosts, bandwidth=100)
    a = m.assess()
    assert a.action == "migrate"
    plan = m.plan(a)
    assert plan.flag_names == ["live", "peer2peer", "abort_on_error", "persist_dest", "non_shared_disk"]
    # Only the writable local disk is copied, with its exact virtual size; the read-only ISO is not.
    assert [(v.path, v.format) for v in plan.volumes] == [(str(tmp_path / "images" / "vm1.qcow2"), "qcow2")]
    assert plan.params["migrate_disks"] == ["vda"]
    assert plan.params["bandwidth"] == 100
    # 800 s per GiB of RAM (256 MiB) plus the disk's virtual size (the test driver reports 1 TiB).
    assert plan.timeout == int(800 * (256 * 2 ** 20 + plan.volumes[0].capacity) / 2 ** 30)


def test_check_mode_plans_and_changes_nothing(hosts):
    source, dest = hosts
    result = migration(hosts).execute(check_mode=True)
    assert result["changed"] is True and result["operation"] == "migrate"
    assert result["state"]["source"]["state"] == "running"
    assert result["state"]["destination"]["state"] == "absent"
    assert [p.name() for p in dest.list_pools()] == []  # the transient pool is gone again
    assert dest.lookup_domain("vm1") is None


def test_same_host_uuid_is_refused(hosts, monkeypatch):
    source, dest = hosts
    monkeypatch.setattr(dest, "host_uuid", source.host_uuid)
    with pytest.raises(InvalidRequest, match="is the same host as the source"):
        migration(hosts).assess()


def test_unknown_domain_is_refused(hosts):
    with pytest.raises(InvalidRequest, match="Domain nope does not exist on the source .* nor on the destination"):
        migration(hosts, name="nope").assess()


def test_unsupported_storage_mode_is_refused(hosts):
    with pytest.raises(InvalidRequest, match="Unsupported storage mode 'magic'"):
        migration(hosts, storage="magic").assess()


def test_shut_off_domain_is_refused(hosts):
    source, _dest = hosts
    source.lookup_domain("vm1").destroy()
    with pytest.raises(InvalidRequest, match="vm1 is shutoff on the source; a live migration needs a running domain"):
        migration(hosts).assess()


def test_name_taken_on_destination_is_refused(hosts):
    _source, dest = hosts
    dest.conn.defineXML("<domain type='test'><name>vm1</name><memory>1024</memory>"
                        "<os><type>hvm</type></os></domain>")
    with pytest.raises(InvalidRequest, match="A domain named vm1 is already defined on the destination"):
        migration(hosts).assess()


def test_domain_running_on_both_hosts_is_refused(hosts):
    _source, dest = hosts
    dest.conn.createXML("<domain type='test'><name>vm1</name><memory>1024</memory>"
                        "<os><type>hvm</type></os></domain>", 0)
    with pytest.raises(InvalidRequest, match="active on both hosts"):
        migration(hosts).assess()


def test_already_on_destination_is_a_no_op(hosts):
    source, dest = hosts
    xml = source.lookup_domain("vm1").XMLDesc(0)
    source.lookup_domain("vm1").destroy()
    source.lookup_domain("vm1").undefine()
    dest.conn.defineXML(xml)
    dest.lookup_domain("vm1").create()
    result = migration(hosts).execute()
    assert (result["changed"], result["operation"]) == (False, "none")
    assert result["state"]["destination"]["state"] == "running"


def test_stale_source_definition_is_removed_when_the_domain_runs_on_destination(hosts):
    source, dest = hosts
    xml = source.lookup_domain("vm1").XMLDesc(0)
    source.lookup_domain("vm1").destroy()
    dest.conn.defineXML(xml)
    dest.lookup_domain("vm1").create()
    assert migration(hosts).execute(check_mode=True)["changed"] is True
    assert source.lookup_domain("vm1") is not None
    result = migration(hosts).execute()
    assert (result["changed"], result["operation"]) == (True, "undefine_source")
    assert source.lookup_domain("vm1") is None
    assert migration(hosts).execute()["changed"] is False


def test_files_at_the_disk_path_on_destination_are_never_overwritten(hosts, tmp_path):
    _source, dest = hosts
    dest.conn.storagePoolCreateXML(
        "<pool type='dir'><name>d</name><target><path>%s</path></target></pool>" % (tmp_path / "images"), 0
    ).createXML("<volume><name>vm1.qcow2</name><capacity>1</capacity></volume>", 0)
    m = migration(hosts)
    with pytest.raises(InvalidRequest, match="already has files at .*vm1.qcow2; refusing to overwrite") as err:
        m.plan(m.assess())
    assert err.value.details["conflicting_paths"] == [str(tmp_path / "images" / "vm1.qcow2")]


def test_summary_picks_the_operator_figures():
    s = summarize({"time_elapsed": 1843, "downtime": 61, "data_processed": 5, "memory_iteration": 3}, 2.345)
    assert s["wall_time_s"] == 2.35 and s["downtime_ms"] == 61 and s["iterations"] == 3
    assert s["disk_processed_bytes"] is None
