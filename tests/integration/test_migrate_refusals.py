"""Bad requests to kvm.migration.migrate: each fails with an error that names the problem, and neither
host changes.  One running guest on hv-a serves every case."""

from __future__ import annotations

import pytest
from helpers import host_snapshot
from kvmlab.guestops import LabGuest

# Every test here runs against two ready lab hypervisors.
pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
NOOS_XML = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><memballoon model='none'/></devices></domain>"""


@pytest.fixture(scope="module")
def running_guest(lab):
    g = LabGuest(lab, name="refusevm")
    g.remove_everywhere()
    g.start_and_wait(SRC, ticks=1)
    yield g
    g.remove_everywhere()


def migrate(ansible, name, dest_uri, **extra):
    run = ansible.module(SRC, "kvm.migration.migrate", {"name": name, "dest_uri": dest_uri, **extra})
    return run.task("probe")


def assert_refused_without_change(lab, ansible, name, dest_uri, expected, **extra):
    """The migration is refused by its preflight, the message names the problem, and neither host changed."""
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
    result = migrate(ansible, name, dest_uri, **extra)
    assert result.get("failed") is True, result
    assert result["msg"].startswith("Preflight found 1 blocker for migrating"), result["msg"]
    for part in expected:
        assert part in result["msg"], result["msg"]
    assert result["preflight"]["verdict"] == "fail"
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    return result


def check(result, name):
    return next(c for c in result["preflight"]["checks"] if c["name"] == name)


def test_unknown_domain(lab, ansible, running_guest):
    assert_refused_without_change(lab, ansible, "no-such-vm", f"qemu+ssh://{DST}/system",
                                  ["Domain no-such-vm does not exist", "source", "destination"])


def test_unreachable_destination(lab, ansible, running_guest):
    result = assert_refused_without_change(lab, ansible, running_guest.name, "qemu+ssh://10.88.0.99/system",
                                           ["Failed to connect to the destination qemu+ssh://10.88.0.99/system"])
    assert "hint" in result
    assert running_guest.state(SRC) == "running"


def test_unresolvable_destination(lab, ansible, running_guest):
    assert_refused_without_change(lab, ansible, running_guest.name, "qemu+ssh://no-such-host.invalid/system",
                                  ["Failed to connect to the destination", "no-such-host.invalid"])


def test_destination_is_the_source_host(lab, ansible, running_guest):
    result = assert_refused_without_change(lab, ansible, running_guest.name, f"qemu+ssh://{SRC}/system",
                                           ["is the same host as the source", "host UUID"])
    assert check(result, "host_uuid")["details"]["host_uuid"]


def test_name_already_defined_on_destination(lab, ansible, running_guest):
    lab.exec(DST, ["sh", "-c", f"cat > /root/{running_guest.name}.xml"], input=NOOS_XML.format(name=running_guest.name))
    lab.exec(DST, ["virsh", "-q", "define", f"/root/{running_guest.name}.xml"])
    try:
        assert_refused_without_change(lab, ansible, running_guest.name, f"qemu+ssh://{DST}/system",
                                      [f"A domain named {running_guest.name} is already defined on the destination"])
    finally:
        lab.exec(DST, ["virsh", "-q", "undefine", running_guest.name])


def test_disk_path_taken_on_destination(lab, ansible, running_guest):
    lab.exec(DST, f"echo precious > {running_guest.disk_path}")
    try:
        result = assert_refused_without_change(lab, ansible, running_guest.name, f"qemu+ssh://{DST}/system",
                                               ["already has files at", running_guest.disk_path,
                                                "refusing to overwrite"])
        assert check(result, "storage")["details"]["conflicting_paths"] == [running_guest.disk_path]
        assert lab.exec(DST, ["cat", running_guest.disk_path]).stdout == "precious\n"
    finally:
        lab.exec(DST, ["rm", "-f", running_guest.disk_path])


def test_shut_off_domain_cannot_migrate_live(lab, ansible, running_guest):
    off = LabGuest(lab, name="offvm")
    off.remove_everywhere()
    off.define(SRC, start=False)
    try:
        assert_refused_without_change(lab, ansible, off.name, f"qemu+ssh://{DST}/system",
                                      ["Domain offvm is shutoff on the source", "live migration needs a running domain"])
    finally:
        off.remove_everywhere()


def test_check_mode_of_a_bad_request_fails_too(lab, ansible, running_guest):
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
    run = ansible.module(SRC, "kvm.migration.migrate",
                         {"name": running_guest.name, "dest_uri": f"qemu+ssh://{SRC}/system"}, check=True)
    assert run.task("probe")["failed"] is True
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before


DEST = f"qemu+ssh://{DST}/system"
# A battery of hostile inputs written after the review's examples (issue 14), one per module and option kind:
# each must fail naming the option and its value, and change nothing on either host.
HOSTILE_INPUTS = [
    ("migrate", {"name": "refusevm", "dest_uri": DEST, "completion_timeout": 10 ** 12}, "completion_timeout=1000000000000"),
    ("migrate", {"name": "refusevm", "dest_uri": DEST, "downtime_schedule": [100, 99999999]}, "downtime_schedule[1]=99999999"),
    ("migrate", {"name": "refusevm", "dest_uri": DEST, "poll_interval": 0}, "poll_interval=0"),
    ("migrate", {"name": "refusevm", "dest_uri": DEST, "migrate_uri": "tcp://hv-b:99999"}, "port outside 1-65535"),
    ("migrate", {"name": "refusevm", "dest_uri": DEST, "disks_uri": "http://hv-b/"}, "disks_uri='http://hv-b/'"),
    ("migrate", {"name": "refusevm", "dest_uri": DEST + "\nx"}, "contains spaces or newlines"),
    ("migrate", {"name": "refusevm", "dest_uri": DEST, "compression": "zstd"}, "parallel_connections is 0"),
    ("dirtyrate", {"name": "refusevm", "dest_uri": DEST, "measure_mib": 10 ** 9}, "measure_mib=1000000000"),
    ("storage_pool", {"name": "p1", "target": "/srv/../etc"}, "target='/srv/../etc'"),
    ("storage_pool", {"name": "../p1", "target": "/srv/p1"}, "name='../p1'"),
    ("storage_pool", {"name": "p1", "target": "/srv/p1", "volumes": [{"name": "v1", "capacity": -1}]},
     "volumes[].capacity=-1"),
    ("nfs_share", {"name": "s1", "path": "/srv/s1", "clients": [{"host": "10.0.0.0/24", "options": ["rw)\n/etc *(rw"]}]},
     "is not an export option"),
    ("nfs_share", {"name": "s1", "path": "/srv/s1", "clients": [{"host": "10.0.0.0/24 evil(rw)"}]}, "is not a hostname"),
    ("cpu_baseline", {"hosts": ["qemu:///system", "not a uri"]}, "hosts[1]='not a uri'"),
    ("migration_info", {"name": "a\nb"}, "name='a\\nb'"),
]


@pytest.mark.parametrize("module,args,named", HOSTILE_INPUTS, ids=[f"{m}-{i}" for i, (m, _a, _n) in enumerate(HOSTILE_INPUTS)])
def test_hostile_input_is_refused_by_name_and_changes_nothing(lab, ansible, running_guest, module, args, named):
    watched = "; ls -A /srv /etc/exports.d 2>/dev/null"
    before = {h: host_snapshot(lab, h) + lab.exec(h, watched, check=False).stdout for h in (SRC, DST)}
    result = ansible.module(SRC, f"kvm.migration.{module}", args).task("probe")
    assert result.get("failed") is True, result
    assert named in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"] and "NoneType" not in result["msg"]
    assert {h: host_snapshot(lab, h) + lab.exec(h, watched, check=False).stdout for h in (SRC, DST)} == before
