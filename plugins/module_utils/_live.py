# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""One live migration while it runs: the migrateToURI3 call, the monitor that steers its job, the watchdog
that enforces the completion timeout whatever libvirt does, post-copy recovery, and the diagnosis of a
failure's cause.

The migration call holds the engine's source connection for as long as the job runs.  The monitor samples
and steers the job on a connection of its own, and every call it makes is bounded in time: a control call that
libvirt never answers (seen: migrateSetMaxDowntime waiting forever behind the job) costs one bounded wait
and a fresh connection, never the timeouts."""

from __future__ import annotations

import threading
import time

from ansible_collections.kvm.migration.plugins.module_utils._domain import state_detail
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    HINTS,
    OperationFailed,
    error_kind,
    error_text,
    libvirt,
)
from ansible_collections.kvm.migration.plugins.module_utils._postcopy import PostcopyRecovery

# jobStats() keys copied into progress samples, with the name used in the result.
SAMPLE_KEYS = {
    "data_total": "data_total",
    "data_processed": "data_processed",
    "data_remaining": "data_remaining",
    "memory_processed": "memory_processed",
    "memory_remaining": "memory_remaining",
    "disk_processed": "disk_processed",
    "disk_remaining": "disk_remaining",
    "memory_bps": "memory_bps",
    "disk_bps": "disk_bps",
    "memory_dirty_rate": "memory_dirty_rate",
    "memory_iteration": "iteration",
    "auto_converge_throttle": "throttle",
}
MAX_SAMPLES = 240
# The longest one monitor call (job statistics, a control call, a lookup) may take.
CALL_TIMEOUT = 10.0
# After the completion timeout: abort through a fresh connection once WATCHDOG_GRACE has passed, and stop
# waiting for the migration call after twice that.
WATCHDOG_GRACE = 60.0
# A failure after this long without any byte moving is explained as a lost link.
STALL_EVIDENCE_SECONDS = 5.0


class CallTimedOut(Exception):
    """A libvirt call that did not return in time (it keeps waiting in its own daemon thread)."""


def bounded(what, call, *args, timeout=None):
    """call(*args) in a daemon thread; its result, its exception, or CallTimedOut after `timeout` s (default
    CALL_TIMEOUT)."""
    timeout = CALL_TIMEOUT if timeout is None else timeout
    box = {}

    def target():
        try:
            box["value"] = call(*args)
        except Exception as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="libvirt-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CallTimedOut("%s did not return within %.0f s" % (what, timeout))
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Monitor:
    """The job of one domain seen through a connection of its own; reopened when a call times out."""

    def __init__(self, client, uuid):
        self.base = client
        self.uuid = uuid
        self.client = None
        self.dom = None

    def _domain(self):
        if self.dom is None:
            client = self.base.twin("source (monitor)")
            bounded("connect to the source for monitoring", client.open)
            self.client = client
            self.dom = bounded("look up the domain on the source", client.lookup_domain_by_uuid, self.uuid)
        return self.dom

    def call(self, what, method, *args):
        """dom.<method>(*args) on the monitor connection, bounded; a timeout drops the connection."""
        try:
            dom = self._domain()
            if dom is None:
                return None
            return bounded(what, getattr(dom, method), *args)
        except CallTimedOut:
            self.reset()
            raise

    def reset(self):
        client, self.client, self.dom = self.client, None, None
        if client is not None:
            try:
                bounded("close the monitor connection", client.close, timeout=2)
            except Exception:  # a connection that hangs is left to its daemon thread
                pass

    close = reset


class LiveRun(PostcopyRecovery):
    """Run one live migration under the controller's steering; afterwards, explain its outcome."""

    def __init__(self, source, dest, request, controller, progress):
        self.source = source
        self.dest = dest
        self.request = request
        self.controller = controller
        self.progress = progress
        self.aborted_by = None
        # Why this run aborted the job: 'completion_timeout', 'progress_timeout' or 'watchdog' (None: it did not).
        self.abort_reason = None
        # 'failed' or 'cancelled' when a sample caught the source's job in that end state (it lasts well under a
        # second, but it is the only trace: libvirt may report the migration's end as a closed connection).
        self.job_end_seen = None
        self.call_returned = True
        self._uuid = None
        self._run_started = None

    @property
    def events(self):
        return self.controller.events

    def event(self, t, name, reason):
        self.events.append((round(t, 1), name, reason))

    def elapsed(self):
        """Seconds since the migration call started, the clock of every event."""
        return time.monotonic() - self._run_started if self._run_started is not None else 0.0

    # ------------------------------------------------------------------ run
    def run(self, dom, plan):
        """Returns the migration call's error (None on success).  Sets aborted_by and call_returned."""
        outcome = {}
        policy = self.controller.policy
        timeout = policy.completion_timeout

        def worker():
            try:
                dom.migrateToURI3(self.request.dest_uri, plan.params, plan.flags)
            except Exception as exc:  # the monitor decides what the failure means
                outcome["error"] = exc

        self._uuid = dom.UUIDString()
        monitor = Monitor(self.source, self._uuid)
        thread = threading.Thread(target=worker, name="migrate-%s" % self.request.name, daemon=True)
        started = self._run_started = time.monotonic()
        thread.start()
        downtime_set = False
        forced_abort = False
        try:
            while thread.is_alive():
                thread.join(self.request.poll_interval)
                if not thread.is_alive():
                    break
                elapsed = time.monotonic() - started
                stats = self.sample(monitor, elapsed)
                if stats and not downtime_set:
                    downtime_set = self.act(monitor, elapsed, "set_downtime", policy.downtime_schedule[0], thread)
                # Without a sample the controller still runs: the completion timeout counts wall time.
                for action, value, reason in self.controller.decide(elapsed, stats or {}):
                    self.act(monitor, elapsed, action, value, thread)
                    if action == "abort" and self.aborted_by is None:
                        self.aborted_by = "the migration was aborted: %s" % reason
                        self.abort_reason = "%s_timeout" % (self.controller.aborted_for or "completion")
                if not timeout or self.controller.postcopy_started:
                    continue
                if elapsed > timeout + WATCHDOG_GRACE and not forced_abort:
                    forced_abort = True
                    self._force_abort(elapsed, timeout)
                if elapsed > timeout + 2 * WATCHDOG_GRACE:
                    self.call_returned = False
                    self.event(elapsed, "gave up waiting", "the migration call did not return %.0f s after the "
                               "completion timeout" % (elapsed - timeout))
                    return OperationFailed(
                        "the migration call did not return %.0f s after the completion timeout of %.0f s, although "
                        "the job was aborted" % (elapsed - timeout, timeout))
        finally:
            monitor.close()
        return outcome.get("error")

    def _force_abort(self, elapsed, timeout):
        """The watchdog: the completion timeout passed and the job still runs.  Abort it through a connection
        that nothing else uses."""
        reason = "still running %.0f s after the completion timeout of %.0f s" % (elapsed - timeout, timeout)
        self.aborted_by = self.aborted_by or "the migration was aborted by the watchdog: %s" % reason
        self.abort_reason = self.abort_reason or "watchdog"
        watchdog = Monitor(self.source, self._uuid)
        try:
            watchdog.call("abort the job", "abortJob")
            self.event(elapsed, "abort", "watchdog: %s" % reason)
        except Exception as exc:  # recorded; the give-up step follows
            self.event(elapsed, "failed abort", "watchdog: %s" % error_text(exc))
        finally:
            watchdog.close()

    def act(self, monitor, elapsed, action, value, thread=None):
        """Carry out one of the controller's decisions; returns whether it worked."""
        method, args = {
            "set_downtime": ("migrateSetMaxDowntime", (int(value or 0), 0)),
            "postcopy": ("migrateStartPostCopy", (0,)),
            "pause": ("suspend", ()),
            "abort": ("abortJob", ()),
        }[action]
        try:
            monitor.call(action, method, *args)
            return True
        except Exception as exc:  # the job may have just finished; the outcome tells
            # A call that failed because the job has just ended is no news (a successful run has no such event).
            job_running = thread.is_alive() if thread is not None else monitor.dom is not None
            if job_running and not _job_gone(monitor):
                self.event(elapsed, "failed %s" % action, error_text(exc))
            return False

    def sample(self, monitor, elapsed):
        """Record a progress sample; returns the raw job statistics (None when no job runs or no answer)."""
        try:
            stats = monitor.call("read the job statistics", "jobStats", 0)
        except CallTimedOut as exc:
            self.event(elapsed, "monitor", "%s; reconnecting" % exc)
            return None
        except Exception:  # the domain may have just left
            return None
        if not stats or stats.get("type", 0) == 0:
            return None
        end = {getattr(libvirt, "VIR_DOMAIN_JOB_FAILED", 4): "failed",
               getattr(libvirt, "VIR_DOMAIN_JOB_CANCELLED", 5): "cancelled"}.get(stats.get("type"))
        if end:
            self.job_end_seen = end
            return None
        sample = {"t": round(elapsed, 2)}
        for key, name in SAMPLE_KEYS.items():
            if key in stats:
                sample[name] = stats[key]
        self.progress.append(sample)
        if len(self.progress) > MAX_SAMPLES:
            # Keep the first sample and thin out the rest evenly.
            self.progress[:] = self.progress[:1] + self.progress[2::2]
        return stats

    # ------------------------------------------------------------------ diagnosis
    def diagnose(self, src, error, dest_lost=False, source_lost=False):
        """The cause of a failed migration, from everything that can tell: the call's error, the source job's
        own error message, the state of the connection to the destination, and whether data still moved."""
        causes = []
        text = error_text(error) if error is not None else ""
        if self.aborted_by:
            causes.append(self.aborted_by)
        errmsg = None
        if src is not None:
            try:
                stats = bounded("read the failed job's statistics", src.jobStats,
                                getattr(libvirt, "VIR_DOMAIN_JOB_STATS_COMPLETED", 1))
                errmsg = (stats or {}).get("errmsg")
            except Exception:  # older libvirt keeps no completed statistics of a failed job
                errmsg = None
        if errmsg and errmsg.strip() not in text:
            causes.append("QEMU/libvirt on the source: %s" % errmsg.strip())
        if source_lost:
            causes.append("the connection to the source %s was lost under the migration (its libvirtd stopped or "
                          "restarted; libvirt then cancels an outgoing migration)" % self.source.uri)
        stall = self.stalled_for()
        dest_alive = self.dest.alive()
        if dest_lost or not dest_alive:
            causes.append("the connection to the destination %s was lost (its libvirtd stopped, or the link failed)%s"
                          % (self.request.dest_uri, "" if dest_alive else "; it still does not answer"))
        if stall >= STALL_EVIDENCE_SECONDS and not self.aborted_by:
            if dest_alive and not dest_lost:
                # The control connection to the destination's libvirtd held: only the migration stream broke.
                causes.append("no data moved for %.0f s before the failure, while the destination's libvirtd kept "
                              "answering: the migration stream broke (the destination's QEMU exited, or the data "
                              "path was cut or blocked)" % stall)
            else:
                causes.append("no data moved for %.0f s before the failure: the link to the destination was lost or "
                              "blocked" % stall)
        for role, client in (("source", self.source), ("destination", self.dest)):
            last = client.last_error()
            # Only errors about the migration or the connection: a lookup's "not found" explains nothing.
            relevant = (last and "not found" not in last.lower() and "kvm-migration-" not in last
                        and ("migrat" in last.lower() or error_kind(RuntimeError(last)) == "connection"))
            if relevant and last not in text and all(last not in c for c in causes):
                causes.append("last libvirt error on the %s connection: %s" % (role, last))
        kind = error_kind(error) if error is not None else "other"
        if source_lost or dest_lost or not dest_alive or stall >= STALL_EVIDENCE_SECONDS:
            kind = "connection"
        if (self.job_end_seen == "cancelled" or kind == "aborted") and not self.abort_reason:
            # Seen either by the monitor (the job's end state) or in libvirt's error ("canceled by client").
            causes.append("the source's job was cancelled, not by this run (virsh domjobabort on the source, or "
                          "another client)")
            kind = "aborted"
        elif (kind == "connection" and dest_alive and not (source_lost or dest_lost or self.abort_reason)
              and stall < STALL_EVIDENCE_SECONDS):
            # With PERSIST_DEST over SSH, libvirt replaces the job's own error by the end of its connection to the
            # destination (seen for a domjobabort): say what the evidence does show.
            causes.append("libvirt reported only that its connection to the destination closed, which it does "
                          "whenever a migration ends early; the destination's libvirtd still answers and data moved "
                          "until the end, so the job was stopped on one of the hosts (virsh domjobabort, or a QEMU "
                          "that exited)")
            kind = "interrupted"
        return {"error": text, "causes": causes, "kind": kind, "dest_reachable": dest_alive,
                "aborted_by": self.abort_reason, "source_lost": source_lost}

    def stalled_for(self):
        """Seconds at the end of the run during which data_processed did not change."""
        samples = [s for s in self.progress if "data_processed" in s]
        if len(samples) < 2:
            return 0.0
        last = samples[-1]
        since = last
        for sample in reversed(samples[:-1]):
            if sample["data_processed"] != last["data_processed"]:
                break
            since = sample
        return last["t"] - since["t"]


def failure_hint(diagnosis, cause, name="<name>"):
    """What to do next, for the cause actually found (the guest is on the source)."""
    if "Postcopy is not supported" in cause or "userfaultfd" in cause:
        return ("set vm.unprivileged_userfaultfd=1 on the destination (hypervisor_prep_postcopy: true), or do not "
                "use postcopy")
    if diagnosis.get("aborted_by"):
        return ("the guest changes memory faster than the link moves it: allow postcopy (postcopy: on_demand), "
                "raise max_downtime, state link_speed, or move it offline (live: false); then run the task again")
    if diagnosis["kind"] == "aborted":
        return ("the job was cancelled outside this run (virsh domjobabort on the source, or another tool); the "
                "guest stays on the source: run the same task again to migrate it")
    if diagnosis.get("source_lost"):
        return ("the source's libvirtd stopped or restarted under the migration (systemctl status libvirtd there); "
                "once it runs, run the same task again")
    if diagnosis["kind"] == "interrupted":
        return ("see why the job stopped in /var/log/libvirt/qemu/%s.log and libvirtd's journal on both hosts; the "
                "guest stays on the source: run the same task again to migrate it" % name)
    if diagnosis["kind"] == "connection":
        return ("check the link and the daemons between the hosts (libvirt's port and 49152-49215/tcp for the "
                "migration data), then run the same task again")
    return HINTS.get(diagnosis["kind"])


def _job_gone(monitor):
    """Whether the domain's job has ended (or the domain left), asked once more after a failed control call."""
    try:
        info = monitor.call("read the job", "jobInfo")
    except Exception:  # the domain left the source, or no answer: not a control failure worth reporting
        return True
    return not info or info[0] == 0


def describe_states(src, dst):
    """A short 'source: running, destination: absent' for messages."""
    return "source: %s, destination: %s" % (
        state_detail(src) if src is not None else "absent", state_detail(dst) if dst is not None else "absent")
