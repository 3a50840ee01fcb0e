# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""What a running QEMU itself says about its jobs, where libvirt's view can hide it.

After its libvirtd was killed under a migration with storage copy, libvirt 9.0 cannot always clean up the
source QEMU ("Could not cancel ongoing migration"): QEMU keeps a block job or a migration that the restarted
daemon no longer shows.  Migrating that QEMU again sends an inconsistent RAM image (the guest's kernel panics on
arrival), and plain `virsh migrate` does the same.  So before a migration starts, and before a failure
recommends running it again, the source QEMU is asked directly (read-only queries through the monitor) when
libvirt may hide something: its daemon is younger than the QEMU process (it restarted while the guest ran), or
the run saw the source's connection drop.  Asking taints the domain 'custom-monitor' in libvirt's log, which is
why a guest whose QEMU libvirt has managed all along is not asked."""

from __future__ import annotations

import json
import os
import time

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt_qemu

# QEMU migration states in which a migration is still under way (query-migrate).
MIGRATION_UNDER_WAY = ("setup", "active", "device", "pre-switchover", "cancelling", "wait-unplug",
                       "postcopy-active", "postcopy-paused", "postcopy-recover", "postcopy-recover-setup")
# QEMU run states left behind by a migration that libvirt did not finish (query-status).
RUN_STATES_AFTER_MIGRATION = ("finish-migrate", "postmigrate", "inmigrate")
# How long a state that looks left over may take to clear by itself (libvirt cancelling its own jobs right after a
# failure), before it counts.
SETTLE_SECONDS = 5.0

RESTART_HINT = ("shut the guest down cleanly and start it again at a time you choose (a fresh QEMU process on the "
                "source: virsh shutdown %s, then virsh start %s), or move it offline once it is shut off "
                "(live: false); then run the task again. Do not migrate this QEMU process: its RAM image can "
                "arrive inconsistent")


# The daemons that manage QEMU processes: monolithic libvirtd, or modular virtqemud.
QEMU_DAEMONS = ("libvirtd", "virtqemud")


def _start_ticks(proc, pid):
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    with open(os.path.join(proc, str(pid), "stat")) as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[19])


def daemon_restarted_under(name, proc="/proc", run="/run/libvirt/qemu"):
    """Whether the daemon that manages `name`'s QEMU started after that QEMU did (it was restarted while the guest
    ran): True, False, or None when this host cannot tell (no pid file, another host's URI, no such process)."""
    try:
        with open(os.path.join(run, "%s.pid" % name)) as handle:
            qemu_started = _start_ticks(proc, int(handle.read().strip()))
        daemons = []
        for entry in os.listdir(proc):
            if not entry.isdigit():
                continue
            try:
                with open(os.path.join(proc, entry, "comm")) as handle:
                    if handle.read().strip() in QEMU_DAEMONS:
                        daemons.append(_start_ticks(proc, entry))
            except OSError:  # the process ended while the list was read
                continue
    except (OSError, ValueError, IndexError):
        return None
    if not daemons:
        return None
    return max(daemons) > qemu_started


def _query(dom, command):
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps({"execute": command}), 0))
    return reply.get("return")


def qemu_jobs(dom):
    """QEMU's own view: {'migration': status or None, 'block_jobs': [...], 'run_state': status}, or None when
    QEMU cannot be asked (no libvirt_qemu binding, the domain is not running, or no answer)."""
    if libvirt_qemu is None or dom is None:
        return None
    try:
        if not dom.isActive():
            return None
        migration = _query(dom, "query-migrate") or {}
        jobs = _query(dom, "query-block-jobs") or []
        status = _query(dom, "query-status") or {}
    except Exception:  # the answer is only evidence; without it libvirt's view stands
        return None
    return {
        "migration": migration.get("status"),
        "block_jobs": [{"device": j.get("device"), "type": j.get("type"), "status": j.get("status")} for j in jobs],
        "run_state": status.get("status"),
    }


def libvirt_sees_job(dom):
    """Whether libvirt itself reports a job (a migration, a save, a dump) on the domain."""
    try:
        return dom.jobInfo()[0] != 0
    except Exception:  # no job information: no job libvirt knows of
        return False


def libvirt_block_jobs(dom, targets):
    """The disk targets on which libvirt reports a block job."""
    found = []
    for target in targets:
        try:
            if dom.blockJobInfo(target, 0):
                found.append(target)
        except Exception:  # a disk libvirt cannot ask about has no job it knows of
            continue
    return found


def leftovers(jobs, libvirt_job, libvirt_block_targets):
    """What in QEMU's view libvirt does not account for: a list of sentences (empty when QEMU and libvirt
    agree).  Pure: `jobs` is qemu_jobs()' answer, the others what libvirt reports."""
    if not jobs:
        return []
    found = []
    if jobs["migration"] in MIGRATION_UNDER_WAY and not libvirt_job:
        found.append("QEMU reports a migration in state %r that libvirt does not show" % jobs["migration"])
    unknown = [j for j in jobs["block_jobs"] if not libvirt_block_targets or j["status"] == "concluded"]
    for job in unknown:
        found.append("QEMU holds a %s block job %r in state %r that libvirt does not show"
                     % (job["type"] or "block", job["device"], job["status"]))
    if jobs["run_state"] in RUN_STATES_AFTER_MIGRATION and not libvirt_job:
        found.append("QEMU's run state is %r, left by a migration libvirt did not finish" % jobs["run_state"])
    return found


def source_qemu_leftovers(dom, targets, settle=SETTLE_SECONDS, clock=time.monotonic, sleep=time.sleep):
    """The leftovers of an earlier migration in `dom`'s QEMU (see leftovers()); waits up to `settle` seconds for
    them to clear, since libvirt may still be cancelling its own jobs right after a failure."""
    deadline = clock() + settle
    while True:
        found = leftovers(qemu_jobs(dom), libvirt_sees_job(dom), libvirt_block_jobs(dom, targets))
        if not found or clock() >= deadline:
            return found
        sleep(1.0)


def restart_hint(name):
    return RESTART_HINT % (name, name)
