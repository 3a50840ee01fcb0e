"""The oldest hypervisor the collection supports: Debian 12 (bookworm: libvirt 9.0, QEMU 7.2, python3-libvirt
9.0), starting from bare hosts.  hypervisor_prep makes them ready (a second run changes nothing); then the
modules, running under bookworm's own Python and libvirt binding, move a running guest live and, once it is
shut off, back offline."""

from __future__ import annotations

import time

import pytest
from helpers import ROOT
from kvmlab.guestops import LabGuest, install_guest

pytestmark = pytest.mark.usefixtures("bookworm_lab")

SRC, DST = "hv-a", "hv-b"
PREPARE = ROOT / "playbooks" / "prepare_hosts.yml"
MIGRATE = ROOT / "playbooks" / "migrate.yml"


def test_prepare_bookworm_hosts_then_migrate_live_and_offline(bookworm_lab, ansible):
    lab = bookworm_lab
    assert "bookworm" in lab.exec(SRC, ["cat", "/etc/os-release"]).stdout
    run = ansible.playbook(PREPARE, {"hypervisor_prep_firewall_install": True}, timeout=900)
    assert not run.failed, run.stdout[-4000:]
    assert run.changed > 0
    assert lab.exec(SRC, ["virsh", "version", "--daemon"]).stdout.count("9.0.0") >= 1
    run = ansible.playbook(PREPARE, {"hypervisor_prep_firewall_install": True}, timeout=900)
    assert not run.failed and run.changed == 0, [t["task"]["name"] for t in run.tasks
                                                 if any(h.get("changed") for h in t["hosts"].values())]

    install_guest(lab)
    vm = LabGuest(lab, name="bwvm", dirty_mb=16, dirty_rate=4)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=2)
    run = ansible.playbook(MIGRATE, {"live_migration_vm": vm.name, "live_migration_source": SRC,
                                     "live_migration_destination": DST, "live_migration_source_cleanup": True})
    # On failure, QEMU's own log on both hosts says whether it (not the collection) stopped the guest.
    assert not run.failed, run.stdout[-3000:] + "".join(
        lab.exec(h, f"tail -n 15 /var/log/libvirt/qemu/{vm.name}.log", check=False).stdout for h in (SRC, DST))
    assert run.task("Migrate the VM")["changed"] is True
    vm.wait_ticks(DST, 2, after=max(n for n, _b in vm.ticks(SRC)))
    proof = vm.proof([SRC, DST])
    assert proof["problems"] == [], proof

    # Shut off on B, it moves back offline; the bytes arrive unchanged.
    vm.control(DST, "sync")
    vm.control(DST, "poweroff")
    deadline = time.monotonic() + 30
    while vm.state(DST) != "shut off":
        assert time.monotonic() < deadline, vm.state(DST)
        time.sleep(0.5)
    digest = lab.exec(DST, ["sha256sum", vm.disk_path]).stdout.split()[0]
    run = ansible.playbook(MIGRATE, {"live_migration_vm": vm.name, "live_migration_source": DST,
                                     "live_migration_destination": SRC, "live_migration_live": False})
    assert not run.failed, run.stdout[-3000:]
    moved = run.task("Migrate the VM")
    assert moved["changed"] is True and moved["copied"][0]["sha256"] == digest
    assert vm.state(SRC) == "shut off" and vm.persistent(SRC) and vm.state(DST) == "absent"
    assert lab.exec(SRC, ["sha256sum", vm.disk_path]).stdout.split()[0] == digest
    vm.remove_everywhere()
