# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Post-copy recovery: after the switch the guest's memory is split between the hosts, so a failure there
is waited out and resumed, never torn down.  A part of LiveRun (see _live.py)."""

from __future__ import annotations

import time

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    OperationFailed,
    error_text,
    is_error,
    libvirt,
    libvirt_errors,
    qemu_migration_status,
)

# Post-copy recovery: how long to wait for QEMU to finish or fail on its own, and to retry the resume.
POSTCOPY_RECOVERY_BUDGET = 180.0
# ... and while QEMU still moves pages (the job runs, or a resume is refused as "still running"), wait on, up to
# this long in all: giving up cannot bring the split memory back to one host, waiting can.
POSTCOPY_RUNNING_LIMIT = 600.0


def still_running(exc):
    """A post-copy resume refused because QEMU's migration has not failed (libvirt gave it up first)."""
    return is_error(exc, "VIR_ERR_OPERATION_INVALID") and "still running" in error_text(exc)


# QEMU's migration states (query-migrate) in which pages still move: wait, never resume.
QEMU_MOVING = ("setup", "active", "device", "pre-switchover", "postcopy-active", "postcopy-recover",
               "postcopy-recover-setup", "wait-unplug")
# libvirt's job types for a job that still runs (BOUNDED, UNBOUNDED); COMPLETED, FAILED, CANCELLED have ended.
JOB_RUNNING = (1, 2)


class PostcopyRecovery:
    """Wait for, resume and read the state of a failed post-copy migration; needs the run's connections, its
    request and its events."""

    # How long the last recovery waited (for the failure message).
    postcopy_waited = 0.0

    def recover_postcopy(self, uuid, plan, error):
        """A post-copy migration failed after the switch: the guest's memory is split between the hosts, so
        neither side may be destroyed.  Wait until QEMU has finished or failed on its own, resume when it
        failed (with backoff, within POSTCOPY_RECOVERY_BUDGET), and report what was found.
        Returns (error or None, the state found)."""
        flag = getattr(libvirt, "VIR_MIGRATE_POSTCOPY_RESUME", 0)
        started = time.monotonic()
        deadline = started + POSTCOPY_RECOVERY_BUDGET
        delay = 2.0
        attempts = 0
        found = "unknown"
        completed_seen = 0
        while time.monotonic() < deadline:
            time.sleep(delay)
            found = self.postcopy_state(uuid)
            self.postcopy_waited = time.monotonic() - started
            if found == "finished":
                self.event(self.elapsed(), "postcopy finished", "QEMU completed the migration on its own after: %s"
                           % error_text(error))
                return None, found
            if found == "completed":
                # Both QEMUs finished, the destination's libvirt too, but the source's missed QEMU's last event
                # (it came while a resume attempt held the job): seen twice, finish the source as libvirt would.
                completed_seen += 1
                if completed_seen >= 2:
                    try:
                        self._stop_completed_source(uuid)
                    except Exception as exc:  # keep the reason; the next round looks again
                        error = exc
                        continue
                    self.event(self.elapsed(), "postcopy finished",
                               "QEMU completed the migration on both hosts after: %s; libvirt on the source missed "
                               "the end, so this run stopped the source's finished QEMU" % error_text(error))
                    return None, "finished"
                continue
            completed_seen = 0
            if found == "running":
                # QEMU still moves pages; it may finish or fail by itself
                deadline = self._wait_on(deadline, started)
                continue
            if found == "failed" and flag:
                attempts += 1
                try:
                    src = self.source.lookup_domain_by_uuid(uuid)
                    src.migrateToURI3(self.request.dest_uri, plan.params, plan.flags | flag)
                    self.event(self.elapsed(), "postcopy resumed", "attempt %d after: %s" % (attempts, error_text(error)))
                    return None, "finished"
                except Exception as exc:  # keep the last reason, back off
                    error = exc
                    if still_running(exc):
                        # libvirt gave the job up but QEMU's stream outlived the cut: it may still complete.
                        deadline = self._wait_on(deadline, started)
                    else:
                        delay = min(delay * 2, 20.0)
                    self._reconnect_both()
        self.postcopy_waited = time.monotonic() - started
        return error, found

    @staticmethod
    def _wait_on(deadline, started):
        return max(deadline, min(started + POSTCOPY_RUNNING_LIMIT, time.monotonic() + 60.0))

    def _reconnect_both(self):
        for client in (self.source, self.dest):
            if not client.alive():
                try:
                    client.reconnect(within=0)
                except Exception:  # still unreachable; the next round tries again
                    pass

    def _stop_completed_source(self, uuid):
        """Stop the source's QEMU once it has sent everything (asked again right before)."""
        src = self.source.lookup_domain_by_uuid(uuid)
        if src is None or not src.isActive():
            return
        if qemu_migration_status(src) != "completed":
            raise OperationFailed("the source's QEMU no longer reports the migration completed")
        with libvirt_errors("stop the finished source of %s" % self.request.name):
            src.destroy()

    def postcopy_state(self, uuid):
        """'finished' (the guest runs on the destination only), 'completed' (QEMU finished on both hosts and the
        destination's libvirt too, but the source is still paused: libvirt missed the end there), 'running'
        (pages still move), 'failed' (paused in a failed post-copy: resume it), 'settled' (the destination
        finished, the source's QEMU cannot be asked), or 'unknown' (a host cannot be reached)."""
        self._reconnect_both()
        try:
            src = self.source.lookup_domain_by_uuid(uuid)
            dst = self.dest.lookup_domain_by_uuid(uuid)
            src_state = src.state() if src is not None else None
            dst_state = dst.state() if dst is not None else None
            src_active = src is not None and src.isActive()
            src_job = src.jobInfo()[0] if src_active else 0
        except Exception:  # a host does not answer
            return "unknown"
        qemu = qemu_migration_status(src) if src_active else None
        paused_failed = getattr(libvirt, "VIR_DOMAIN_PAUSED_POSTCOPY_FAILED", 13)
        running_failed = getattr(libvirt, "VIR_DOMAIN_RUNNING_POSTCOPY_FAILED", 11)
        dest_runs = dst_state is not None and dst_state[0] == libvirt.VIR_DOMAIN_RUNNING and \
            dst_state[1] != running_failed
        if dest_runs and not src_active:
            return "finished"
        if dest_runs and incoming_job_ended(dst):
            return "completed" if qemu == "completed" else "settled" if qemu is None else "running"
        if qemu in QEMU_MOVING or qemu == "completed":
            # (completed on the source only: the destination still takes the last pages)
            return "running"
        if qemu == "postcopy-paused":
            return "failed"
        if src_state is not None and src_state[0] == libvirt.VIR_DOMAIN_PAUSED and src_state[1] == paused_failed:
            return "failed"
        if qemu is None and src_job in JOB_RUNNING:
            return "running"
        if dst_state is not None and dst_state[1] == running_failed:
            return "failed"
        return "unknown"


def incoming_job_ended(dst):
    """Whether the destination's libvirt has finished the incoming migration (while it runs, or after it failed,
    libvirt keeps the job and refuses to report it: "available only on the source host")."""
    try:
        return dst.jobInfo()[0] not in JOB_RUNNING
    except Exception:
        return False
