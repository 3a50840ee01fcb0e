# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""After a failed live migration: reach both hosts again, find where the guest runs, remove what this run made
on the destination when the guest stayed on the source, and raise with the real cause and a hint that fits the
state found.  Also the check of the arrived domain and its volumes."""

from __future__ import annotations

import os

from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, state_detail, state_name
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    ConnectionFailed,
    KvmMigrationError,
    OperationFailed,
    error_text,
    is_error,
    libvirt,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._live import describe_states, failure_hint
from ansible_collections.kvm.migration.plugins.module_utils._placement import qemu_leftovers
from ansible_collections.kvm.migration.plugins.module_utils._postcopy import incoming_job_ended
from ansible_collections.kvm.migration.plugins.module_utils._qemu_state import restart_hint

# After a failure: how long to try to reach a host whose connection was lost, before reporting.
RECONNECT_SECONDS = 60
# A destination directory with less free space than this after a failure explains it (a qcow2 cluster needs 64 KiB,
# QEMU's write-out buffers more).
FULL_BELOW_BYTES = 1024 ** 2


def cleanup_hint(left, name):
    """What to do when the guest stayed on the source but not all of this run's leftovers could be removed."""
    steps = []
    if any(what == "domain" for what, _why in left):
        steps.append("on the destination, remove the half-made incoming domain (it is not the guest, which runs on "
                     "the source): virsh destroy %s; virsh undefine %s" % (name, name))
    steps.append("run the same task again: it finds this run's remaining volumes in its journal on the destination "
                 "and removes them before it migrates")
    return "; then ".join(steps)


class Recovery:
    """Find the guest after a failure, clean up, and verify an arrival.

    A part of Migration (see _migration.py), which holds the connections, the request, the stagers and
    the live run."""

    def _recover(self, uuid, error, was_paused, strategy, postcopy_found=None):
        """After a failed migration: find where the guest runs, make sure that is exactly one place, remove what
        this run made on the destination when the guest is on the source, then raise with the cause."""
        req = self.request
        live = self.live
        if not live.call_returned:
            # The engine's source connection is still held by the migration call: look through a fresh one.
            self.source = self.source.twin("source")
        source_lost = live.call_returned and not self.source.alive()
        dest_lost = not self.dest.alive()
        if not self._reach_source():
            self._source_unreachable(uuid, error, strategy)
        dest_reachable = self._reach_destination()
        # Looked up first: a connection that looked open but is closed shows here, and is reopened once.
        dst, dest_reachable, reopened = self._destination_domain(uuid) if dest_reachable else (None, False, False)
        dest_lost = dest_lost or reopened
        src = self.source.lookup_domain_by_uuid(uuid)
        diagnosis = live.diagnose(src, error, dest_lost=dest_lost, source_lost=source_lost)
        full = self._full_directories() if dest_reachable else []
        if full:
            # QEMU's own words for a failed disk write vary by version; the free space does not.  A stalled
            # stream is then the consequence, not a second cause.
            diagnosis["causes"] = [c for c in diagnosis["causes"] if not c.startswith("no data moved")]
            diagnosis["causes"].append("the destination ran out of space in %s" % ", ".join(full))
            diagnosis["kind"] = "space"
        cause = diagnosis["error"] or "no error reported"
        if diagnosis["causes"]:
            cause = "%s (%s)" % (cause, "; ".join(diagnosis["causes"]))
        details = {"cause": diagnosis, "strategy": strategy, "progress": self.progress,
                   "events": [{"t": round(t, 1), "event": e, "reason": r} for t, e, r in self.controller.events]}
        if self.controller.postcopy_started:
            hints = {
                "running": "QEMU was still moving the guest's pages when this run stopped waiting: watch it with "
                           "virsh domjobinfo %s on the source and destroy neither side" % req.name,
                "failed": "fix the link, then resume: virsh migrate --postcopy --postcopy-resume %s %s"
                          % (req.name, req.dest_uri),
                "completed": "the destination runs the guest and QEMU finished on both hosts, but the source could "
                             "not be stopped: virsh destroy %s on the source, then run this task again" % req.name,
                "settled": "the destination finished the migration and runs the guest, the source's QEMU could not "
                           "be asked: if virsh qemu-monitor-command %s '{\"execute\": \"query-migrate\"}' on the "
                           "source says completed, virsh destroy %s there; otherwise destroy neither side"
                           % (req.name, req.name),
            }
            if postcopy_found in ("completed", "settled"):
                message = ("Post-copy migration of %s to %s finished on the destination, which runs the guest, but "
                           "the source still holds its paused copy after %.0f s of recovery (%s): %s. Nothing was "
                           "destroyed or deleted on either host")
                location = "destination (a paused copy on the source)"
            else:
                message = ("Post-copy migration of %s to %s failed and could not be resumed in %.0f s of recovery "
                           "(%s): %s. The guest's memory is split between the two hosts, so nothing was destroyed or "
                           "deleted on either")
                location = "split (post-copy)"
            raise OperationFailed(
                message % (req.name, req.dest_uri, live.postcopy_waited, describe_states(src, dst), cause),
                hint=hints.get(postcopy_found, "a host cannot be reached: bring it back, then run this task again; it "
                               "finds the guest and resumes or reports"),
                details=dict(details, guest_location=location, postcopy_state=postcopy_found,
                             state=self._final_state(src, dst)))
        if src is not None and src.isActive():
            if state_name(src) == "paused" and not was_paused:
                with libvirt_errors("resume %s on the source after the failed migration" % req.name):
                    src.resume()
            if not dest_reachable:
                kept = list(self.stager.created)
                raise OperationFailed(
                    "Migration of %s to %s failed: %s. The guest keeps running on the source. The destination "
                    "cannot be reached, so what this run made there stays until the next run: %s"
                    % (req.name, req.dest_uri, cause, ", ".join(kept) or "nothing"),
                    hint="bring the destination back, then run the same task again: it recognises and removes this "
                         "run's leftovers (its journal) and migrates",
                    details=dict(details, guest_location="source", kept_on_destination=kept,
                                 state=self._final_state(src, None)))
            cleaned, left = self._clean_destination(dst)
            if left:
                raise OperationFailed(
                    "Migration of %s to %s failed: %s. The guest keeps running on the source; removed from the "
                    "destination: %s; left there: %s" % (req.name, req.dest_uri, cause, ", ".join(cleaned) or "nothing",
                                                         "; ".join(message for _what, message in left)),
                    hint=cleanup_hint(left, req.name),
                    details=dict(details, guest_location="source", removed_from_destination=cleaned,
                                 kept_on_destination=[p for p in self.stager.created if p not in cleaned],
                                 cleanup_failed=[message for _what, message in left],
                                 state=self._final_state(src, self._destination_domain(uuid)[0])))
            # A re-run is what the hint recommends: first make sure the source's QEMU is fit to migrate again.
            left_in_qemu = qemu_leftovers(self.source, src, req.name, self.spec_for(src), suspect=source_lost)
            if left_in_qemu:
                raise OperationFailed(
                    "Migration of %s to %s failed: %s. The guest keeps running on the source; removed from the "
                    "destination: %s. Its QEMU process still holds what the failed migration left, which libvirt "
                    "no longer shows (%s), so it must not be migrated again"
                    % (req.name, req.dest_uri, cause, ", ".join(cleaned) or "nothing", "; ".join(left_in_qemu)),
                    hint=restart_hint(req.name),
                    details=dict(details, guest_location="source", removed_from_destination=cleaned,
                                 source_qemu=left_in_qemu,
                                 state=self._final_state(src, self._destination_domain(uuid)[0])))
            raise OperationFailed(
                "Migration of %s to %s failed: %s. The guest keeps running on the source; "
                "removed from the destination: %s" % (req.name, req.dest_uri, cause, ", ".join(cleaned) or "nothing"),
                hint=failure_hint(diagnosis, cause, req.name),
                details=dict(details, guest_location="source", removed_from_destination=cleaned,
                             state=self._final_state(src, self._destination_domain(uuid)[0])))
        if dst is not None and dst.isActive() and state_name(dst) == "running":
            # The guest arrived although the call reported an error (for example a lost
            # connection in the finish phase): continue with verification.
            return
        raise OperationFailed(
            "Migration of %s to %s failed and the guest is not running on the source nor on the destination (%s): "
            "%s. Nothing was deleted; disks on both hosts are kept for recovery"
            % (req.name, req.dest_uri, describe_states(src, dst), cause),
            hint="start it where its disks are current: on the source (virsh start %s) unless the destination "
                 "reports it paused there" % req.name,
            details=dict(details, guest_location="unknown", kept_on_destination=list(self.stager.created),
                         state=self._final_state(src, dst)))

    def _source_unreachable(self, uuid, error, strategy):
        """The source does not answer after a failure: ask the destination before calling the guest's place
        unknown.  A guest running there (the migration completed while the source's libvirtd went away) is on the
        destination; its stale source definition waits for the source to come back."""
        req = self.request
        details = {"strategy": strategy, "kept_on_destination": list(self.stager.created),
                   "events": [{"t": round(t, 1), "event": e, "reason": r} for t, e, r in self.controller.events]}
        lost = ("the connection to the source %s was lost and it did not come back within %d s"
                % (self.source.uri, RECONNECT_SECONDS))
        dst, reachable, _reopened = self._destination_domain(uuid) if self._reach_destination() else (None, False, False)
        running = reachable and dst is not None and dst.isActive() and state_name(dst) == "running"
        if running and not incoming_job_ended(dst):
            raise OperationFailed(
                "Migration of %s to %s failed: %s; %s. The destination runs the guest (%s) while its incoming "
                "migration has not ended: the guest's memory may still be split between the hosts, so nothing was "
                "destroyed or deleted on either" % (req.name, req.dest_uri, error_text(error), lost, state_detail(dst)),
                hint="bring the source's libvirtd back at once (systemctl start libvirtd there) and destroy neither "
                     "side; then run the same task again: it finds where the guest runs",
                details=dict(details, guest_location="split (post-copy)" if self.controller.postcopy_started else
                             "destination (arriving)", source_reachable=False,
                             state={"source": "unknown", "destination": state_name(dst)}))
        if running:
            raise OperationFailed(
                "Migration of %s to %s: %s; the destination runs the guest (%s), so the migration completed there. "
                "The source's definition could not be removed and its images stay; nothing was deleted on either "
                "host" % (req.name, req.dest_uri, lost, state_detail(dst)),
                hint="do not start the guest on the source: its disks are older than the destination's. Bring the "
                     "source's libvirtd back (systemctl status libvirtd there), then run the same task again: it "
                     "finds the guest on the destination and removes the stale source definition",
                details=dict(details, guest_location="destination", source_reachable=False,
                             state={"source": "unknown", "destination": state_name(dst)}))
        where = ("the destination does not run it either (%s)" % (state_detail(dst) if dst is not None else "absent")
                 if reachable else "the destination does not answer either")
        raise OperationFailed(
            "Migration of %s to %s failed: %s; %s, so where the guest runs is not known. Nothing was deleted on "
            "either host" % (req.name, req.dest_uri, error_text(error) + "; " + lost, where),
            hint="bring the source's libvirtd back (systemctl status libvirtd), then run the same task again: it "
                 "finds the guest and removes this run's leftovers (its journal) if the guest stayed on the source",
            details=dict(details, guest_location="unknown", source_reachable=False, destination_reachable=reachable))

    @staticmethod
    def spec_for(dom):
        with libvirt_errors("read the definition of %s" % dom.name()):
            return DomainSpec.from_xml(dom.XMLDesc(0))

    def _full_directories(self):
        """The destination directories of this run's volumes that are full now ('dir (12 KiB free)')."""
        full = []
        for directory in sorted({os.path.dirname(path) for path in self.stager.created}):
            try:
                free = self.stager.available(directory)
            except KvmMigrationError:  # the directory's pool cannot tell; no evidence either way
                continue
            if free < FULL_BELOW_BYTES:
                full.append("%s (%d KiB free)" % (directory, free // 1024))
        return full

    def _reach_source(self):
        """The source's connection, reopened when it was lost (its libvirtd restarted under the migration)."""
        return self._reach(self.source, self.source_stager)

    def _clean_destination(self, dst):
        """Remove what this run made on the destination: (what was removed, [(what, why) could not be]).  A
        failure here never hides where the guest runs."""
        cleaned, left = [], []
        if dst is not None:
            try:
                cleaned.append(self._remove_half_made(dst))
            except KvmMigrationError as exc:
                left.append(("domain", exc.msg))
        try:
            cleaned += self.stager.rollback()
        except KvmMigrationError as exc:
            left.append(("volumes", exc.msg))
        self.stager.close()  # also drops a transient pool a restarted libvirtd brought back
        return cleaned, left

    def _remove_half_made(self, dst):
        """Destroy and undefine the incoming domain; one that vanishes meanwhile (a restarted libvirtd or the
        incoming QEMU's exit removes it on its own) counts as removed."""
        name = self.request.name
        with libvirt_errors("remove the half-made domain %s from the destination" % name):
            try:
                if dst.isActive():
                    dst.destroy()
                if dst.isPersistent():
                    dst.undefine()
            except libvirt.libvirtError as exc:
                if not is_error(exc, "VIR_ERR_NO_DOMAIN"):
                    raise
                return "domain %s (gone by itself)" % name
        return "domain %s" % name

    def _destination_domain(self, uuid):
        """(the domain on the destination or None, whether the destination answers, whether its connection had to
        be reopened).  A connection that still looked open but was closed under us (CI: the destination's
        libvirtd killed, "client socket is closed") is reopened once before the destination counts as
        unreachable."""
        reopened = False
        for attempt in (1, 2):
            try:
                return self.dest.lookup_domain_by_uuid(uuid), True, reopened
            except ConnectionFailed:
                if attempt == 2 or not self._reach(self.dest, self.stager, reopen=True):
                    break
                reopened = True
        return None, False, reopened

    def _reach_destination(self):
        """The destination's connection, reopened when it was lost (a restarted libvirtd comes back within
        seconds)."""
        return self._reach(self.dest, self.stager)

    @staticmethod
    def _reach(client, stager, reopen=False):
        """Whether the host answers, after reopening its connection if it was lost (or, with `reopen`, known to
        be closed although it looks open); the stager working through that connection forgets its old pool
        handles."""
        if not reopen and client.alive():
            return True
        try:
            client.reconnect(within=RECONNECT_SECONDS)
        except KvmMigrationError:
            return False
        if stager.client is client:  # not when the source was replaced by a fresh twin (the call still holds it)
            stager.forget_connection()
        return True

    def _verify_destination(self, uuid, volumes, active=True):
        req = self.request
        dst = self.dest.lookup_domain_by_uuid(uuid)
        problems = []
        if dst is None:
            problems.append("the domain is absent")
        else:
            if bool(dst.isActive()) != active:
                problems.append("the domain is %s" % state_detail(dst))
            if req.persistent and not dst.isPersistent():
                problems.append("the domain is not persistent")
            with libvirt_errors("read the definition of %s on the destination" % req.name):
                in_use = {d.source for d in DomainSpec.from_xml(dst.XMLDesc(0)).disks}
            for vol in volumes:
                if vol.path not in in_use:
                    problems.append("the domain does not use %s" % vol.path)
                problems += self.stager.check(vol)
        if problems:
            self._arrival_failed(uuid, dst, problems, active)
        return dst

    def _arrival_failed(self, uuid, dst, problems, active):
        """The migration reported success but the destination is not as it must be.  Say where the guest runs and
        which host holds its newest disks: after a live switch-over that is the destination, so the source's
        copy must not be started."""
        req = self.request
        src = self.source.lookup_domain_by_uuid(uuid)
        runs_on_destination = dst is not None and dst.isActive()
        newest = "the destination" if active else "both hosts (the copy was verified before the definition moved)"
        if runs_on_destination:
            location = "destination"
            hint = ("the guest runs on the destination; fix what the message names there (the source definition is "
                    "kept: do not start it, its disks are older than the destination's)")
        elif active:
            location = "nowhere (newest disks on the destination)"
            start = ("virsh start %s on the destination" % req.name if dst is not None else
                     "define it on the destination from the source's definition (virsh dumpxml %s on the source) "
                     "and start it there" % req.name)
            hint = ("%s: its disks hold the guest's last writes. Do not start the copy on the source: its disks "
                    "stopped at the switch-over and are older" % start)
        else:
            location = "source (shut off)"
            hint = ("the source's definition and images are kept as they were: check the destination's definition, "
                    "then run the task again")
        raise OperationFailed(
            "Migration of %s reported success, but on the destination %s: %s. The guest runs %s; its newest disks "
            "are on %s. The source definition is kept"
            % (req.name, req.dest_uri, "; ".join(problems),
               "there" if runs_on_destination else "on neither host", newest),
            hint=hint,
            details={"guest_location": location, "newest_disks": "destination" if active else "both",
                     "state": self._final_state(src, dst)})
