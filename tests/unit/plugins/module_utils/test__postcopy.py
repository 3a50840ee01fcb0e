"""Post-copy recovery reads libvirt's and QEMU's views of a failed post-copy and acts only on what it finds.
The states CI met (QEMU finished by itself while libvirt on the source had marked the job failed and missed the
end) cannot be produced on cue on real hosts, so these tests use fake domains that report them;
tests/faults/test_faults.py::test_link_cut_during_postcopy cuts a real link."""

from __future__ import annotations

import libvirt
import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _postcopy
from ansible_collections.kvm.migration.plugins.module_utils._convergence import Controller, Policy
from ansible_collections.kvm.migration.plugins.module_utils._live import LiveRun
from ansible_collections.kvm.migration.plugins.module_utils._plan import MigrationRequest

PAUSED_POSTCOPY_FAILED = (libvirt.VIR_DOMAIN_PAUSED, 13)
RUNNING_MIGRATED = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED)
INCOMING_JOB = object()  # the destination's libvirt still holds the incoming migration


class FakeDomain:
    def __init__(self, state, job=0):
        self._state = state
        self.job = job
        self.destroyed = 0
        self.resumes = 0

    def state(self):
        return self._state

    def isActive(self):
        return self._state[0] != libvirt.VIR_DOMAIN_SHUTOFF

    def jobInfo(self):
        if self.job is INCOMING_JOB:
            raise libvirt.libvirtError("Operation not supported: migration statistics are available only on the "
                                       "source host")
        return [self.job] + [0] * 11

    def destroy(self):
        self.destroyed += 1
        self._state = (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)

    def migrateToURI3(self, *_args):
        self.resumes += 1
        exc = libvirt.libvirtError("Requested operation is not valid: QEMU reports migration is still running")
        exc.err = (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, str(exc), 2, "", "", "", 0, 0)
        raise exc


class FakeClient:
    def __init__(self, dom):
        self.dom = dom

    def lookup_domain_by_uuid(self, _uuid):
        return self.dom

    def alive(self):
        return True


class Plan:
    params, flags = {}, 0


def recovery(monkeypatch, clock, src, dst, qemu_status):
    """A LiveRun between fake hosts whose source QEMU answers query-migrate with `qemu_status` (a str, or a
    callable of the source domain)."""
    monkeypatch.setattr(_postcopy, "qemu_migration_status",
                        qemu_status if callable(qemu_status) else lambda dom: None if not dom.isActive() else qemu_status)
    request = MigrationRequest(name="vm1", dest_uri="qemu+ssh://hv2/system", poll_interval=0.1)
    controller = Controller(Policy(completion_timeout=1, completion_action="abort", progress_timeout=0,
                                   downtime_schedule=[300]))
    run = LiveRun(FakeClient(src), FakeClient(dst), request, controller, [])
    run._run_started = clock.now
    return run


def test_a_completion_libvirt_missed_on_the_source_is_finished(monkeypatch, instant_clock):
    """CI: the link came back, QEMU completed on both hosts and the destination's libvirt finished, but the
    source's libvirt missed the end (its event came while a resume attempt held the job): the source stays
    paused for ever.  The recovery recognises it, stops the finished source QEMU once, and resumes nothing."""
    src = FakeDomain(PAUSED_POSTCOPY_FAILED, job=libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
    dst = FakeDomain(RUNNING_MIGRATED)
    run = recovery(monkeypatch, instant_clock, src, dst, "completed")
    started = instant_clock.now
    assert run.postcopy_state("u") == "completed"
    error, found = run.recover_postcopy("u", Plan(), RuntimeError("Lost connection to destination host"))
    assert (error, found) == (None, "finished")
    assert src.destroyed == 1 and src.resumes == 0 and dst.destroyed == 0
    assert instant_clock.now - started < 10  # seen twice, a few seconds apart, not waited out
    assert any(name == "postcopy finished" and "missed the end" in reason for _t, name, reason in run.events)
    assert run.postcopy_state("u") == "finished"


@pytest.mark.parametrize("qemu, dest_job, expected", [
    ("postcopy-active", INCOMING_JOB, "running"),    # the stream outlived the cut: wait, never resume
    ("postcopy-recover", INCOMING_JOB, "running"),
    ("completed", INCOMING_JOB, "running"),          # the destination still takes the last pages
    ("postcopy-paused", INCOMING_JOB, "failed"),     # the one state a resume can help
    ("completed", 0, "completed"),
    ("postcopy-active", 0, "running"),
    (None, 0, "settled"),                            # QEMU cannot be asked: report, destroy nothing
    (None, INCOMING_JOB, "failed"),                  # libvirt's view alone, as before
])
def test_the_state_comes_from_qemu_and_both_libvirts(monkeypatch, instant_clock, qemu, dest_job, expected):
    src = FakeDomain(PAUSED_POSTCOPY_FAILED, job=libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
    dst = FakeDomain(RUNNING_MIGRATED, job=dest_job)
    run = recovery(monkeypatch, instant_clock, src, dst, qemu)
    assert run.postcopy_state("u") == expected


def test_an_ended_source_job_is_not_a_running_one(monkeypatch, instant_clock):
    """jobInfo's COMPLETED, FAILED and CANCELLED types are ended jobs (only BOUNDED and UNBOUNDED run)."""
    src = FakeDomain((libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY), job=libvirt.VIR_DOMAIN_JOB_COMPLETED)
    dst = FakeDomain((libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY), job=INCOMING_JOB)
    run = recovery(monkeypatch, instant_clock, src, dst, None)
    assert run.postcopy_state("u") == "unknown"
    src.job = libvirt.VIR_DOMAIN_JOB_UNBOUNDED
    assert run.postcopy_state("u") == "running"


def test_a_source_that_stops_reporting_completed_is_not_destroyed(monkeypatch, instant_clock):
    """The source is stopped only if its QEMU still says completed right before."""
    src = FakeDomain(PAUSED_POSTCOPY_FAILED)
    dst = FakeDomain(RUNNING_MIGRATED)
    answers = iter(["completed", "completed"] + ["postcopy-active"] * 1000)
    run = recovery(monkeypatch, instant_clock, src, dst, lambda dom: next(answers) if dom.isActive() else None)
    error, found = run.recover_postcopy("u", Plan(), RuntimeError("Lost connection to destination host"))
    assert src.destroyed == 0 and src.resumes == 0
    assert found == "running" and "no longer reports the migration completed" in str(error), (error, found)
    assert run.postcopy_waited >= _postcopy.POSTCOPY_RUNNING_LIMIT
