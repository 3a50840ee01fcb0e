# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The domain is on the destination, or on its way there in a job this run did not start: wait for that job
(attach), then converge what the desired state still asks (persist, undefine the stale source, clean up the
source's images) and report where the guest is."""

from __future__ import annotations

import os
import time

from ansible_collections.kvm.migration.plugins.module_utils._convergence import Controller, Policy
from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, describe, state_name
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    InvalidRequest,
    OperationFailed,
    is_error,
    libvirt,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._live import LiveRun, Monitor
from ansible_collections.kvm.migration.plugins.module_utils._plan import GIB, MIN_DEFAULT_TIMEOUT
from ansible_collections.kvm.migration.plugins.module_utils._volume import VolumeSpec


class Arrival:
    """Attach to a running migration and finish a domain that is already on the destination.

    A part of Migration (see _migration.py), which holds the connections, the request, the stagers and
    the live run."""

    # ------------------------------------------------------------------ attach
    def _attach(self, result, located, check_mode, started):
        """A migration to the destination was already running: wait for it (with the timeouts of this request),
        then converge as for a domain that is already there (undefine the stale source, clean up if asked)."""
        req = self.request
        src = located.source_domain
        result.update(changed=True, operation="attach",
                      reason="a migration of %s to the destination was already running; this run waited for it "
                             "instead of starting another" % req.name)
        if check_mode:
            result["state"] = self._final_state(src, located.dest_domain)
            return result
        uuid = src.UUIDString()
        total = (located.running_job or {}).get("data_total", 0)
        timeout = req.timeout or max(MIN_DEFAULT_TIMEOUT, int(req.completion_timeout * total / GIB))
        # Someone else chose that job's flags: post-copy may not be enabled for it, so a timeout action can only
        # pause the guest or abort the job.  The downtime limit is this request's (a fixed limit, no steps).
        self.controller = Controller(Policy(
            completion_timeout=timeout, completion_action=req.completion_action,
            progress_timeout=req.progress_timeout, progress_action=req.progress_action,
            downtime_schedule=[req.schedule()[0]], step_interval=req.downtime_step_interval, postcopy="off"))
        live = LiveRun(self.source, self.dest, req, self.controller, self.progress)
        monitor = Monitor(self.source, uuid)
        waited = time.monotonic()
        downtime_set = False
        try:
            while True:
                time.sleep(req.poll_interval)
                elapsed = time.monotonic() - waited
                stats = live.sample(monitor, elapsed)
                if stats is None:
                    if monitor.dom is not None:
                        break  # the job ended
                    if elapsed > timeout + 60:
                        break  # the monitor cannot reach the job at all: report what the hosts say
                    continue
                if not downtime_set:
                    # The promise (at most max_downtime of pause) holds for a job this run did not start, too.
                    downtime_set = live.act(monitor, elapsed, "set_downtime", self.controller.policy.downtime_schedule[0])
                for action, value, _reason in self.controller.decide(elapsed, stats):
                    live.act(monitor, elapsed, action, value)
        finally:
            monitor.close()
        src = self.source.lookup_domain_by_uuid(uuid)
        dst = self.dest.lookup_domain_by_uuid(uuid)
        events = [{"t": round(t, 1), "event": e, "reason": r} for t, e, r in self.controller.events]
        if src is not None and src.isActive():
            if self.controller.paused and state_name(src) == "paused":
                with libvirt_errors("resume %s on the source after the migration it waited for failed" % req.name):
                    src.resume()
            raise OperationFailed(
                "The migration of %s that was already running ended without moving the guest: it keeps running on "
                "the source. This run made no change; run it again to migrate" % req.name,
                details={"guest_location": "source", "events": events, "progress": self.progress,
                         "state": self._final_state(src, dst)})
        if dst is None or not dst.isActive():
            raise OperationFailed(
                "The migration of %s that was already running ended, and the guest runs neither on the source nor on "
                "the destination. Nothing was deleted" % req.name,
                details={"guest_location": "unknown", "events": events, "state": self._final_state(src, dst)})
        if self.controller.paused and state_name(dst) == "paused":
            with libvirt_errors("resume %s on the destination (it was paused to finish the migration)" % req.name):
                dst.resume()
        stats = self._completed_stats(src, dst)
        done = self._converge_done(dict(result), src, dst, check_mode=False)
        result["state"] = done["state"]
        if done.get("operation", "none") != "none":
            result["operation"] = "attach+" + done["operation"]
        if "source_disks_removed" in done:
            result["source_disks_removed"] = done["source_disks_removed"]
        result.update(events=events, stats=stats, summary=summarize(stats, time.monotonic() - started),
                      progress=self.progress)
        return result

    def _completed_stats(self, src, dst):
        stats = {}
        for dom in (dst, src):  # the source's view has the disk figures; it wins on overlap
            if dom is None:
                continue
            try:
                stats.update(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
            except Exception:  # not every side keeps completed statistics
                pass
        return {k: v for k, v in stats.items() if isinstance(v, (int, float))}

    def _converge_done(self, result, src, dst, check_mode):
        """The domain already runs on the destination: remove a stale source definition and, with
        source_cleanup, source images the destination no longer needs.  Otherwise nothing to do."""
        req = self.request
        operations = []
        if req.persistent and dst.isActive() and not dst.isPersistent():
            # A transient domain (another client migrated it without persisting it): persistence is part of
            # the desired state.
            operations.append("persist")
            if not check_mode:
                with libvirt_errors("define %s persistently on the destination" % req.name):
                    self.dest.define_domain(dst.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE))
        if src is not None and req.undefine_source and src.UUIDString() == dst.UUIDString():
            operations.append("undefine_source")
            if not check_mode:
                self._undefine_source(src)
                src = None
        if req.source_cleanup:
            removable = self._cleanup_source(dst.UUIDString(), self._source_leftovers(dst), dry_run=check_mode)
            state = self._cleanup_source_state(dst.UUIDString(), dry_run=check_mode)
            if removable or state:
                operations.append("cleanup_source")
                result["source_disks_removed"] = removable
                result["source_state_removed"] = state
        if not check_mode:
            # The domain is where an interrupted run was taking it: that run's journals protect nothing now.
            with libvirt_errors("read the definition of %s on the destination" % req.name):
                spec = DomainSpec.from_xml(dst.XMLDesc(0))
            directories = [os.path.dirname(d.source) for d in spec.disks if d.is_local_image]
            directories += [os.path.dirname(p) for p in (spec.nvram, spec.tpm_state) if p]
            journals = self.stager.remove_journals(directories, dst.UUIDString())
            if journals:
                result["stale_removed"] = result.get("stale_removed", []) + journals
        if operations:
            result.update(changed=True, operation="+".join(operations),
                          reason="the domain is on the destination; %s" % " and ".join(
                              {"persist": "it was not defined persistently there",
                               "undefine_source": "its stale definition remained on the source",
                               "cleanup_source": "its old images (or host state) remained on the source"}[o] for o in operations))
        else:
            result.update(operation="none", reason="domain %s already %s on the destination"
                          % (req.name, "runs" if dst.isActive() else "is defined"))
        result["state"] = self._final_state(src, dst)
        return result

    def _source_leftovers(self, dst):
        """Images the destination's domain uses that also sit, as separate files, on the source, and that match
        the destination's copy (format, virtual size, backing file): what a verified cleanup may delete."""
        with libvirt_errors("read the definition of %s on the destination" % self.request.name):
            disks = [d for d in DomainSpec.from_xml(dst.XMLDesc(0)).disks if d.is_local_image]
        leftovers = []
        for disk in disks:
            facts = self.source_stager.facts(disk.source)
            if facts is None:
                continue
            spec = VolumeSpec(path=disk.source, format=facts["format"], capacity=facts["capacity"],
                              backing_path=facts["backing_path"], backing_format=facts["backing_format"])
            if not self.stager.check(spec):
                leftovers.append(spec)
        return leftovers

    def _cleanup_source(self, uuid, volumes, dry_run=False):
        """Delete copied source images once the destination checked out.  Kept: an image some other domain on
        the source still uses, and anything in a directory both hosts share (it is the destination's image)."""
        in_use = set()
        domains = self.source.list_domains()
        for dom in domains:
            if dom.UUIDString() != uuid:
                in_use.update(d.source for d in DomainSpec.from_xml(dom.XMLDesc(0)).disks)
        removed = []
        shared = {}
        for vol in volumes:
            directory = os.path.dirname(vol.path)
            if directory not in shared:
                try:
                    shared[directory] = self.source_stager.sees_marker_of(self.stager, directory)
                except InvalidRequest:
                    shared[directory] = False
            if vol.path in in_use or shared[directory]:
                continue
            if dry_run or self.source_stager.remove(vol.path):
                removed.append(vol.path)
        return removed

    def _cleanup_source_state(self, uuid, dry_run=False):
        """The variable store and the emulated TPM's state the source keeps of the domain (its undefine keeps
        them), once the destination holds its own: the files of a guest that lives elsewhere now.  Kept when the
        destination has none, and in a directory both hosts share."""
        dst = self.dest.lookup_domain_by_uuid(uuid)
        if dst is None:
            return []
        with libvirt_errors("read the definition of %s on the destination" % self.request.name):
            spec = DomainSpec.from_xml(dst.XMLDesc(0))
        removed = []
        for path in (spec.nvram, spec.tpm_state):
            if not path or self.stager.kind(path) is None or self.source_stager.kind(path) is None:
                continue
            try:
                if self.source_stager.sees_marker_of(self.stager, os.path.dirname(path)):
                    continue
            except InvalidRequest:
                continue
            if dry_run or self.source_stager.remove_tree(path):
                removed.append(path)
        return removed

    def _undefine_source(self, dom):
        if dom is None or dom.isActive() or not dom.isPersistent():
            return
        # Keep NVRAM and TPM state (never delete data); drop flags this libvirt does not know, most
        # recent first.  A plain undefine refuses a domain with NVRAM, which is the safe outcome.
        candidates = [
            ("VIR_DOMAIN_UNDEFINE_MANAGED_SAVE", "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
             "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA", "VIR_DOMAIN_UNDEFINE_KEEP_NVRAM",
             "VIR_DOMAIN_UNDEFINE_KEEP_TPM"),
            ("VIR_DOMAIN_UNDEFINE_MANAGED_SAVE", "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
             "VIR_DOMAIN_UNDEFINE_KEEP_NVRAM"),
            (),
        ]
        for names in candidates:
            flags = 0
            for name in names:
                flags |= getattr(libvirt, name, 0)
            try:
                dom.undefineFlags(flags)
                return
            except Exception as exc:
                if names and is_error(exc, "VIR_ERR_INVALID_ARG", "VIR_ERR_NO_SUPPORT"):
                    continue
                with libvirt_errors("undefine %s on the source %s" % (self.request.name, self.source.uri)):
                    raise

    def _final_state(self, src, dst):
        return {
            "source": dict(describe(src), uri=self.source.uri),
            "destination": dict(describe(dst), uri=self.request.dest_uri),
        }


def summarize(stats, wall_seconds):
    """The handful of numbers an operator reads first."""
    return {
        "wall_time_s": round(wall_seconds, 2),
        "time_elapsed_ms": stats.get("time_elapsed"),
        "downtime_ms": stats.get("downtime"),
        "data_total_bytes": stats.get("data_total"),
        "data_processed_bytes": stats.get("data_processed"),
        "memory_processed_bytes": stats.get("memory_processed"),
        "disk_processed_bytes": stats.get("disk_processed"),
        "memory_dirty_rate_pages_s": stats.get("memory_dirty_rate"),
        "iterations": stats.get("memory_iteration"),
        "memory_bps": stats.get("memory_bps"),
    }
