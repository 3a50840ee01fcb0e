"""Preflight against real hosts: each check made to fail for real in the lab, with the report naming it,
`migrate` refusing with the same report, and neither host changed.  Conditions the lab cannot produce
(different host CPUs, other QEMU versions, passthrough devices) are covered by recorded XML in the unit
tests and in test_cpu_baseline.py."""

from __future__ import annotations

import pytest
from helpers import host_snapshot
from kvmlab.guestops import LabGuest

# Every test here runs against two ready lab hypervisors.
pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
DEST_URI = f"qemu+ssh://{DST}/system"


@pytest.fixture(scope="module")
def vm(lab):
    """A running guest on hv-a whose disk allocates a few MiB (for the space check)."""
    g = LabGuest(lab, name="pfvm", prefill_mib=4)
    g.remove_everywhere()
    g.start_and_wait(SRC, ticks=1)
    yield g
    g.remove_everywhere()


def preflight(ansible, name, dest_uri=DEST_URI, **extra):
    run = ansible.module(SRC, "kvm.migration.preflight",
                         {"name": name, "dest_uri": dest_uri, "fail_on_blockers": False, **extra})
    result = run.task("probe")
    assert not result.get("failed"), result
    assert result["changed"] is False
    return result


def by_name(report):
    return {c["name"]: c for c in report["checks"]}


def assert_blocked(lab, ansible, name, check, message_parts, dest_uri=DEST_URI, **extra):
    """The preflight reports `check` as failed; migrate refuses with that report; nothing changed."""
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
    report = preflight(ansible, name, dest_uri, **extra)
    assert report["verdict"] == "fail"
    assert check in report["blockers"], report["blockers"]
    found = by_name(report)[check]
    for part in message_parts:
        assert part in found["message"], found["message"]
    assert found.get("hint")
    run = ansible.module(SRC, "kvm.migration.migrate", {"name": name, "dest_uri": dest_uri, **extra})
    refused = run.task("probe")
    assert refused["failed"] is True
    assert refused["msg"].startswith("Preflight found"), refused["msg"]
    assert check in refused["preflight"]["blockers"]
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    return report


def test_a_healthy_pair_passes_every_check(lab, ansible, vm):
    report = preflight(ansible, vm.name)
    checks = by_name(report)
    assert report["verdict"] == "pass", report
    assert set(checks) == {"connection", "host_uuid", "domain", "name", "cpu", "memory", "machine", "devices",
                           "interfaces", "firmware", "cache", "storage", "network"}
    assert {c["status"] for c in checks.values()} == {"pass"}, report
    assert "libvirt" in report["hosts"]["destination"] and report["hosts"]["destination"]["hypervisor"]
    assert report["hosts"]["source"]["host_uuid"] != report["hosts"]["destination"]["host_uuid"]
    assert checks["storage"]["details"]["space"]["/var/lib/libvirt/images"]["needed_bytes"] >= 4 << 20
    assert "hv-b -> 10.88.0.12" in checks["network"]["message"]


def test_migration_ports_closed_by_the_destination_firewall(lab, ansible, vm):
    lab.exec(DST, ["firewall-cmd", "-q", "--remove-port=49152-49215/tcp"])
    try:
        assert_blocked(lab, ansible, vm.name, "network",
                       ["port 49152 on hv-b (10.88.0.12) is not reachable from the source", "firewall"])
    finally:
        lab.exec(DST, ["firewall-cmd", "-q", "--add-port=49152-49215/tcp"])
    assert preflight(ansible, vm.name)["verdict"] == "pass"


def test_disk_cache_writeback(lab, ansible):
    wb = LabGuest(lab, name="wbvm", disk_cache="writeback")
    wb.remove_everywhere()
    wb.start_and_wait(SRC, ticks=1)
    try:
        assert_blocked(lab, ansible, wb.name, "cache", ["unsafe for live migration: vda (cache=writeback)"])
        allowed = preflight(ansible, wb.name, allow_unsafe=True)
        assert by_name(allowed)["cache"]["status"] == "warn" and allowed["verdict"] == "pass"
    finally:
        wb.remove_everywhere()


def test_name_already_taken_on_the_destination(lab, ansible, vm):
    lab.exec(DST, ["sh", "-c", "cat > /root/taken.xml"], input=(
        f"<domain type='qemu'><name>{vm.name}</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"))
    lab.exec(DST, ["virsh", "-q", "define", "/root/taken.xml"])
    try:
        assert_blocked(lab, ansible, vm.name, "name", [f"A domain named {vm.name} is already defined on the destination"])
    finally:
        lab.exec(DST, ["virsh", "-q", "undefine", vm.name])


def test_the_same_uuid_under_another_name_on_the_destination(lab, ansible, vm):
    uuid = lab.exec(SRC, ["virsh", "domuuid", vm.name]).stdout.strip()
    lab.exec(DST, ["sh", "-c", "cat > /root/twin.xml"], input=(
        f"<domain type='qemu'><name>twin</name><uuid>{uuid}</uuid><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"))
    lab.exec(DST, ["virsh", "-q", "define", "/root/twin.xml"])
    try:
        assert_blocked(lab, ansible, vm.name, "name", [f"already has a domain with the UUID {uuid} of {vm.name}, "
                                                       "named twin"])
    finally:
        lab.exec(DST, ["virsh", "-q", "undefine", "twin"])


class GuestOnPrivateEmulator(LabGuest):
    """The test guest, run by an emulator path that exists on the source only (as /usr/libexec/qemu-kvm on a
    RHEL host, seen from a Debian one)."""

    EMULATOR = "/usr/local/bin/qemu-lab"

    def xml(self) -> str:
        return super().xml().replace("<devices>", f"<devices>\n    <emulator>{self.EMULATOR}</emulator>", 1)


def test_an_emulator_the_destination_lacks(lab, ansible):
    lab.exec(SRC, ["ln", "-sf", "/usr/bin/qemu-system-x86_64", GuestOnPrivateEmulator.EMULATOR])
    private = GuestOnPrivateEmulator(lab, name="emuvm")
    private.remove_everywhere()
    try:
        private.start_and_wait(SRC, ticks=1)
        assert_blocked(lab, ansible, private.name, "machine",
                       [f"the domain's emulator {private.EMULATOR} does not exist on the destination",
                        "/usr/bin/qemu-system-x86_64"])
    finally:
        private.remove_everywhere()
        lab.exec(SRC, ["rm", "-f", GuestOnPrivateEmulator.EMULATOR])


class GuestOnBridge(LabGuest):
    """The test guest with a NIC on a host bridge, or on a libvirt network (the guest itself needs no network)."""

    BRIDGE = "br-kvmtest"
    NETWORK = ""

    def xml(self) -> str:
        source = (f"<interface type='network'><source network='{self.NETWORK}'/>" if self.NETWORK else
                  f"<interface type='bridge'><source bridge='{self.BRIDGE}'/>")
        nic = f"{source}<mac address='52:54:00:4b:56:4d'/><model type='e1000'/></interface>"
        return super().xml().replace("</devices>", f"  {nic}\n  </devices>", 1)


ADD_BRIDGE = f"ip link add {GuestOnBridge.BRIDGE} type bridge && ip link set {GuestOnBridge.BRIDGE} up"
# A libvirt network over the host bridge: no dnsmasq, so it starts in the lab too.
NETWORK_XML = (f"<network><name>kvmtest</name><forward mode='bridge'/><bridge name='{GuestOnBridge.BRIDGE}'/>"
               "</network>")


def test_a_bridge_the_destination_lacks(lab, ansible):
    """Today's late failure (QEMU's tap error, after the disk copy began) is a preflight blocker, found through
    the destination libvirt's node devices (Debian ships no interface driver)."""
    lab.exec(SRC, ADD_BRIDGE)
    guest = GuestOnBridge(lab, name="brvm")
    guest.remove_everywhere()
    try:
        guest.start_and_wait(SRC, ticks=1)
        assert_blocked(lab, ansible, guest.name, "interfaces",
                       [f"host interface {GuestOnBridge.BRIDGE} (NIC 52:54:00:4b:56:4d) is missing"])
    finally:
        guest.remove_everywhere()
        lab.exec(SRC, f"ip link del {GuestOnBridge.BRIDGE}", check=False)


def test_a_libvirt_network_missing_then_inactive_then_up_on_the_destination(lab, ansible):
    """The same check for a libvirt network, through all three states.  (A bridge created after a lab host
    booted stays invisible to its libvirt, as a container has no udev, so the passing case is shown here.)"""
    guest = GuestOnBridge(lab, name="netvm")
    guest.NETWORK = "kvmtest"
    guest.remove_everywhere()
    define = f"cat > /root/kvmtest-net.xml <<'EOF'\n{NETWORK_XML}\nEOF\nvirsh -q net-define /root/kvmtest-net.xml"
    try:
        for host in (SRC, DST):
            lab.exec(host, ADD_BRIDGE)
        lab.exec(SRC, f"{define} && virsh -q net-start kvmtest")
        guest.start_and_wait(SRC, ticks=1)
        assert_blocked(lab, ansible, guest.name, "interfaces", ["network kvmtest (NIC 52:54:00:4b:56:4d) is missing"])
        lab.exec(DST, define)
        assert_blocked(lab, ansible, guest.name, "interfaces", ["network kvmtest", "is not active"])
        lab.exec(DST, "virsh -q net-start kvmtest")
        passed = by_name(preflight(ansible, guest.name))["interfaces"]
        assert passed["status"] == "pass" and "kvmtest" in passed["message"], passed
    finally:
        guest.remove_everywhere()
        for host in (SRC, DST):
            lab.exec(host, f"virsh -q net-destroy kvmtest; virsh -q net-undefine kvmtest; "
                           f"ip link del {GuestOnBridge.BRIDGE}", check=False)


def test_too_little_space_in_the_destination_directory(lab, ansible, vm):
    # A 1 MiB tmpfs over the destination's image directory; the guest's image allocates more than 4 MiB.
    lab.exec(DST, ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/var/lib/libvirt/images"])
    try:
        report = assert_blocked(lab, ansible, vm.name, "storage",
                                ["not enough space on the destination", "/var/lib/libvirt/images has 1 MiB free"])
        space = by_name(report)["storage"]["details"]["space"]["/var/lib/libvirt/images"]
        assert space["available_bytes"] < space["needed_bytes"]
    finally:
        lab.exec(DST, ["umount", "/var/lib/libvirt/images"])


def test_destination_name_that_does_not_resolve_on_the_source(lab, ansible, vm):
    hosts = lab.exec(SRC, ["cat", "/etc/hosts"]).stdout
    # Write in place: the file is the host's own, and sed -i would replace its inode.
    lab.exec(SRC, ["sh", "-c", "cat > /etc/hosts"], input="".join(l + "\n" for l in hosts.splitlines() if "hv-b" not in l))
    try:
        by_address = "qemu+ssh://10.88.0.12/system"
        assert_blocked(lab, ansible, vm.name, "network", ["the destination hostname hv-b does not resolve on the source"],
                       dest_uri=by_address)
        # An explicit data-path address is the fix the hint offers.
        fixed = preflight(ansible, vm.name, by_address, migrate_uri="tcp://10.88.0.12", disks_uri="tcp://10.88.0.12")
        assert fixed["verdict"] == "pass", fixed
    finally:
        lab.exec(SRC, ["sh", "-c", "cat > /etc/hosts"], input=hosts)


def test_duplicate_host_uuids(lab, ansible, vm):
    conf = "/etc/libvirt/libvirtd.conf"
    original = lab.exec(DST, ["cat", conf]).stdout
    src_uuid = lab.exec(SRC, "virsh capabilities | sed -n 's:.*<uuid>\\(.*\\)</uuid>.*:\\1:p' | head -1").stdout.strip()
    cloned = "".join(l + "\n" for l in original.splitlines() if not l.startswith("host_uuid")) + f'host_uuid = "{src_uuid}"\n'
    lab.exec(DST, ["sh", "-c", f"cat > {conf} && systemctl restart libvirtd"], input=cloned)
    try:
        assert_blocked(lab, ansible, vm.name, "host_uuid", ["is the same host as the source", src_uuid])
    finally:
        lab.exec(DST, ["sh", "-c", f"cat > {conf} && systemctl restart libvirtd"], input=original)
    assert preflight(ansible, vm.name)["verdict"] == "pass"


def test_not_enough_free_memory_on_the_destination(lab, ansible, vm):
    # The lab's hosts share this machine's memory; a margin larger than it makes the shortage real.
    assert_blocked(lab, ansible, vm.name, "memory", ["free on the destination; the domain needs 192 MiB"],
                   memory_margin=10 ** 6)  # 976 GiB: within the option's bound (1 TiB)


def test_preflight_playbook_reports_and_fails_on_blockers(lab, ansible, vm):
    from helpers import ROOT

    playbook = ROOT / "playbooks" / "preflight.yml"
    extra = {"live_migration_vm": vm.name, "live_migration_source": SRC, "live_migration_destination": DST}
    run = ansible.playbook(playbook, extra)
    assert not run.failed, run.stdout[-3000:]
    report = run.task("Report the verdict and every check")["msg"]
    assert report[0] == "PASS - blockers: none" and any(line.startswith("pass | network |") for line in report)
    run = ansible.playbook(playbook, {**extra, "live_migration_destination": SRC})
    assert run.failed and "host_uuid block the migration" in run.task("Fail when there are blockers")["msg"]
