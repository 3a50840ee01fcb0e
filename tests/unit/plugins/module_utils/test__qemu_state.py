"""The source QEMU's own view of its jobs (issue 28.4).  libvirt's test driver has no QEMU monitor, so the
decision is tested as the pure function it is, with QEMU's answers as recorded from query-migrate,
query-block-jobs and query-status; the daemon-restart probe reads a /proc tree made here (the real layout of
/proc/PID/stat, with a process name holding spaces and parentheses)."""

from __future__ import annotations

import pytest

from ansible_collections.kvm.migration.plugins.module_utils import _qemu_state
from ansible_collections.kvm.migration.plugins.module_utils._qemu_state import (
    daemon_restarted_under,
    leftovers,
    source_qemu_leftovers,
)

CLEAN = {"migration": None, "block_jobs": [], "run_state": "running"}
CONCLUDED = {"device": "drive-virtio-disk0", "type": "mirror", "status": "concluded"}


def test_a_qemu_that_agrees_with_libvirt_has_no_leftovers():
    assert leftovers(CLEAN, False, []) == []
    # A failed or cancelled earlier migration is history, not a job.
    assert leftovers(dict(CLEAN, migration="failed"), False, []) == []
    assert leftovers(dict(CLEAN, migration="cancelled"), False, []) == []
    assert leftovers(None, False, []) == [], "no answer from QEMU: libvirt's view stands"


def test_a_block_job_libvirt_does_not_show_is_a_leftover():
    found = leftovers(dict(CLEAN, block_jobs=[CONCLUDED]), False, [])
    assert found == ["QEMU holds a mirror block job 'drive-virtio-disk0' in state 'concluded' that libvirt does "
                     "not show"]
    running = dict(CONCLUDED, status="ready")
    assert leftovers(dict(CLEAN, block_jobs=[running]), False, []), "libvirt shows no block job at all"
    assert leftovers(dict(CLEAN, block_jobs=[running]), False, ["vda"]) == [], "libvirt's own job (a blockcopy)"
    assert leftovers(dict(CLEAN, block_jobs=[CONCLUDED]), False, ["vda"]), "a concluded job is never libvirt's"


@pytest.mark.parametrize("status", ["active", "cancelling", "device", "postcopy-paused"])
def test_a_migration_libvirt_does_not_show_is_a_leftover(status):
    assert leftovers(dict(CLEAN, migration=status), False, []) == [
        "QEMU reports a migration in state %r that libvirt does not show" % status]
    assert leftovers(dict(CLEAN, migration=status), True, []) == [], "libvirt's own running job"


def test_a_run_state_left_by_an_unfinished_migration_is_a_leftover():
    assert leftovers(dict(CLEAN, run_state="postmigrate"), False, []) == [
        "QEMU's run state is 'postmigrate', left by a migration libvirt did not finish"]


def test_a_leftover_that_clears_by_itself_within_the_settle_time_does_not_count(monkeypatch):
    answers = [dict(CLEAN, migration="cancelling"), dict(CLEAN, migration="cancelling"), CLEAN]
    monkeypatch.setattr(_qemu_state, "qemu_jobs", lambda dom: answers.pop(0))
    monkeypatch.setattr(_qemu_state, "libvirt_sees_job", lambda dom: False)
    monkeypatch.setattr(_qemu_state, "libvirt_block_jobs", lambda dom, targets: [])
    now = [0.0]
    assert source_qemu_leftovers(None, ["vda"], settle=5, clock=lambda: now[0],
                                 sleep=lambda s: now.__setitem__(0, now[0] + s)) == []
    assert answers == [] and now[0] == 2.0


def test_a_leftover_that_stays_counts_after_the_settle_time(monkeypatch):
    monkeypatch.setattr(_qemu_state, "qemu_jobs", lambda dom: dict(CLEAN, block_jobs=[CONCLUDED]))
    monkeypatch.setattr(_qemu_state, "libvirt_sees_job", lambda dom: False)
    monkeypatch.setattr(_qemu_state, "libvirt_block_jobs", lambda dom, targets: [])
    now = [0.0]
    found = source_qemu_leftovers(None, ["vda"], settle=5, clock=lambda: now[0],
                                  sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert len(found) == 1 and now[0] == 5.0


def make_proc(tmp_path, processes, qemu_pid=None, name="vm1"):
    proc, run = tmp_path / "proc", tmp_path / "run"
    proc.mkdir()
    run.mkdir()
    for pid, (comm, start) in processes.items():
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "comm").write_text(comm + "\n")
        fields = ["S"] + ["0"] * 18 + [str(start)] + ["0"] * 30
        (proc / str(pid) / "stat").write_text("%d (%s) %s\n" % (pid, comm, " ".join(fields)))
    if qemu_pid is not None:
        (run / ("%s.pid" % name)).write_text("%d\n" % qemu_pid)
    return str(proc), str(run)


def test_a_daemon_started_after_the_guest_has_restarted_under_it(tmp_path):
    proc, run = make_proc(tmp_path, {10: ("libvirtd", 5000), 20: ("qemu-system-x86 (x) y", 4000)}, qemu_pid=20)
    assert daemon_restarted_under("vm1", proc=proc, run=run) is True


def test_a_daemon_older_than_the_guest_has_managed_it_all_along(tmp_path):
    proc, run = make_proc(tmp_path, {10: ("virtqemud", 3000), 20: ("qemu-system-x86", 4000), 30: ("bash", 9000)},
                          qemu_pid=20)
    assert daemon_restarted_under("vm1", proc=proc, run=run) is False


def test_without_a_pid_file_or_a_daemon_the_host_cannot_tell(tmp_path):
    proc, run = make_proc(tmp_path, {10: ("libvirtd", 3000), 20: ("qemu-system-x86", 4000)})
    assert daemon_restarted_under("vm1", proc=proc, run=run) is None
    (tmp_path / "b").mkdir()
    proc, run = make_proc(tmp_path / "b", {20: ("qemu-system-x86", 4000)}, qemu_pid=20)
    assert daemon_restarted_under("vm1", proc=proc, run=run) is None
