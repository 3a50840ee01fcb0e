"""The monitor and watchdog of a live migration (defect 14: a control call that libvirt never answers must not
stop the timeouts).  A real libvirt cannot be made to hang on cue, so these tests use a fake domain whose calls
block like the one gdb showed; tests/faults proves the same on real hosts with a guest that cannot converge."""

from __future__ import annotations

import threading
import time

import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _live
from ansible_collections.kvm.migration.plugins.module_utils._convergence import Controller, Policy
from ansible_collections.kvm.migration.plugins.module_utils._live import LiveRun, bounded, CallTimedOut
from ansible_collections.kvm.migration.plugins.module_utils._plan import MigrationRequest


class HangingDomain:
    """migrateToURI3 runs until abortJob; migrateSetMaxDowntime never returns (as seen in gdb)."""

    def __init__(self, abort_works=True):
        self.aborted = threading.Event()
        self.never = threading.Event()
        self.abort_works = abort_works
        self.abort_calls = 0

    def UUIDString(self):
        return "00000000-0000-0000-0000-000000000001"

    def migrateToURI3(self, *_args):
        if self.abort_works:
            self.aborted.wait()
            raise RuntimeError("operation aborted: migration out job: canceled by client")
        self.never.wait()

    def jobStats(self, _flags):
        return {"type": 2, "data_total": 1000, "data_processed": 10, "data_remaining": 990}

    def jobInfo(self):
        return [2]

    def migrateSetMaxDowntime(self, *_args):
        self.never.wait()

    def abortJob(self):
        self.abort_calls += 1
        if self.abort_works:
            self.aborted.set()
        else:
            self.never.wait()


class FakeClient:
    def __init__(self, dom):
        self.dom = dom
        self.uri = "qemu:///system"

    def twin(self, _role=None):
        return self

    def open(self):
        return self

    def close(self):
        pass

    def lookup_domain_by_uuid(self, _uuid):
        return self.dom

    def alive(self):
        return True

    def last_error(self):
        return None


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(_live, "CALL_TIMEOUT", 0.3)
    monkeypatch.setattr(_live, "WATCHDOG_GRACE", 0.5)


class Plan:
    params, flags = {}, 0


def live_run(dom, timeout=1.0):
    request = MigrationRequest(name="vm1", dest_uri="qemu+ssh://hv2/system", poll_interval=0.1)
    controller = Controller(Policy(completion_timeout=timeout, completion_action="abort", progress_timeout=0,
                                   downtime_schedule=[300]))
    client = FakeClient(dom)
    return LiveRun(client, client, request, controller, [])


def test_bounded_returns_raises_and_times_out():
    assert bounded("add", lambda a, b: a + b, 1, 2) == 3
    with pytest.raises(ZeroDivisionError):
        bounded("divide", lambda: 1 / 0)
    with pytest.raises(CallTimedOut, match="wait did not return within 0 s"):
        bounded("wait", threading.Event().wait, timeout=0.2)


def test_a_hanging_control_call_does_not_stop_the_completion_timeout():
    dom = HangingDomain()
    run = live_run(dom)
    started = time.monotonic()
    error = run.run(dom, Plan())
    took = time.monotonic() - started
    assert error is not None and "aborted" in str(error)
    assert run.aborted_by.startswith("the migration was aborted: not finished within the completion timeout")
    assert run.abort_reason == "completion_timeout"
    assert took < 4, took
    assert any(e[1] == "failed set_downtime" for e in run.events)
    assert run.call_returned


def test_the_watchdog_stops_waiting_for_a_call_that_never_returns():
    dom = HangingDomain(abort_works=False)
    run = live_run(dom)
    error = run.run(dom, Plan())
    assert not run.call_returned
    assert "did not return" in str(error)
    assert dom.abort_calls >= 2  # the controller's abort, then the watchdog's through a fresh connection
    assert [e[1] for e in run.events].count("gave up waiting") == 1
    # The controller's abort came first; its reason stands.
    assert run.abort_reason == "completion_timeout"


def test_stall_evidence_names_a_lost_link():
    run = live_run(HangingDomain())
    run.progress[:] = [{"t": t, "data_processed": min(t, 10) * 100} for t in range(0, 30)]
    assert run.stalled_for() == 19
    found = run.diagnose(None, RuntimeError("internal error: client socket is closed"))
    assert found["kind"] == "connection"
    assert any("no data moved for 19 s" in c for c in found["causes"])


def test_the_hint_follows_who_aborted_the_job():
    """A structured reason, not words in the message: our timeout gets the convergence advice; an abort that
    came from outside (domjobabort) gets 'run it again'; a message merely mentioning a timeout gets neither."""
    ours = {"kind": "aborted", "aborted_by": "progress_timeout"}
    assert "faster than the link" in _live.failure_hint(ours, "operation aborted")
    theirs = {"kind": "aborted", "aborted_by": None}
    assert "cancelled outside this run" in _live.failure_hint(theirs, "operation aborted: canceled by client")
    other = {"kind": "other", "aborted_by": None}
    assert _live.failure_hint(other, "connection timeout; aborted by peer") is None


def test_a_job_cancelled_elsewhere_is_named_and_a_masked_end_is_explained():
    """libvirt may report a domjobabort as 'End of file while reading data' (its closed connection to the
    destination).  A sample that caught the job 'cancelled' names the abort; without it, the live connections
    and the moving data rule out a lost link."""
    run = live_run(HangingDomain())
    run.progress[:] = [{"t": t, "data_processed": t * 100} for t in range(0, 10)]
    eof = RuntimeError("End of file while reading data: : Input/output error")
    masked = run.diagnose(None, eof)
    assert masked["kind"] == "interrupted", masked
    assert "stopped on one of the hosts" in masked["causes"][-1]
    assert "run the same task again" in _live.failure_hint(masked, masked["error"])
    run.job_end_seen = "cancelled"
    named = run.diagnose(None, eof)
    assert named["kind"] == "aborted" and "not by this run" in named["causes"][-1]
    # A lost destination stays a connection failure, whatever the samples saw.
    run.job_end_seen = None
    assert run.diagnose(None, eof, dest_lost=True)["kind"] == "connection"


def test_an_abort_libvirt_reports_as_cancelled_by_client_is_named_without_a_seen_end(monkeypatch):
    """The monitor may miss the job's 'cancelled' state; libvirt's own error (VIR_ERR_OPERATION_ABORTED, "canceled
    by client") then names it.  A plain exception stands in for the libvirtError, whose code it cannot carry."""
    monkeypatch.setattr(_live, "error_kind", lambda exc: "aborted")
    run = live_run(HangingDomain())
    run.progress[:] = [{"t": t, "data_processed": t * 100} for t in range(0, 10)]
    found = run.diagnose(None, RuntimeError("operation aborted: migration out: canceled by client"))
    assert found["kind"] == "aborted", found
    assert any("cancelled, not by this run" in c for c in found["causes"]), found


class StillRunningDomain:
    """A source in failed post-copy whose QEMU stream outlived the cut: libvirt refuses every resume."""

    def __init__(self):
        self.resumes = 0

    def migrateToURI3(self, *_args):
        import libvirt
        self.resumes += 1
        exc = libvirt.libvirtError("Requested operation is not valid: QEMU reports migration is still running")
        exc.err = (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, str(exc), 2, "", "", "", 0, 0)
        raise exc


@pytest.mark.parametrize("completes_after, expected", [(300, "finished"), (None, "failed")])
def test_postcopy_recovery_waits_on_while_qemu_still_runs(monkeypatch, instant_clock, completes_after, expected):
    """CI saw QEMU finish a post-copy job more than 180 s after libvirt had marked it failed: the recovery waits
    on while resumes are refused as "still running", up to POSTCOPY_RUNNING_LIMIT, and then gives up."""
    from ansible_collections.kvm.migration.plugins.module_utils import _postcopy

    clock = instant_clock
    dom = StillRunningDomain()
    run = live_run(dom)
    started = clock.now
    run._run_started = started - 30  # the migration call began 30 s before post-copy failed
    monkeypatch.setattr(run, "postcopy_state", lambda _uuid: (
        "finished" if completes_after is not None and clock.now - started >= completes_after else "failed"))
    error, found = run.recover_postcopy(dom, Plan(), RuntimeError("post-copy failed"))
    assert found == expected
    if expected == "finished":
        assert error is None
        assert clock.now - started < _postcopy.POSTCOPY_RUNNING_LIMIT
        # Events carry the migration's clock, not 0.
        finished = [t for t, name, _reason in run.events if name == "postcopy finished"]
        assert finished and finished[0] >= 30 + completes_after, run.events
    else:
        assert "still running" in str(error)
        assert _postcopy.POSTCOPY_RUNNING_LIMIT <= clock.now - started <= _postcopy.POSTCOPY_RUNNING_LIMIT + 5
    assert dom.resumes > 10  # asked again every few seconds, not backed off to 20 s
