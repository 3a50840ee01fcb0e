"""Offline migration of a shut-off guest between two lab hosts, through the collection's playbook.

The guest ran on hv-a and was powered off from inside; its disk holds the tick records it wrote.  What is
checked with the hosts' own tools: the definition and the images move to hv-b (same sha256, still thin), the
source keeps nothing, a re-run changes nothing, the guest boots on hv-b, and a failure part-way leaves both
hosts exactly as they were."""

from __future__ import annotations

import time

import pytest
from helpers import host_snapshot
from kvmlab.guestops import LabGuest

pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
DATA_DIR = "/srv/data"


def offline_vars(vm, **extra):
    return {"live_migration_vm": vm, "live_migration_source": SRC, "live_migration_destination": DST,
            "live_migration_live": False, **extra}


def sha256(lab, host, path):
    return lab.exec(host, ["sha256sum", path]).stdout.split()[0]


def power_off(guest, host):
    """Power the guest off from inside, after its last tick record reached the disk."""
    guest.control(host, "sync")
    guest.control(host, "poweroff")
    deadline = time.monotonic() + 30
    while guest.state(host) != "shut off":
        assert time.monotonic() < deadline, f"{guest.name} did not power off: {guest.state(host)}"
        time.sleep(0.5)


def test_offline_migration_of_a_shut_off_guest(lab, ansible, guest, migrate_playbook):
    guest.start_and_wait(SRC, ticks=3)
    power_off(guest, SRC)
    records = guest.records(SRC)
    assert len(records) >= 3
    digest = sha256(lab, SRC, guest.disk_path)
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}

    # A live request for a shut-off guest is refused and points at live=false.
    run = ansible.playbook(migrate_playbook, dict(offline_vars(guest.name), live_migration_live=True))
    assert run.failed
    refused = run.task("Migrate the VM")
    assert "live migration needs a running domain" in refused["msg"] and "live=false" in refused["hint"], refused

    # Check mode predicts the move and changes nothing.
    run = ansible.playbook(migrate_playbook, offline_vars(guest.name), check=True)
    assert not run.failed, run.stdout[-3000:]
    planned = run.task("Migrate the VM")
    assert planned["changed"] is True and planned["flags"] == ["offline", "peer2peer", "persist_dest"]
    assert planned["storage_plan"]["mode"] == "copy_offline"
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before

    run = ansible.playbook(migrate_playbook, offline_vars(guest.name))
    assert not run.failed, run.stdout[-3000:]
    moved = run.task("Migrate the VM")
    assert moved["changed"] is True
    assert [c["path"] for c in moved["copied"]] == [guest.disk_path]
    assert moved["copied"][0]["sha256"] == digest and moved["copied"][0]["read_back"]
    assert moved["state"]["destination"]["state"] == "shutoff" and moved["state"]["source"]["state"] == "absent"
    assert "offline" in run.task("Report")["msg"]
    # Seen with the hosts' own tools: defined and shut off on B only, the same bytes, still a thin qcow2.
    assert guest.state(DST) == "shut off" and guest.persistent(DST)
    assert guest.state(SRC) == "absent"
    assert sha256(lab, DST, guest.disk_path) == digest
    assert guest.records(DST) == records
    info = guest.image_info(DST)
    assert info["format"] == "qcow2" and info["virtual-size"] == guest.disk_mib * 1024 * 1024
    assert info["actual-size"] < info["virtual-size"] / 4, info
    # The source image stays (source_cleanup is off by default); only the definition left.
    assert lab.exec(SRC, ["test", "-s", guest.disk_path], check=False).returncode == 0

    # The same request again is a no-op.
    run = ansible.playbook(migrate_playbook, offline_vars(guest.name))
    assert not run.failed, run.stdout[-3000:]
    assert run.task("Migrate the VM")["changed"] is False
    assert run.changed == 0

    # The moved guest boots on B from the copied image.
    lab.exec(DST, ["virsh", "-q", "start", guest.name])
    guest.wait_ticks(DST, 2, after=0, timeout=90)


def test_offline_migration_keeping_the_source_is_idempotent(lab, ansible, guest):
    guest.define(SRC, start=False)
    # A sparse raw disk too: 64 MiB virtual, 1 MiB written in the middle; its holes must stay holes.
    raw = f"/var/lib/libvirt/images/{guest.name}-sparse.raw"
    lab.exec(SRC, f"truncate -s 64M {raw} && dd if=/dev/urandom of={raw} bs=1M seek=32 count=1 conv=notrunc "
                  f"status=none && virsh -q attach-disk {guest.name} {raw} vdb --driver qemu --subdriver raw "
                  "--cache none --config")
    try:
        raw_digest = sha256(lab, SRC, raw)
        args = {"name": guest.name, "dest_uri": f"qemu+ssh://{DST}/system", "live": False, "undefine_source": False}
        first = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
        assert first["changed"] is True, first
        assert guest.state(SRC) == "shut off" and guest.state(DST) == "shut off"
        assert sha256(lab, DST, raw) == raw_digest
        allocated = int(lab.exec(DST, ["stat", "-c", "%b", raw]).stdout) * 512
        assert allocated < 8 << 20, f"the sparse raw image arrived with {allocated} bytes allocated"
        # Both hosts hold the definition: the destination's record shows it is this run's copy of unchanged images.
        again = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
        assert again["changed"] is False, again
        # Once the source image changes, the two copies differ and the module refuses to pick one.
        lab.exec(SRC, ["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", guest.disk_path])
        changed = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
        assert changed["failed"] is True
        assert "changed on the source since it was copied" in changed["msg"], changed["msg"]
    finally:
        for h in (SRC, DST):
            lab.exec(h, ["rm", "-f", raw], check=False)


def test_offline_failure_part_way_leaves_both_hosts_as_they_were(lab, ansible, guest):
    """The second disk's directory is read-only on the destination: the first image is copied, the second cannot
    be created, and the module removes the first again."""
    data_disk = f"{DATA_DIR}/{guest.name}-data.qcow2"
    guest.define(SRC, start=False)
    lab.exec(SRC, f"mkdir -p {DATA_DIR} && qemu-img create -q -f qcow2 {data_disk} 16M && "
                  f"qemu-io -f qcow2 -c 'write -P 0x33 0 1M' {data_disk} >/dev/null && "
                  f"virsh -q attach-disk {guest.name} {data_disk} vdb --driver qemu --subdriver qcow2 --cache none "
                  "--config")
    lab.exec(DST, f"mkdir -p {DATA_DIR} && mount --bind {DATA_DIR} {DATA_DIR} && "
                  f"mount -o remount,bind,ro {DATA_DIR}")
    try:
        before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
        before_data = {h: lab.exec(h, ["ls", "-A", DATA_DIR]).stdout for h in (SRC, DST)}
        digest = sha256(lab, SRC, data_disk)
        result = ansible.module(SRC, "kvm.migration.migrate", {
            "name": guest.name, "dest_uri": f"qemu+ssh://{DST}/system", "live": False, "storage": "copy_all",
        }).task("probe")
        assert result["failed"] is True, result
        assert data_disk in result["msg"] and "Read-only file system" in result["msg"], result["msg"]
        assert "stays defined on the source" in result["msg"]
        assert guest.disk_path in result["removed_from_destination"]
        assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
        assert {h: lab.exec(h, ["ls", "-A", DATA_DIR]).stdout for h in (SRC, DST)} == before_data
        assert guest.state(SRC) == "shut off" and guest.persistent(SRC)
        assert sha256(lab, SRC, data_disk) == digest
    finally:
        lab.exec(DST, f"umount {DATA_DIR}", check=False)
        for h in (SRC, DST):
            lab.exec(h, f"rm -rf {DATA_DIR}", check=False)


class UefiGuest(LabGuest):
    """A shut-off guest whose definition has UEFI firmware and a variable store (never started here: the lab has
    no OVMF, and an offline move does not need it to run)."""

    NVRAM = "/var/lib/libvirt/qemu/nvram/uefivm_VARS.fd"

    def xml(self) -> str:
        firmware = ("<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
                    f"<nvram>{self.NVRAM}</nvram>")
        return super().xml().replace("</os>", firmware + "</os>", 1)


def test_offline_move_carries_the_uefi_variable_store(lab, ansible):
    """The variable store (boot entries, Secure Boot keys) lives outside the disks: an offline move copies it,
    byte for byte, and says so; the missing firmware on the destination is a warning, not a blocker."""
    vm = UefiGuest(lab, name="uefivm")
    vm.remove_everywhere()
    try:
        lab.exec(SRC, f"mkdir -p $(dirname {vm.NVRAM}) && head -c 540672 /dev/urandom > {vm.NVRAM}")
        vm.define(SRC, start=False)
        digest = sha256(lab, SRC, vm.NVRAM)
        args = {"name": vm.name, "dest_uri": f"qemu+ssh://{DST}/system", "live": False}
        moved = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
        assert not moved.get("failed"), moved.get("msg")
        assert moved["nvram_copied"] == vm.NVRAM
        firmware = next(c for c in moved["preflight"]["checks"] if c["name"] == "firmware")
        assert firmware["status"] == "warn" and "OVMF_CODE_4M.fd is missing" in firmware["message"], firmware
        assert sha256(lab, DST, vm.NVRAM) == digest
        assert vm.NVRAM in lab.exec(DST, ["virsh", "dumpxml", vm.name]).stdout
        assert vm.state(DST) == "shut off" and vm.state(SRC) == "absent"
        assert not ansible.module(SRC, "kvm.migration.migrate", args).task("probe")["changed"]
    finally:
        for host in (SRC, DST):  # a plain undefine refuses a domain with a variable store
            lab.exec(host, f"virsh -q undefine --keep-nvram {vm.name}; rm -f {vm.NVRAM}", check=False)
        vm.remove_everywhere()


class TpmGuest(LabGuest):
    """A guest with an emulated TPM 2.0, whose state libvirt keeps in /var/lib/libvirt/swtpm/<uuid> (swtpm comes
    with hypervisor_prep)."""

    SWTPM_LOG = "/var/log/swtpm/libvirt/qemu/%s-swtpm.log"

    def xml(self) -> str:
        tpm = "<tpm model='tpm-tis'><backend type='emulator' version='2.0'/></tpm>"
        return super().xml().replace("</devices>", tpm + "</devices>", 1)

    def state_dir(self, host: str) -> str:
        uuid = self.lab.exec(host, ["virsh", "domuuid", self.name]).stdout.strip()
        return f"/var/lib/libvirt/swtpm/{uuid}"

    def swtpm_log(self, host: str) -> str:
        return self.lab.exec(host, f"cat {self.SWTPM_LOG % self.name} 2>/dev/null; true").stdout

    def remove_everywhere(self) -> None:
        """Also its TPM state and swtpm's log (a plain undefine takes the state; the log stays)."""
        super().remove_everywhere()
        for h in self.lab.hosts:
            self.lab.exec(h.name, f"rm -f {self.SWTPM_LOG % self.name}", check=False)


def tree(lab, host, path):
    """{relative path: (type, mode, sha256 or '-')} of everything under `path`, or None when it is not there."""
    script = (f"test -e {path} || exit 3; cd {path} && find . -mindepth 1 | sort | while read p; do "
              "if [ -d \"$p\" ]; then echo \"$p d $(stat -c %a \"$p\") -\"; "
              "else echo \"$p f $(stat -c %a \"$p\") $(sha256sum < \"$p\" | cut -d' ' -f1)\"; fi; done")
    proc = lab.exec(host, script, check=False)
    if proc.returncode == 3:
        return None
    assert proc.returncode == 0, proc.stderr
    return {p: (t, m, s) for p, t, m, s in (line.split() for line in proc.stdout.splitlines())}


def test_offline_move_carries_the_tpm_state_and_takes_it_back_on_failure(lab, ansible):
    """An emulated TPM's state (its endorsement key, sealed secrets) lives outside the disks, in a directory
    tree: an offline move copies the tree, every file by sha256, and the guest starts on the destination with the
    same TPM (swtpm is not manufactured anew there).  A destination that runs out of room during the state copy
    gets everything of the move taken back.  The copy the source keeps blocks a move back until source_cleanup
    removes it (once the destination's copy is checked)."""
    vm = TpmGuest(lab, name="tpmvm")
    vm.remove_everywhere()
    swtpm_dir = "/var/lib/libvirt/swtpm"
    try:
        # The first start manufactures the TPM (swtpm_setup: endorsement key and certificates).
        vm.define(SRC, start=True)
        lab.exec(SRC, ["virsh", "-q", "destroy", vm.name])
        state = vm.state_dir(SRC)
        assert "manufactur" in vm.swtpm_log(SRC).lower()
        source_tree = tree(lab, SRC, state)
        assert "./tpm2/tpm2-00.permall" in source_tree, source_tree
        permall = int(lab.exec(SRC, ["stat", "-c", "%s", f"{state}/tpm2/tpm2-00.permall"]).stdout)
        assert permall > 4096  # more than the small filesystem below takes

        # The destination runs out of room in the middle of the state: everything of the move goes again.
        lab.exec(DST, f"mkdir -p {swtpm_dir} && mount -t tmpfs -o size=4k,mode=0711 tmpfs {swtpm_dir}")
        try:
            args = {"name": vm.name, "dest_uri": f"qemu+ssh://{DST}/system", "live": False}
            failed = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
            assert failed.get("failed") and failed["guest_location"] == "source", failed
            assert "tpm2-00.permall" in failed["msg"], failed["msg"]
            removed = failed["removed_from_destination"]
            assert {vm.disk_path, state, f"{state}/tpm2", f"{state}/tpm2/tpm2-00.permall"} <= set(removed), removed
            assert lab.exec(DST, ["ls", "-A", swtpm_dir]).stdout == ""
            assert vm.state(DST) == "absent" and vm.state(SRC) == "shut off"
            assert lab.exec(DST, ["test", "-e", vm.disk_path], check=False).returncode != 0
        finally:
            lab.exec(DST, f"umount {swtpm_dir}", check=False)
        assert tree(lab, SRC, state) == source_tree

        moved = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
        assert not moved.get("failed"), moved.get("msg")
        assert f"{state}/tpm2/tpm2-00.permall" in moved["tpm_state_copied"], moved["tpm_state_copied"]
        firmware = next(c for c in moved["preflight"]["checks"] if c["name"] == "firmware")
        assert f"TPM's state {state} is copied" in firmware["message"], firmware
        assert tree(lab, DST, state) == source_tree  # same files, same bytes, same modes
        assert vm.state(DST) == "shut off" and vm.state(SRC) == "absent"
        assert not ansible.module(SRC, "kvm.migration.migrate", args).task("probe")["changed"]
        # The guest starts there with the TPM it had: libvirt finds the state and manufactures nothing.
        lab.exec(DST, ["virsh", "-q", "start", vm.name])
        assert vm.state(DST) == "running"
        assert "manufactur" not in vm.swtpm_log(DST).lower(), vm.swtpm_log(DST)
        lab.exec(DST, ["virsh", "-q", "destroy", vm.name])

        # The source kept its copy (undefine keeps TPM state): a move back refuses to overwrite it...
        back = {"name": vm.name, "dest_uri": f"qemu+ssh://{SRC}/system", "live": False}
        refused = ansible.module(DST, "kvm.migration.migrate", back).task("probe")
        assert refused.get("failed") and f"already holds TPM state at {state}" in refused["msg"], refused
        assert vm.state(DST) == "shut off" and vm.state(SRC) == "absent"
        # ...until source_cleanup removes what the guest left there, once the destination's copy is checked.
        cleaned = ansible.module(SRC, "kvm.migration.migrate", dict(args, source_cleanup=True)).task("probe")
        assert cleaned["changed"] and cleaned["source_state_removed"] == [state], cleaned
        assert tree(lab, SRC, state) is None and tree(lab, DST, state) is not None
        # The move back cleans up after itself on B: its image, and its TPM state once A holds the copy (the
        # state as it is now, after the guest ran on B).
        current = tree(lab, DST, state)
        returned = ansible.module(DST, "kvm.migration.migrate", dict(back, source_cleanup=True)).task("probe")
        assert not returned.get("failed"), returned.get("msg")
        assert returned["source_state_removed"] == [state], returned
        assert vm.state(SRC) == "shut off" and tree(lab, SRC, state) == current and tree(lab, DST, state) is None

        # Live, the state travels in the migration stream.
        lab.exec(SRC, ["virsh", "-q", "start", vm.name])
        live = ansible.module(SRC, "kvm.migration.migrate", dict(args, live=True, strategy="manual")).task("probe")
        assert not live.get("failed"), live.get("msg")
        firmware = next(c for c in live["preflight"]["checks"] if c["name"] == "firmware")
        assert "QEMU carries the emulated TPM's state" in firmware["message"], firmware
        assert vm.state(DST) == "running" and vm.state(SRC) in ("absent", "shut off")
        # libvirt manufactures a TPM for the incoming guest, then swtpm takes the source's state from the stream.
        permall = f"{state}/tpm2/tpm2-00.permall"
        assert sha256(lab, DST, permall) == sha256(lab, SRC, permall)
    finally:
        for host in (SRC, DST):
            lab.exec(host, f"umount {swtpm_dir} 2>/dev/null; virsh -q destroy {vm.name} >/dev/null 2>&1; "
                           f"virsh -q undefine --tpm {vm.name} >/dev/null 2>&1; rm -rf {swtpm_dir}/*", check=False)
        vm.remove_everywhere()
