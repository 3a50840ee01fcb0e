"""The fault suite: real live migrations between two lab hosts, with a fault injected at a measured point of the
job's progress (read from the source's job statistics, never a sleep).

After every case: the guest runs in exactly one place with one boot id and a tick counter that continues; every
disk record is there; nothing of the migration is left on the destination (domain, volume, journal, scratch
file, temporary pool) nor on the source (temporary pool); the failure names its cause and says where the guest
runs; the same task run again completes the move, and a third run changes nothing.

The link is slowed with the migration's own bandwidth cap (deterministic on a 2-core machine, unlike tc on a
loaded veth), and cut on the root side of the destination's veth (`vb-<host>`), which nspawn made."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from helpers import host_snapshot
from kvmlab.guestops import IMAGES, LabGuest

pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
DEST_URI = f"qemu+ssh://{DST}/system"
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


@pytest.fixture
def vm(lab):
    g = LabGuest(lab, name="faultvm", memory_mib=160)
    g.remove_everywhere()
    g.start_and_wait(SRC, ticks=2)
    yield g
    restore_link(lab)
    lab.exec(DST, "systemctl start libvirtd.socket libvirtd.service", check=False)
    g.remove_everywhere()
    # A failed case must not fail the next one: its hidden files go too (each case asserts there are none).
    for host in (SRC, DST):
        lab.exec(host, f"rm -f {IMAGES}/.kvm-migration-*; virsh pool-list --name | grep '^kvm-migration-' "
                       "| xargs -r -n1 virsh pool-destroy", check=False)


def restore_link(lab):
    subprocess.run(["ip", "link", "set", f"vb-{DST}", "up"], check=False)


def migrate_args(vm, **extra):
    return {"name": vm.name, "dest_uri": DEST_URI, "source_cleanup": True, **extra}


def start_migration(ansible, vm, **extra):
    return ansible.module(SRC, "kvm.migration.migrate", migrate_args(vm, **extra), background=True)


def job_progress(lab, vm):
    """Fraction of the job's data processed on the source, or None while no job runs."""
    info = lab.exec(SRC, ["virsh", "domjobinfo", vm.name], check=False).stdout
    found = {}
    for key in ("Data processed", "Data total"):
        m = re.search(r"^%s:\s+([\d.]+) (\w+)" % key, info, re.M)
        if m:
            found[key] = float(m.group(1)) * UNITS.get(m.group(2), 1)
    if "Unbounded" not in info or not found.get("Data total"):
        return None
    return found.get("Data processed", 0) / found["Data total"]


def wait_progress(lab, vm, proc, fraction, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = job_progress(lab, vm)
        if done is not None and done >= fraction:
            return done
        assert proc.poll() is None, "the migration ended before the fault point: %s" % (proc.communicate(),)
        time.sleep(0.2)
    pytest.fail("the job never reached %d %%" % (fraction * 100))


def leftovers(lab, vm):
    """What a migration may leave: the guest's domain and image on the destination, the collection's hidden
    files there, and its temporary pools on either host."""
    found = []
    if vm.state(DST) != "absent":
        found.append(f"domain {vm.name} on {DST}")
    if lab.exec(DST, ["test", "-e", vm.disk_path], check=False).returncode == 0:
        found.append(f"{vm.disk_path} on {DST}")
    hidden = lab.exec(DST, f"ls -A {IMAGES} | grep '^.kvm-migration-' || true").stdout.split()
    found += [f"{IMAGES}/{name} on {DST}" for name in hidden]
    for host in (SRC, DST):
        pools = lab.exec(host, "virsh pool-list --all --name | grep '^kvm-migration-' || true").stdout.split()
        found += [f"pool {p} on {host}" for p in pools]
    return found


def assert_in_one_place(vm, where):
    other = DST if where == SRC else SRC
    assert vm.state(where) == "running", f"{vm.name} should run on {where}"
    assert vm.state(other) in ("absent", "shut off"), f"{vm.name} should not run on {other}"
    # Just after the guest arrives its console on the new host may hold no tick yet: count on from the last
    # tick seen on either host.
    last = max((n for host in (SRC, DST) for n, _b in vm.ticks(host)), default=0)
    vm.wait_ticks(where, 2, after=last)
    proof = vm.proof([SRC, DST])
    assert proof["problems"] == [], proof
    assert len(proof["boot_ids"]) == 1, proof


def assert_failed_cleanly(lab, vm, result):
    assert result.get("failed"), result
    assert result["guest_location"] == "source", result
    assert "keeps running on the source" in result["msg"], result["msg"]
    assert result.get("strategy"), "every result says what was measured, chosen and done"
    assert_in_one_place(vm, SRC)
    assert leftovers(lab, vm) == [], result["msg"]


def assert_rerun_converges(lab, ansible, vm):
    run = ansible.module(SRC, "kvm.migration.migrate", migrate_args(vm))
    moved = run.task("probe")
    assert not moved.get("failed"), moved.get("msg")
    assert_in_one_place(vm, DST)
    again = ansible.module(SRC, "kvm.migration.migrate", migrate_args(vm)).task("probe")
    assert again["changed"] is False and again["operation"] == "none", again
    hidden = lab.exec(DST, f"ls -A {IMAGES} | grep '^.kvm-migration-' || true").stdout.split()
    assert hidden == []
    return moved


@pytest.mark.parametrize("point", [0.1, 0.5, 0.9], ids=["at-10pct", "at-50pct", "at-90pct"])
def test_link_cut(lab, ansible, vm, point):
    """The destination's link goes down for 20 s at about 10 % (early RAM), 50 % and 90 % (late RAM) of the
    job."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, point)
    subprocess.run(["ip", "link", "set", f"vb-{DST}", "down"], check=True)
    time.sleep(20)
    restore_link(lab)
    result = ansible.wait(proc).task("probe")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    if result.get("failed"):
        assert_failed_cleanly(lab, vm, result)
        # The cause, not only libvirt's last word ("client socket is closed").
        assert re.search(r"lost|no data moved|closed|End of file|Broken pipe", result["msg"]), result["msg"]
        assert result["cause"]["kind"] == "connection", result["cause"]
        assert "link" in result["hint"] or "daemons" in result["hint"], result["hint"]
        assert_rerun_converges(lab, ansible, vm)
    else:
        # TCP outlived the 20 s cut and the job went on: the guest must then be on the destination only.
        assert_in_one_place(vm, DST)


def test_destination_libvirtd_killed(lab, ansible, vm):
    """Defect 1: SIGKILL of the destination's libvirtd at about a third of the job, restarted 5 s later.  The
    engine reconnects and removes its volume; if the destination stayed away, the re-run recognises the
    leftover by its journal instead of refusing."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.3)
    lab.exec(DST, "systemctl kill -s SIGKILL libvirtd.service")
    time.sleep(5)
    lab.exec(DST, "systemctl start libvirtd.service")
    result = ansible.wait(proc).task("probe")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    assert result.get("failed"), result
    assert result["guest_location"] == "source"
    assert "the connection to the destination %s was lost" % DEST_URI in result["msg"], result["msg"]
    assert_in_one_place(vm, SRC)
    if "removed_from_destination" in result:
        assert leftovers(lab, vm) == [], result["msg"]
    else:
        assert "run the same task again" in result["hint"], result
    assert_rerun_converges(lab, ansible, vm)
    assert leftovers(lab, vm) == [f"domain {vm.name} on {DST}", f"{vm.disk_path} on {DST}"]


def test_controller_killed_then_rerun(lab, ansible, vm):
    """The controller's ansible-playbook is SIGKILLed mid-copy; the same task run again finishes the move:
    it attaches to the job still running, or removes the interrupted run's leftovers and migrates."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    moved = assert_rerun_converges(lab, ansible, vm)
    print("re-run:", moved["operation"], "| waited for the killed run's module:", moved.get("waited_for_other_run"))
    # The killed run's module goes on to finish on the host; the re-run waits for it rather than race its cleanup,
    # and neither leaves its lock behind.
    if "waited_for_other_run" in moved:
        assert moved["waited_for_other_run"]["holder"]["pid"] > 0, moved
    assert lab.exec(SRC, "ls -A /run/lock/kvm-migration 2>/dev/null || true").stdout.split() == []
    # Attaching to the job still running ends with what the request asks of a finished move (undefine the source,
    # clean up its images): attach+undefine_source+cleanup_source.
    assert moved["operation"].split("+")[0] in ("migrate", "attach", "none", "undefine_source"), moved


def test_a_guest_that_cannot_converge_is_stopped_on_time(lab, ansible, vm):
    """Defect 14: while the downtime limit is stepped up every second (the control call that once blocked the
    monitor forever), a guest dirtying faster than the capped link must be aborted by the completion timeout."""
    assert vm.control(SRC, "dirty 48 20"), "the guest's control channel must answer"
    started = time.monotonic()
    result = ansible.module(SRC, "kvm.migration.migrate", migrate_args(
        vm, strategy="manual", bandwidth=2, timeout=25, downtime_schedule=[50, 100, 200, 300],
        downtime_step_interval=1)).task("probe")
    took = time.monotonic() - started
    print("fault result after %.0f s:" % took, result.get("msg"), "| hint:", result.get("hint"))
    assert result.get("failed"), result
    assert "completion timeout of 25 s" in result["msg"], result["msg"]
    # The timeout plus the abort and clean-up, far below the watchdog's grace.
    assert took < 25 + 45, took
    assert "guest changes memory faster" in result["hint"], result["hint"]
    assert not [e for e in result["events"] if e["event"].startswith("failed")], result["events"]
    assert "Storage volume not found" not in result["msg"], "a lookup's miss is not a cause"
    assert_failed_cleanly(lab, vm, result)


def test_preflight_leaves_nothing_on_either_host(lab, ansible, vm):
    """Defect 5: the read-only preflight left a transient pool on the source."""
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
    result = ansible.module(SRC, "kvm.migration.preflight", {"name": vm.name, "dest_uri": DEST_URI}).task("probe")
    assert not result.get("failed"), result.get("msg")
    assert result["verdict"] in ("pass", "warn"), result
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    assert leftovers(lab, vm) == []


def test_bandwidth_measurement_on_a_full_destination_writes_nothing(lab, ansible, vm):
    """Defect 4: the scratch file of a bandwidth measurement filled a full destination.  Now its room is checked
    first (a 40 MiB filesystem cannot take 32 MiB and the margin) and nothing is written."""
    lab.exec(DST, "mkdir -p /srv/small && mount -t tmpfs -o size=40m tmpfs /srv/small")
    try:
        result = ansible.module(SRC, "kvm.migration.dirtyrate", {
            "name": vm.name, "dest_uri": DEST_URI, "scratch_dir": "/srv/small", "measure_mib": 32}).task("probe")
        assert result.get("failed"), result
        assert "Cannot measure the bandwidth" in result["msg"] and "/srv/small" in result["msg"], result["msg"]
        assert "measure_mib" in result["hint"]
        assert lab.exec(DST, "ls -A /srv/small").stdout.strip() == ""
        assert leftovers(lab, vm) == []
    finally:
        lab.exec(DST, "umount /srv/small; rmdir /srv/small", check=False)


def test_link_cut_during_postcopy(lab, ansible, vm):
    """Defect 2: the link goes down for 20 s in the post-copy phase.  The guest's memory is split; the engine
    waits for QEMU to finish or fail on its own and resumes a failed post-copy, so the move completes and the
    guest runs on the destination only, unharmed."""
    previous = lab.set_kernel_sysctl("vm.unprivileged_userfaultfd", "1")
    try:
        assert vm.control(SRC, "dirty 48 20")
        # QEMU does not cap post-copy by default (446 MB/s in CI: the phase was over before the link could be cut).
        proc = start_migration(ansible, vm, strategy="manual", postcopy="immediate", bandwidth=4,
                               postcopy_bandwidth=4)
        deadline = time.monotonic() + 180
        while "post-copy" not in lab.exec(SRC, ["virsh", "domstate", "--reason", vm.name], check=False).stdout:
            assert proc.poll() is None, "the migration ended before post-copy: %s" % (proc.communicate(),)
            assert time.monotonic() < deadline, "post-copy never started"
            time.sleep(0.2)
        subprocess.run(["ip", "link", "set", f"vb-{DST}", "down"], check=True)
        time.sleep(20)
        restore_link(lab)
        result = ansible.wait(proc).task("probe")
        print("fault result:", result.get("msg"), "| events:", result.get("strategy", {}).get("events"))
        assert not result.get("failed"), result.get("msg")
        assert result["strategy"]["finished_by"] == "post-copy"
        assert_in_one_place(vm, DST)
        assert leftovers(lab, vm) == [f"domain {vm.name} on {DST}", f"{vm.disk_path} on {DST}"]
    finally:
        lab.set_kernel_sysctl("vm.unprivileged_userfaultfd", previous)


def test_destination_qemu_killed(lab, ansible, vm):
    """The incoming QEMU on the destination is SIGKILLed at about 40 % of the job."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.4)
    lab.exec(DST, f"kill -KILL $(cat /run/libvirt/qemu/{vm.name}.pid)")
    result = ansible.wait(proc).task("probe")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    assert_failed_cleanly(lab, vm, result)
    assert result["hint"], "a failure always says what to do next"
    assert_rerun_converges(lab, ansible, vm)


def test_source_job_aborted_by_an_operator(lab, ansible, vm):
    """`virsh domjobabort` on the source at about 40 %: the cause is the operator's abort, and the hint does not
    blame the guest's dirty rate (this run did not abort)."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.4)
    lab.exec(SRC, ["virsh", "domjobabort", vm.name])
    result = ansible.wait(proc).task("probe")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    assert_failed_cleanly(lab, vm, result)
    assert result["cause"]["aborted_by"] is None, result["cause"]
    # libvirt (PERSIST_DEST over SSH) reports the abort as its closed connection to the destination; unless the
    # monitor caught the job in its 'cancelled' state, the message says what the evidence shows instead.
    if result["cause"]["kind"] == "aborted":
        assert "cancelled, not by this run" in result["msg"] and "cancelled outside this run" in result["hint"]
    else:
        assert result["cause"]["kind"] == "interrupted", result["cause"]
        assert "the job was stopped on one of the hosts" in result["msg"], result["msg"]
    assert "faster than the link" not in result["hint"] and "run the same task again" in result["hint"]
    assert_rerun_converges(lab, ansible, vm)


def test_source_libvirtd_restarted(lab, ansible, vm):
    """The source's libvirtd restarts at about 40 %: libvirt cancels the outgoing job (or lets it finish); the
    engine reconnects to the source, finds the guest, and cleans the destination."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.4)
    lab.exec(SRC, "systemctl restart libvirtd.service")
    result = ansible.wait(proc).task("probe")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    if result.get("failed"):
        assert_failed_cleanly(lab, vm, result)
        assert "connection to the source" in result["msg"], result["msg"]
        assert_rerun_converges(lab, ansible, vm)
    else:
        assert_in_one_place(vm, DST)
        assert leftovers(lab, vm) == [f"domain {vm.name} on {DST}", f"{vm.disk_path} on {DST}"]


def test_destination_disk_full_during_copy(lab, ansible):
    """The destination's image directory (a 40 MiB filesystem, room for the 25 MiB disk when the checks ran)
    fills up once the disk copy has begun: the cause is the full directory, the partial image goes, and once
    the space is back the re-run moves the guest."""
    directory = "/srv/faultfill"
    g = LabGuest(lab, name="fillvm", memory_mib=160, disk_dir=directory, prefill_mib=24)
    g.remove_everywhere()
    lab.exec(DST, f"mkdir -p {directory} && mount -t tmpfs -o size=40m tmpfs {directory}")
    try:
        g.start_and_wait(SRC, ticks=2)
        proc = ansible.module(SRC, "kvm.migration.migrate", migrate_args(g, bandwidth=4), background=True)
        deadline = time.monotonic() + 120
        # The copy has begun once the destination's image holds data (read from the file, not a sleep).
        while int(lab.exec(DST, f"du -k {g.disk_path} 2>/dev/null | cut -f1", check=False).stdout.strip() or 0) < 2048:
            assert proc.poll() is None, "the migration ended before the copy began: %s" % (proc.communicate(),)
            assert time.monotonic() < deadline, "the disk copy never began"
            time.sleep(0.2)
        lab.exec(DST, f"dd if=/dev/zero of={directory}/filler bs=1M 2>/dev/null", check=False)
        result = ansible.wait(proc).task("probe")
        print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
        assert result.get("failed"), result
        assert result["guest_location"] == "source" and "keeps running on the source" in result["msg"]
        assert result["cause"]["kind"] == "space", result["cause"]
        assert f"ran out of space in {directory}" in result["msg"], result["msg"]
        assert "free space" in result["hint"], result["hint"]
        assert_in_one_place(g, SRC)
        assert lab.exec(DST, f"ls -A {directory}").stdout.split() == ["filler"]
        assert g.state(DST) == "absent"
        lab.exec(DST, f"rm -f {directory}/filler")
        run = ansible.module(SRC, "kvm.migration.migrate", migrate_args(g, bandwidth=8)).task("probe")
        assert not run.get("failed"), run.get("msg")
        assert_in_one_place(g, DST)
    finally:
        g.remove_everywhere()
        lab.exec(DST, f"umount {directory} || umount -l {directory}; rmdir {directory}", check=False)
        lab.exec(SRC, f"rm -rf {directory}", check=False)


def qmp(lab, host, vm, command, **arguments):
    """One QMP command on the guest's QEMU through libvirt (what an operator's `virsh qemu-monitor-command`
    does); its 'return' value."""
    message = {"execute": command, **({"arguments": arguments} if arguments else {})}
    out = lab.exec(host, ["virsh", "qemu-monitor-command", vm.name, json.dumps(message)]).stdout
    return json.loads(out)["return"]


def leave_a_concluded_block_job(lab, vm):
    """Puts the source QEMU in the state a killed libvirtd 9.0 leaves it in (the issue's trace): a block job that
    QEMU still holds, concluded, and that libvirt does not show.  Made with QEMU's own commands (a mirror of the
    guest's disk into a null device, finished and never dismissed), then libvirtd restarts, as after the kill."""
    node = qmp(lab, SRC, vm, "query-block")[0]["inserted"]["node-name"]
    qmp(lab, SRC, vm, "blockdev-add", driver="null-co", **{"node-name": "leftover-target", "size": 64 * 1024 ** 2})
    qmp(lab, SRC, vm, "blockdev-mirror", device=node, target="leftover-target", sync="full",
        **{"job-id": "leftover-mirror", "auto-dismiss": False})
    deadline = time.monotonic() + 60
    while not any(j["ready"] for j in qmp(lab, SRC, vm, "query-block-jobs")):
        assert time.monotonic() < deadline, "the mirror never became ready"
        time.sleep(0.2)
    qmp(lab, SRC, vm, "block-job-cancel", device="leftover-mirror")
    while [j["status"] for j in qmp(lab, SRC, vm, "query-block-jobs")] != ["concluded"]:
        assert time.monotonic() < deadline, qmp(lab, SRC, vm, "query-block-jobs")
        time.sleep(0.2)
    lab.exec(SRC, "systemctl restart libvirtd.service")
    assert "No current block job" in lab.exec(SRC, ["virsh", "blockjob", vm.name, "vda", "--info"]).stdout


def test_a_qemu_with_a_job_libvirt_lost_is_not_migrated(lab, ansible, vm):
    """Issue 28.4: a source QEMU that holds a block job the restarted libvirtd no longer shows is refused before
    anything changes, with a hint to restart the guest cleanly or move it offline (migrating it sends an
    inconsistent RAM image).  A fresh QEMU process then migrates."""
    leave_a_concluded_block_job(lab, vm)
    before = {h: host_snapshot(lab, h) for h in (SRC, DST)}
    result = ansible.module(SRC, "kvm.migration.migrate", migrate_args(vm)).task("probe")
    print("refusal:", result.get("msg"), "| hint:", result.get("hint"))
    assert result.get("failed"), result
    assert "'leftover-mirror' in state 'concluded' that libvirt does not show" in result["msg"], result["msg"]
    assert "virsh shutdown %s" % vm.name in result["hint"] and "live: false" in result["hint"], result["hint"]
    assert {h: host_snapshot(lab, h) for h in (SRC, DST)} == before
    assert_in_one_place(vm, SRC)
    # The hint's remedy: a fresh QEMU process (the lab guest has no ACPI shutdown, so destroy stands in for it).
    lab.exec(SRC, f"virsh destroy {vm.name} && virsh start {vm.name}")
    vm.wait_ticks(SRC, 2)
    moved = ansible.module(SRC, "kvm.migration.migrate", migrate_args(vm)).task("probe")
    assert not moved.get("failed"), moved.get("msg")
    assert vm.state(DST) == "running" and vm.state(SRC) in ("absent", "shut off")


def test_source_libvirtd_killed_then_the_recommended_rerun(lab, ansible, vm):
    """Issue 28.4: SIGKILL of the source's libvirtd (the daemon only: QEMU lives on) at about a third of the job;
    systemd starts it again.  Whatever the first run reports, following its hint ends with the guest running in
    exactly one place, unharmed: the re-run it recommends migrates a clean QEMU, or it is refused with the
    restart hint when the QEMU kept what libvirt lost."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.3)
    lab.exec(SRC, "kill -KILL $(systemctl show -p MainPID --value libvirtd.service)")
    result = ansible.wait(proc).task("probe")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    if not result.get("failed"):
        assert_in_one_place(vm, DST)
        return
    assert result["guest_location"] == "source", result
    assert_in_one_place(vm, SRC)
    assert leftovers(lab, vm) == [], result["msg"]
    if "source_qemu" in result:
        assert "virsh shutdown" in result["hint"], result["hint"]
        again = ansible.module(SRC, "kvm.migration.migrate", migrate_args(vm)).task("probe")
        assert again.get("failed") and "virsh shutdown" in again["hint"], again
        assert_in_one_place(vm, SRC)
    else:
        assert "run the same task again" in result["hint"], result["hint"]
        assert_rerun_converges(lab, ansible, vm)


SOURCE_DAEMON_UNITS = "libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd.service"


def test_source_libvirtd_stopped_as_the_migration_completes(lab, ansible, vm):
    """Issue 28.6: the source's libvirtd stops (and stays down) near the end of the job; its graceful shutdown
    lets the job finish, so the guest runs on the destination.  The module cannot reach the source again: it asks
    the destination before it calls the guest's place unknown, and warns off the stale source copy.  Once the
    source is back, the re-run removes the stale definition and images."""
    proc = start_migration(ansible, vm, bandwidth=4)
    wait_progress(lab, vm, proc, 0.9)
    lab.exec(SRC, f"systemctl stop {SOURCE_DAEMON_UNITS}")
    try:
        result = ansible.wait(proc).task("probe")
    finally:
        lab.exec(SRC, f"systemctl start {SOURCE_DAEMON_UNITS}")
    print("fault result:", result.get("msg"), "| hint:", result.get("hint"))
    assert result.get("failed"), result
    assert result["guest_location"] == "destination", result
    assert "the destination runs the guest" in result["msg"], result["msg"]
    assert "do not start the guest on the source" in result["hint"], result["hint"]
    assert_rerun_converges(lab, ansible, vm)
