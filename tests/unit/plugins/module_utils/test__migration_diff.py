"""The --diff of migrate: placement before and after, and the destination's definition.  Plain functions on
fake domains (libvirt's test driver cannot migrate); tests/integration/test_migrate_diff.py shows it on real
hosts."""

from __future__ import annotations

from ansible_collections.kvm.migration.plugins.module_utils._migration_diff import (
    definition_text,
    migration_diff,
    predicted_state,
)
from ansible_collections.kvm.migration.plugins.module_utils._plan import MigrationRequest

SRC, DST = "qemu:///system", "qemu+ssh://hv2/system"


class Domain:
    def __init__(self, xml, fail=False):
        self.xml, self.fail = xml, fail

    def XMLDesc(self, _flags):
        if self.fail:
            raise RuntimeError("Cannot recv data: Connection reset by peer")
        return self.xml


def found(src_state, src_active, src_persistent, dst_state="absent", dst_active=False, dst_persistent=False):
    return {"source": {"state": src_state, "active": src_active, "persistent": src_persistent, "uri": SRC},
            "destination": {"state": dst_state, "active": dst_active, "persistent": dst_persistent, "uri": DST}}


def request(**options):
    return MigrationRequest(name="web01", dest_uri=DST, **options)


def test_a_live_migration_is_predicted_to_run_defined_on_the_destination_and_leave_the_source():
    after = predicted_state(request(), found("running", True, True))
    assert after["destination"] == {"state": "running", "active": True, "persistent": True, "uri": DST}
    assert after["source"]["state"] == "absent" and not after["source"]["persistent"]


def test_keeping_the_source_definition_leaves_it_shut_off_there():
    after = predicted_state(request(undefine_source=False), found("running", True, True))
    assert after["source"] == {"state": "shut off", "active": False, "persistent": True, "uri": SRC}


def test_an_offline_move_is_predicted_defined_and_shut_off_on_the_destination():
    after = predicted_state(request(live=False), found("shut off", False, True))
    assert after["destination"]["state"] == "shut off" and after["destination"]["persistent"]
    assert after["source"]["state"] == "absent"


def test_the_diff_text_names_both_hosts_and_the_definitions():
    before = found("running", True, True)
    diff = migration_diff(request(), before, predicted_state(request(), before), None, None, DST,
                          source_for_after=Domain("<domain><name>web01</name></domain>\n"))
    assert "source %s: running, defined" % SRC in diff["before"]
    assert "destination %s: absent" % DST in diff["before"]
    assert "# definition on %s\n(none)" % DST in diff["before"]
    assert "destination %s: running, defined" % DST in diff["after"]
    assert "source %s: absent" % SRC in diff["after"]
    assert "<name>web01</name>" in diff["after"] and "from the source" in diff["after"]


def test_a_definition_that_cannot_be_read_is_named_not_raised():
    text = definition_text(Domain("", fail=True), DST)
    assert "could not be read: Cannot recv data" in text
