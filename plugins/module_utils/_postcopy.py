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

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import error_text, is_error, libvirt

# Post-copy recovery: how long to wait for QEMU to finish or fail on its own, and to retry the resume.
POSTCOPY_RECOVERY_BUDGET = 180.0
# ... and while QEMU still moves pages (the job runs, or a resume is refused as "still running"), wait on, up to
# this long in all: giving up cannot bring the split memory back to one host, waiting can.
POSTCOPY_RUNNING_LIMIT = 600.0


def still_running(exc):
    """A post-copy resume refused because QEMU's migration has not failed (libvirt gave it up first)."""
    return is_error(exc, "VIR_ERR_OPERATION_INVALID") and "still running" in error_text(exc)


class PostcopyRecovery:
    """Wait for, resume and read the state of a failed post-copy migration; needs the run's connections, its
    request and its events."""

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
        while time.monotonic() < deadline:
            time.sleep(delay)
            found = self.postcopy_state(uuid)
            if found == "finished":
                self.event(self.elapsed(), "postcopy finished", "QEMU completed the migration on its own after: %s"
                           % error_text(error))
                return None, found
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

    def postcopy_state(self, uuid):
        """'finished' (the guest runs on the destination only), 'running' (the job still moves pages), 'failed'
        (paused in a failed post-copy: resume it), or 'unknown' (a host cannot be reached)."""
        self._reconnect_both()
        try:
            src = self.source.lookup_domain_by_uuid(uuid)
            dst = self.dest.lookup_domain_by_uuid(uuid)
            src_state = src.state() if src is not None else None
            dst_state = dst.state() if dst is not None else None
            src_job = src.jobInfo()[0] if src is not None and src.isActive() else 0
        except Exception:  # a host does not answer
            return "unknown"
        paused_failed = getattr(libvirt, "VIR_DOMAIN_PAUSED_POSTCOPY_FAILED", 13)
        running_failed = getattr(libvirt, "VIR_DOMAIN_RUNNING_POSTCOPY_FAILED", 11)
        source_gone = src_state is None or src_state[0] == libvirt.VIR_DOMAIN_SHUTOFF
        if dst_state is not None and dst_state[0] == libvirt.VIR_DOMAIN_RUNNING and dst_state[1] != running_failed \
                and source_gone:
            return "finished"
        if src_state is not None and src_state[0] == libvirt.VIR_DOMAIN_PAUSED and src_state[1] == paused_failed:
            return "failed"
        if src_job not in (0, getattr(libvirt, "VIR_DOMAIN_JOB_NONE", 0)):
            return "running"
        if dst_state is not None and dst_state[1] == running_failed:
            return "failed"
        return "unknown"
