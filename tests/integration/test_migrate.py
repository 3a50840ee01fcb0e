"""Real live migrations of the running test guest between two lab hosts, through the collection's playbook.

Every assertion about where the guest runs, whether it rebooted and whether its disk writes survived is
made with the hosts' own tools (virsh, qemu-img) via the lab, never with the collection's modules."""

from __future__ import annotations

import json
import re
import time

import pytest
from helpers import host_snapshot
from kvmlab.guestops import LabGuest

# Every test here runs against two ready lab hypervisors.
pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"


def migrate_vars(vm, source, destination, **extra):
    return {"live_migration_vm": vm, "live_migration_source": source, "live_migration_destination": destination,
            **extra}


def assert_runs_only_on(guest, host, other):
    assert guest.state(host) == "running", f"{guest.name} should run on {host}"
    assert guest.persistent(host), f"{guest.name} should be persistent on {host}"
    assert guest.state(other) == "absent", f"{guest.name} should be undefined on {other}"


def test_round_trip_live_migration(lab, ansible, guest, migrate_playbook, tmp_path):
    guest.start_and_wait(SRC, ticks=2)
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}

    # Check mode first: predicts a change, changes nothing.
    run = ansible.playbook(migrate_playbook, migrate_vars(guest.name, SRC, DST), check=True, diff=True)
    assert not run.failed, run.stdout[-3000:]
    planned = run.task("Migrate the VM")
    assert planned["changed"] is True
    assert planned["operation"] == "migrate"
    # --diff: placement before and as predicted, and the definition the destination would get.
    assert re.search(r"^source \S+: running, defined$", planned["diff"]["before"], re.M), planned["diff"]
    assert re.search(r"^destination \S+: absent$", planned["diff"]["before"], re.M), planned["diff"]
    assert re.search(r"^destination \S+: running, defined$", planned["diff"]["after"], re.M), planned["diff"]
    assert re.search(r"^source \S+: absent$", planned["diff"]["after"], re.M), planned["diff"]
    assert f"<name>{guest.name}</name>" in planned["diff"]["after"]
    assert [v["path"] for v in planned["volumes"]] == [guest.disk_path]
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    assert guest.state(SRC) == "running"

    # A → B, for real, removing the source image once B checks out (so that B → A finds the path free).
    report_file = tmp_path / "report.json"
    run = ansible.playbook(migrate_playbook, migrate_vars(guest.name, SRC, DST, live_migration_source_cleanup=True,
                                                          live_migration_report_file=str(report_file)), diff=True)
    assert not run.failed, run.stdout[-3000:]
    moved = run.task("Migrate the VM")
    # --diff of the real run: what was found, and what is there now, read from the destination.
    assert "(none)" in moved["diff"]["before"] and f"<name>{guest.name}</name>" in moved["diff"]["after"]
    assert re.search(r"^destination \S+: running, defined$", moved["diff"]["after"], re.M), moved["diff"]
    # The report reaches the next workflow node (set_stats) and the file, with the figures migrate returned.
    report = json.loads(report_file.read_text())
    assert run.data["global_custom_stats"]["kvm_migration_report"] == report
    assert report["vm"] == guest.name and (report["from"], report["to"]) == (SRC, DST)
    assert report["result"] == "done" and report["operation"] == "migrate" and report["live"] is True
    assert report["downtime_ms"] == moved["summary"]["downtime_ms"]
    assert report["bytes"] >= moved["summary"]["disk_processed_bytes"] > 0
    assert report["storage"] == "copy_all" and report["strategy"]
    assert report["destination_state"] == "running" and report["source_state"] == "absent"
    assert moved["changed"] is True
    assert moved["volumes_created"] == [guest.disk_path]
    assert moved["summary"]["downtime_ms"] is not None
    assert moved["summary"]["disk_processed_bytes"] > 0
    assert moved["state"]["destination"]["state"] == "running"
    assert moved["state"]["source"]["state"] == "absent"
    assert moved["storage_plan"]["mode"] == "copy_all"
    # Removed only after the destination checked out (qemu-img check there, then migrate's own checks).
    assert run.task("Remove the source images")["source_disks_removed"] == [guest.disk_path]
    assert lab.exec(SRC, ["test", "-e", guest.disk_path], check=False).returncode != 0
    assert_runs_only_on(guest, DST, SRC)
    last_on_src = max(n for n, _b in guest.ticks(SRC))
    guest.wait_ticks(DST, 2, after=last_on_src)
    proof = guest.proof([SRC, DST])
    assert proof["problems"] == [], proof
    # Pre-created as a thin qcow2: far less allocated than its virtual size.
    info = guest.image_info(DST)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == guest.disk_mib * 1024 * 1024
    assert info["actual-size"] < info["virtual-size"] / 4, info

    # The same request again is a no-op.
    run = ansible.playbook(migrate_playbook, migrate_vars(guest.name, SRC, DST,
                                                          live_migration_report_file=str(report_file)))
    assert not run.failed, run.stdout[-3000:]
    assert json.loads(report_file.read_text())["result"] == "unchanged"
    again = run.task("Migrate the VM")
    assert again["changed"] is False and again["operation"] == "none"
    assert run.changed == 0
    assert "already runs on hv-b" in run.task("Report")["msg"]

    # And back, B → A: the guest keeps ticking from where it was, with every record on disk.  The source
    # image stays this time (the default).
    run = ansible.playbook(migrate_playbook, migrate_vars(guest.name, DST, SRC))
    assert not run.failed, run.stdout[-3000:]
    back = run.task("Migrate the VM")
    assert back["changed"] is True and "source_disks_removed" not in back
    assert not [t for t in run.tasks if t["task"]["name"] == "Remove the source images"]
    assert lab.exec(DST, ["test", "-e", guest.disk_path], check=False).returncode == 0
    assert_runs_only_on(guest, SRC, DST)
    last_on_dst = max(n for n, _b in guest.ticks(DST))
    guest.wait_ticks(SRC, 2, after=last_on_dst)
    proof = guest.proof([SRC, DST])
    assert proof["problems"] == [], proof
    assert len(proof["boot_ids"]) == 1
    assert proof["ticks_per_host"][DST][0] > 1, "the guest must have ticked on both hosts"


def test_abort_mid_migration_keeps_guest_on_source(lab, ansible, guest, migrate_playbook):
    guest.start_and_wait(SRC, ticks=2)
    before_dst = host_snapshot(lab, DST)
    # 1 MiB/s makes the copy take far longer than the test waits before aborting.
    # source_cleanup is asked for: an aborted migration must still never touch the source image.
    proc = ansible.playbook(migrate_playbook, migrate_vars(guest.name, SRC, DST, live_migration_bandwidth=1,
                                                           live_migration_source_cleanup=True), background=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = lab.exec(SRC, ["virsh", "domjobinfo", guest.name], check=False).stdout
        if "Unbounded" in info and "Data processed" in info:
            break
        assert proc.poll() is None, f"playbook ended before the job started: {proc.communicate()}"
        time.sleep(0.3)
    else:
        pytest.fail("the migration job never showed up on the source")
    time.sleep(2)
    # While the job runs the destination holds the incoming domain and the pre-created volume.
    assert guest.state(DST) != "absent"
    lab.exec(SRC, ["virsh", "domjobabort", guest.name])
    run = ansible.wait(proc)

    assert run.failed
    failed = run.task("Migrate the VM")
    assert failed["failed"] is True
    assert "failed" in failed["msg"] and "keeps running on the source" in failed["msg"], failed["msg"]
    # libvirt reports either "canceled by client" or, when the peer connection closes first, an EOF;
    # both are passed through verbatim.
    assert failed["guest_location"] == "source"
    assert guest.disk_path in failed["removed_from_destination"]
    # The guest still runs on the source, unharmed; nothing is left on the destination.
    assert guest.state(SRC) == "running"
    assert guest.state(DST) == "absent"
    assert host_snapshot(lab, DST) == before_dst
    # The source image is never touched by a failure, cleanup asked for or not.
    assert lab.exec(SRC, ["test", "-s", guest.disk_path], check=False).returncode == 0
    assert not [t for t in run.tasks if t["task"]["name"] == "Remove the source images"]
    last = max(n for n, _b in guest.ticks(SRC))
    guest.wait_ticks(SRC, 2, after=last)
    proof = guest.proof([SRC])
    assert proof["problems"] == [], proof


def test_a_migration_already_running_is_attached_to(lab, ansible, guest, migrate_playbook):
    """Someone else (here plain virsh, capped so that it takes a while) is already migrating the guest: the
    playbook waits for that migration instead of starting a second one, then removes the source definition
    virsh left behind."""
    guest.start_and_wait(SRC, ticks=2)
    lab.exec(DST, f"qemu-img create -q -f qcow2 {guest.disk_path} {guest.disk_mib}M")
    lab.exec(SRC, f"setsid -f virsh migrate --live --persistent --copy-storage-all --bandwidth 4 {guest.name} "
                  f"qemu+ssh://{DST}/system >/root/virsh-migrate.log 2>&1")
    deadline = time.monotonic() + 60
    while "Data processed" not in lab.exec(SRC, ["virsh", "domjobinfo", guest.name], check=False).stdout:
        assert time.monotonic() < deadline, lab.exec(SRC, ["cat", "/root/virsh-migrate.log"]).stdout
        time.sleep(0.3)

    run = ansible.playbook(migrate_playbook, migrate_vars(guest.name, SRC, DST))
    assert not run.failed, run.stdout[-3000:]
    attached = run.task("Migrate the VM")
    assert attached["changed"] is True
    assert attached["operation"] == "attach+undefine_source", attached["operation"]
    assert attached["preflight"]["attach"] is True
    assert attached["progress"], "the wait must have followed the running job"
    assert "was already running" in run.task("Report")["msg"]
    assert_runs_only_on(guest, DST, SRC)
    last_on_src = max(n for n, _b in guest.ticks(SRC))
    guest.wait_ticks(DST, 2, after=last_on_src)
    proof = guest.proof([SRC, DST])
    assert proof["problems"] == [], proof


@pytest.mark.parametrize("options", [{"parallel_connections": 2, "compression": "zstd"}, {"compression": "xbzrle"}],
                         ids=["multifd-zstd", "xbzrle"])
def test_parallel_connections_and_compression_move_the_guest_intact(lab, ansible, options):
    """The RAM stream over two multifd channels compressed with zstd, and xbzrle's page deltas, for real: libvirt
    gets the flags and parameters, QEMU moves a guest that keeps dirtying memory, and the guest runs on."""
    guest = LabGuest(lab, name="compvm", memory_mib=160, dirty_mb=24, dirty_rate=2)
    guest.remove_everywhere()
    try:
        guest.start_and_wait(SRC, ticks=2)
        args = {"name": guest.name, "dest_uri": f"qemu+ssh://{DST}/system", "source_cleanup": True,
                "strategy": "manual", **options}
        moved = ansible.module(SRC, "kvm.migration.migrate", args).task("probe")
        assert not moved.get("failed"), moved.get("msg")
        assert ("compressed" in moved["flags"]) and (("parallel" in moved["flags"]) == ("parallel_connections" in options))
        assert_runs_only_on(guest, DST, SRC)
        guest.wait_ticks(DST, 2, after=max(n for n, _b in guest.ticks(SRC)))
        proof = guest.proof([SRC, DST])
        assert proof["problems"] == [] and len(proof["boot_ids"]) == 1, proof
    finally:
        guest.remove_everywhere()
