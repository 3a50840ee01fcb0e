"""Storage in every form, on real hosts with the running test guest: shared storage (a directory both hosts
mount at the same path, as NFS gives them; and a disk served over NBD), incremental copy onto templates
(absent, then present on the destination), and verified cleanup of the source images.  Every migration is
checked with the guest's own proof of life: the ticks continue from the same boot, every record is on disk."""

from __future__ import annotations

import pytest
from helpers import ROOT, host_snapshot
from kvmlab.guestops import LabGuest
from kvmlab.lab import SHARED_IN_HOST

pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
MIGRATE = ROOT / "playbooks" / "migrate.yml"


def migrate(ansible, vm, source, destination, **extra):
    """The migrate task's result, plus what verified cleanup removed (`removed`, None when it did not run)."""
    run = ansible.playbook(MIGRATE, {"live_migration_vm": vm.name, "live_migration_source": source,
                                     "live_migration_destination": destination, **extra})
    assert not run.failed, run.stdout[-4000:]
    result = dict(run.task("Migrate the VM"))
    cleanup = [t for t in run.tasks if "Remove the source images" in t["task"]["name"]]
    result["removed"] = next(iter(cleanup[-1]["hosts"].values())).get("source_disks_removed") if cleanup else None
    return result


def assert_alive_on(vm, host, previous):
    vm.wait_ticks(host, 2, after=max(n for n, _b in vm.ticks(previous)))
    proof = vm.proof([SRC, DST])
    assert proof["problems"] == [], proof
    assert len(proof["boot_ids"]) == 1


def test_shared_directory_migrates_without_copying(lab, ansible):
    vm = LabGuest(lab, name="sharedvm", disk_dir=SHARED_IN_HOST, dirty_mb=16, dirty_rate=4)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=2)
    try:
        # The same file, seen by both hosts.
        assert lab.exec(DST, ["test", "-e", vm.disk_path], check=False).returncode == 0
        moved = migrate(ansible, vm, SRC, DST, live_migration_storage="shared", live_migration_source_cleanup=True)
        assert moved["storage_plan"] == {"requested": "shared", "mode": "shared", "copied": [], "shared": ["vda"],
                                         "templates": []}
        assert "non_shared_disk" not in moved["flags"] and "unsafe" in moved["flags"]
        assert moved["volumes_created"] == []
        # Verified cleanup never touches a shared image: it is the destination's disk now.
        assert not moved["removed"]
        assert lab.exec(DST, ["test", "-e", vm.disk_path], check=False).returncode == 0
        assert_alive_on(vm, DST, SRC)
        # auto sees the shared directory too, and migrates back without copying.
        back = migrate(ansible, vm, DST, SRC)
        assert back["storage_plan"]["mode"] == "shared"
        assert_alive_on(vm, SRC, DST)
    finally:
        vm.remove_everywhere()


def test_shared_mode_refuses_local_disks(lab, ansible):
    vm = LabGuest(lab, name="localvm")
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=1)
    try:
        before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
        run = ansible.module(SRC, "kvm.migration.migrate", {"name": vm.name, "dest_uri": f"qemu+ssh://{DST}/system",
                                                            "storage": "shared"})
        refused = run.task("probe")
        assert refused["failed"] and refused["preflight"]["blockers"] == ["storage"]
        assert f"{vm.disk_path} is not on shared storage" in refused["msg"]
        assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    finally:
        vm.remove_everywhere()


def test_network_disk_served_over_nbd_is_shared(lab, ansible):
    vm = LabGuest(lab, name="nbdvm", nbd=lab.serve_nbd("nbdvm"))
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=2)
    try:
        moved = migrate(ansible, vm, SRC, DST)
        assert moved["storage_plan"]["mode"] == "shared" and moved["storage_plan"]["shared"] == ["vda"]
        # libvirt knows a network disk is shared: no copy, and no VIR_MIGRATE_UNSAFE needed.
        assert "unsafe" not in moved["flags"] and "non_shared_disk" not in moved["flags"]
        assert_alive_on(vm, DST, SRC)
    finally:
        vm.remove_everywhere()


def test_incremental_copy_onto_templates(lab, ansible):
    template = "/var/lib/libvirt/images/tbbase.qcow2"
    vm = LabGuest(lab, name="incvm", template=template)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=2)
    try:
        assert lab.exec(DST, ["test", "-e", template], check=False).returncode != 0
        # A -> B: the template is missing on B, so it is copied first and verified; only the overlay is migrated.
        moved = migrate(ansible, vm, SRC, DST, live_migration_storage="copy_incremental",
                        live_migration_source_cleanup=True)
        plan = moved["storage_plan"]
        assert plan["mode"] == "copy_incremental" and plan["copied"] == ["vda"]
        assert [(t["path"], t["action"]) for t in plan["templates"]] == [(template, "copy")]
        assert "non_shared_inc" in moved["flags"]
        copied = lab.exec(DST, ["sha256sum", template]).stdout.split()[0]
        assert copied == lab.exec(SRC, ["sha256sum", template]).stdout.split()[0]
        chain = vm.image_info(DST, backing_chain=True)
        assert chain[0]["backing-filename"] == template and chain[1]["filename"] == template
        # The overlay was removed from A after B checked out; the template stays (other VMs may use it).
        assert moved["removed"] == [vm.disk_path]
        assert lab.exec(SRC, ["test", "-e", template], check=False).returncode == 0
        assert vm.pattern_intact(DST)
        assert_alive_on(vm, DST, SRC)

        # B -> A: the template is present on A now, and is not copied again.
        back = migrate(ansible, vm, DST, SRC, live_migration_storage="copy_incremental")
        assert [(t["path"], t["action"]) for t in back["storage_plan"]["templates"]] == [(template, "present")]
        assert vm.pattern_intact(SRC)
        assert_alive_on(vm, SRC, DST)
    finally:
        vm.remove_everywhere()


def test_a_different_template_on_the_destination_is_refused(lab, ansible):
    template = "/var/lib/libvirt/images/tbbase2.qcow2"
    vm = LabGuest(lab, name="inc2vm", template=template)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=1)
    lab.exec(DST, f"qemu-img create -q -f qcow2 {template} {vm.disk_mib}M")  # same size, other content
    try:
        before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
        run = ansible.module(SRC, "kvm.migration.migrate", {"name": vm.name, "dest_uri": f"qemu+ssh://{DST}/system",
                                                            "storage": "copy_incremental"})
        refused = run.task("probe")
        assert refused["failed"] and "a different file already sits at %s" % template in refused["msg"]
        assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    finally:
        vm.remove_everywhere()


def test_verified_cleanup_runs_qemu_img_check_and_is_idempotent(lab, ansible):
    vm = LabGuest(lab, name="cleanvm")
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=1)
    try:
        run = ansible.playbook(MIGRATE, {"live_migration_vm": vm.name, "live_migration_source": SRC,
                                         "live_migration_destination": DST, "live_migration_source_cleanup": True})
        assert not run.failed, run.stdout[-4000:]
        checked = run.task("Check the destination images")
        assert checked["results"] and all(r["rc"] in (0, 3) for r in checked["results"]), checked
        removed = run.task("Remove the source images")
        assert removed["changed"] and removed["source_disks_removed"] == [vm.disk_path]
        assert lab.exec(SRC, ["test", "-e", vm.disk_path], check=False).returncode != 0
        again = ansible.playbook(MIGRATE, {"live_migration_vm": vm.name, "live_migration_source": SRC,
                                           "live_migration_destination": DST, "live_migration_source_cleanup": True})
        assert not again.failed and again.changed == 0
    finally:
        vm.remove_everywhere()


def test_storage_pool_lifecycle_is_idempotent_with_check_mode_and_diff(lab, ansible):
    args = {"name": "lab-images", "target": "/srv/lab-images", "autostart": True,
            "volumes": [{"name": "data.qcow2", "capacity": "16M"}]}

    def pool(check=False, **extra):
        return ansible.module(SRC, "kvm.migration.storage_pool", {**args, **extra}, check=check, diff=True).task("probe")

    try:
        planned = pool(check=True)
        assert planned["changed"] and "define pool lab-images" in planned["actions"]
        assert "<path>/srv/lab-images</path>" in planned["diff"]["after"] and planned["diff"]["before"] == ""
        assert lab.exec(SRC, ["virsh", "pool-info", "lab-images"], check=False).returncode != 0
        assert lab.exec(SRC, ["test", "-e", "/srv/lab-images"], check=False).returncode != 0

        made = pool()
        assert made["changed"] and made["pool"]["active"] and made["pool"]["autostart"]
        assert made["actions"][:3] == ["define pool lab-images", "build pool lab-images", "start pool lab-images"]
        assert made["volumes_created"] == ["/srv/lab-images/data.qcow2"]
        info = lab.exec(SRC, ["qemu-img", "info", "--output=json", "/srv/lab-images/data.qcow2"]).stdout
        assert '"virtual-size": 16777216' in info

        again = pool()
        assert not again["changed"] and again["actions"] == [] and "diff" not in again
        assert not pool(check=True)["changed"]

        # A property libvirt cannot change on an active pool is a clear error, not a silent no-op.
        moved = pool(target="/srv/elsewhere")
        assert moved["failed"] and "Cannot change target of pool lab-images while it is active" in moved["msg"]

        # absent undefines the pool and never deletes data.
        gone = pool(state="absent")
        assert gone["changed"] and gone["actions"] == ["stop pool lab-images", "undefine pool lab-images"]
        assert lab.exec(SRC, ["test", "-e", "/srv/lab-images/data.qcow2"], check=False).returncode == 0
    finally:
        lab.exec(SRC, "virsh pool-destroy lab-images; virsh pool-undefine lab-images; rm -rf /srv/lab-images",
                 check=False)


def test_netfs_pool_definition(lab, ansible):
    args = {"name": "nfs-store", "type": "netfs", "source_host": "nas.example.org", "source_path": "/export/vm",
            "target": "/var/lib/libvirt/nfs-store", "state": "present"}
    try:
        made = ansible.module(SRC, "kvm.migration.storage_pool", args, diff=True).task("probe")
        assert made["changed"] and made["actions"] == ["define pool nfs-store"]
        xml = lab.exec(SRC, ["virsh", "pool-dumpxml", "nfs-store"]).stdout
        assert "<pool type='netfs'>" in xml and "<host name='nas.example.org'/>" in xml
        assert "<dir path='/export/vm'/>" in xml and "<format type='nfs'/>" in xml
        assert not ansible.module(SRC, "kvm.migration.storage_pool", args).task("probe")["changed"]
        # Inactive, so the source may change: the pool is redefined.
        changed = ansible.module(SRC, "kvm.migration.storage_pool", {**args, "source_path": "/export/vm2"}).task("probe")
        assert changed["actions"] == ["redefine pool nfs-store (source_path)"]
    finally:
        lab.exec(SRC, "virsh pool-undefine nfs-store", check=False)


def test_netfs_pool_that_cannot_mount_takes_back_its_mount_point(lab, ansible):
    """Defect 9: a netfs pool whose NFS server does not answer failed to start and left the directory its build
    made.  Now the pool definition and the mount point both go; the error names the pool."""
    target = "/srv/nfs-unreachable"
    lab.exec(SRC, f"rmdir {target}", check=False)
    args = {"name": "nfs-unreachable", "type": "netfs", "source_host": "127.0.0.1", "source_path": "/export/none",
            "target": target, "state": "started"}
    try:
        failed = ansible.module(SRC, "kvm.migration.storage_pool", args).task("probe")
        assert failed.get("failed") and "start pool nfs-unreachable" in failed["msg"], failed
        assert lab.exec(SRC, ["test", "-e", target], check=False).returncode != 0, "the mount point stayed"
        assert "nfs-unreachable" not in lab.exec(SRC, "virsh pool-list --all --name").stdout
    finally:
        lab.exec(SRC, f"virsh pool-destroy nfs-unreachable; virsh pool-undefine nfs-unreachable; rmdir {target}",
                 check=False)
