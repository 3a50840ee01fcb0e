"""The hypervisor_prep role on bare hosts (systemd, sshd and python3 only): check mode, a first run that does
the real work (packages through the lab's apt proxy, libvirt, firewalld, SSH trust, host UUIDs), a second run
that changes nothing, then real live migrations over ssh, tcp (SASL) and tls between the prepared hosts,
and a firewall that closes the migration ports named as the cause."""

from __future__ import annotations

import pytest

from helpers import ROOT
from kvmlab.guestops import LabGuest, install_guest

# Every test here runs against two bare lab hosts.
pytestmark = pytest.mark.usefixtures("bare_lab")

SRC, DST = "hv-a", "hv-b"
PREPARE = ROOT / "playbooks" / "prepare_hosts.yml"
MIGRATE = ROOT / "playbooks" / "migrate.yml"
SASL = {"hypervisor_prep_sasl_password": "lab-only-secret-1"}


def prepare(ansible, check=False, **extra):
    return ansible.playbook(PREPARE, {"hypervisor_prep_firewall_install": True, **extra}, check=check, timeout=900)


def installed(lab, host, package):
    return lab.exec(host, ["dpkg-query", "-W", "-f", "${Status}", package], check=False).stdout == "install ok installed"


def migrate(ansible, vm, source, destination, transport):
    run = ansible.playbook(MIGRATE, {"live_migration_vm": vm, "live_migration_source": source,
                                     "live_migration_destination": destination,
                                     "live_migration_transport": transport,
                                     # Hosts hop back and forth: free the path for the return trip.
                                     "live_migration_source_cleanup": True})
    assert not run.failed, run.stdout[-3000:]
    return run.task("Migrate the VM")


def test_prepare_bare_hosts_then_migrate_over_every_transport(bare_lab, ansible):
    lab = bare_lab
    assert not installed(lab, SRC, "libvirt-daemon-system")

    # Check mode on fresh hosts: predicts the work, changes nothing.
    run = prepare(ansible, check=True)
    assert not run.failed, run.stdout[-3000:]
    assert run.changed > 0
    assert not installed(lab, SRC, "libvirt-daemon-system")

    # First run does the work; the second changes nothing.
    run = prepare(ansible)
    assert not run.failed, run.stdout[-4000:]
    assert run.changed > 0
    for host in (SRC, DST):
        assert installed(lab, host, "libvirt-daemon-system") and installed(lab, host, "python3-libvirt")
        assert lab.exec(host, ["firewall-cmd", "--query-port=49152-49215/tcp"]).stdout.strip() == "yes"
        assert lab.exec(host, ["firewall-cmd", "--query-port=22/tcp"]).stdout.strip() == "yes"
        # Only what ssh needs: the tcp and tls listener ports stay closed.
        assert lab.exec(host, ["firewall-cmd", "--query-port=16509/tcp"], check=False).stdout.strip() == "no"
        assert 'host_uuid = "' in lab.exec(host, ["cat", "/etc/libvirt/libvirtd.conf"]).stdout
    uuids = {lab.exec(h, "virsh capabilities | grep -m1 '<uuid>'").stdout.strip() for h in (SRC, DST)}
    assert len(uuids) == 2
    known = lab.exec(SRC, ["cat", "/root/.ssh/known_hosts"]).stdout
    assert known.startswith("hv-b ssh-ed25519 ") and "10.88.0.12 ssh-ed25519 " in known
    # Host keys are pinned; strict checking stays on (never StrictHostKeyChecking=no).
    effective = lab.exec(SRC, ["ssh", "-G", "hv-b"]).stdout
    assert "stricthostkeychecking false" not in effective and "stricthostkeychecking no" not in effective
    run = prepare(ansible)
    assert not run.failed and run.changed == 0, [t["task"]["name"] for t in run.tasks
                                                 if any(h.get("changed") for h in t["hosts"].values())]

    # A real live migration over ssh between the freshly prepared hosts.
    install_guest(lab)
    vm = LabGuest(lab, name="prepvm", dirty_mb=16, dirty_rate=4)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=2)
    moved = migrate(ansible, vm.name, SRC, DST, "ssh")
    assert moved["changed"] and "tls" not in moved["flags"]
    vm.wait_ticks(DST, 2, after=max(n for n, _b in vm.ticks(SRC)))

    # tcp with SASL: prepare (changes), prepare again (no change), migrate back over qemu+tcp.
    run = prepare(ansible, hypervisor_prep_transport="tcp", **SASL)
    assert not run.failed and run.changed > 0, run.stdout[-4000:]
    assert prepare(ansible, hypervisor_prep_transport="tcp", **SASL).changed == 0
    assert lab.exec(DST, ["firewall-cmd", "--query-port=16509/tcp"]).stdout.strip() == "yes"
    assert "mech_list: digest-md5" in lab.exec(DST, ["cat", "/etc/sasl2/libvirt.conf"]).stdout
    # Without credentials the listener refuses: it really authenticates.
    anonymous = lab.exec(SRC, "LIBVIRT_AUTH_FILE=/dev/null virsh -c qemu+tcp://hv-b/system hostname </dev/null",
                         check=False)
    assert anonymous.returncode != 0
    back = migrate(ansible, vm.name, DST, SRC, "tcp")
    assert back["changed"]
    vm.wait_ticks(SRC, 2, after=max(n for n, _b in vm.ticks(DST)))

    # tls: a CA and certificates, the TLS listener, and a migration whose streams are encrypted.
    run = prepare(ansible, hypervisor_prep_transport="tls")
    assert not run.failed and run.changed > 0, run.stdout[-4000:]
    assert prepare(ansible, hypervisor_prep_transport="tls").changed == 0
    for path in ("/etc/pki/CA/cacert.pem", "/etc/pki/libvirt/servercert.pem", "/etc/pki/qemu/server-key.pem"):
        assert lab.exec(DST, ["test", "-s", path], check=False).returncode == 0, path
    tls = migrate(ansible, vm.name, SRC, DST, "tls")
    assert tls["changed"] and "tls" in tls["flags"]
    vm.wait_ticks(DST, 2, after=max(n for n, _b in vm.ticks(SRC)))
    proof = vm.proof([SRC, DST])
    assert proof["problems"] == [], proof
    assert len(proof["boot_ids"]) == 1

    # Negative: the destination's firewall closes the migration range; the preflight names that cause.
    lab.exec(SRC, ["firewall-cmd", "-q", "--remove-port=49152-49215/tcp"])
    try:
        run = ansible.module(DST, "kvm.migration.migrate", {"name": vm.name, "dest_uri": "qemu+ssh://hv-a/system"})
        refused = run.task("probe")
        assert refused["failed"] and "network" in refused["preflight"]["blockers"], refused["msg"]
        assert "port 49152 on hv-a" in refused["msg"] and "not reachable" in refused["msg"]
        assert vm.state(DST) == "running" and vm.state(SRC) == "absent"
    finally:
        lab.exec(SRC, ["firewall-cmd", "-q", "--add-port=49152-49215/tcp"])
    vm.remove_everywhere()
