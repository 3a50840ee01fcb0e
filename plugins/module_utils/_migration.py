# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The migration engine.

assess (where is the guest now, is the request sane) -> plan (flags, parameters, destination
volumes) -> stage the volumes -> migrate peer-to-peer while polling the job -> verify on the
destination -> undefine the source -> report.  On any failure: find where the guest runs, and if
that is the source, remove everything this run made on the destination."""

from __future__ import annotations

import dataclasses
import threading
import time

from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, describe, state_name
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    InvalidRequest,
    KvmMigrationError,
    OperationFailed,
    is_error,
    libvirt,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeSpec, VolumeStager

STORAGE_MODES = ("copy_all",)
# Nova's live_migration_completion_timeout: 800 s per GiB of RAM plus copied disk.
DEFAULT_SECONDS_PER_GIB = 800
MIN_DEFAULT_TIMEOUT = 120
GIB = 1024 ** 3
MAX_SAMPLES = 240

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
}


@dataclasses.dataclass
class MigrationRequest:
    name: str
    dest_uri: str
    storage: str = "copy_all"
    persistent: bool = True
    undefine_source: bool = True
    migrate_uri: str = ""
    disks_uri: str = ""
    bandwidth: int = 0
    timeout: int = 0
    poll_interval: float = 0.5
    source_cleanup: bool = False


@dataclasses.dataclass
class Assessment:
    """Where the guest is now, and what this run has to do about it."""

    action: str  # "none", "migrate" or "undefine_source"
    reason: str
    source_domain: object = None
    dest_domain: object = None
    spec: DomainSpec = None


@dataclasses.dataclass
class Plan:
    flags: int
    flag_names: list
    params: dict
    volumes: list
    timeout: int


class Migration:
    def __init__(self, source, dest, request):
        self.source = source
        self.dest = dest
        self.request = request
        self.stager = VolumeStager(dest)
        self.progress = []

    # ------------------------------------------------------------------ assess
    def assess(self):
        req = self.request
        if req.storage not in STORAGE_MODES:
            raise InvalidRequest("Unsupported storage mode %r (supported: %s)" % (req.storage, ", ".join(STORAGE_MODES)))
        src_uuid = self.source.host_uuid()
        dst_uuid = self.dest.host_uuid()
        if src_uuid == dst_uuid:
            raise InvalidRequest(
                "The destination %s is the same host as the source %s (libvirt host UUID %s)"
                % (req.dest_uri, self.source.uri, src_uuid),
                hint="point dest_uri at another hypervisor; cloned hosts need distinct host_uuid in libvirtd.conf",
                details={"host_uuid": src_uuid},
            )
        src = self.source.lookup_domain(req.name)
        dst = self.dest.lookup_domain(req.name)
        src_active = bool(src is not None and src.isActive())
        dst_active = bool(dst is not None and dst.isActive())
        where = "source %s: %s, destination %s: %s" % (self.source.uri, state_name(src), req.dest_uri, state_name(dst))

        if src_active and dst_active:
            raise InvalidRequest(
                "Domain %s is active on both hosts (%s); refusing to touch either" % (req.name, where),
                hint="find out which copy is authoritative and stop the other one",
            )
        if dst_active:
            stale = src is not None and req.undefine_source and src.UUIDString() == dst.UUIDString()
            if stale:
                return Assessment("undefine_source", "the domain runs on the destination; its stale definition "
                                  "remains on the source", src, dst)
            return Assessment("none", "domain %s already runs on the destination" % req.name, src, dst)
        if src is None and dst is None:
            raise InvalidRequest("Domain %s does not exist on the source %s nor on the destination %s"
                                 % (req.name, self.source.uri, req.dest_uri))
        if src is None:
            raise InvalidRequest(
                "Domain %s is defined on the destination %s but not running, and is absent from the source %s"
                % (req.name, req.dest_uri, self.source.uri),
                hint="start it on the destination if that copy is the right one",
            )
        if not src_active:
            raise InvalidRequest(
                "Domain %s is %s on the source; a live migration needs a running domain" % (req.name, state_name(src)),
                hint="start the domain first",
            )
        if dst is not None:
            raise InvalidRequest(
                "A domain named %s is already defined on the destination %s (state %s, UUID %s)"
                % (req.name, req.dest_uri, state_name(dst), dst.UUIDString()),
                hint="undefine or rename the destination's domain, or migrate to another host",
            )
        with libvirt_errors("read the definition of %s" % req.name):
            spec = DomainSpec.from_xml(src.XMLDesc(0))
        return Assessment("migrate", "domain %s runs on the source" % req.name, src, None, spec)

    # ------------------------------------------------------------------ plan
    def plan(self, assessment):
        req = self.request
        dom = assessment.source_domain
        spec = assessment.spec
        volumes = []
        for disk in spec.disks:
            if not disk.is_local_image:
                continue
            with libvirt_errors("read the size of disk %s of %s" % (disk.target, req.name)):
                capacity = dom.blockInfo(disk.target)[0]
            volumes.append((disk.target, VolumeSpec(path=disk.source, format=disk.format, capacity=capacity)))
        conflicts = [v.path for _t, v in volumes if self.stager.existing(v.path) is not None]
        if conflicts:
            raise InvalidRequest(
                "The destination %s already has files at %s; refusing to overwrite them"
                % (req.dest_uri, ", ".join(conflicts)),
                hint="if they are the images an earlier migration left behind, remove them on the destination; "
                     "source_cleanup=true removes source images after a verified migration",
                details={"conflicting_paths": conflicts},
            )

        names = ["LIVE", "PEER2PEER", "ABORT_ON_ERROR"]
        if req.persistent:
            names.append("PERSIST_DEST")
        if volumes:
            names.append("NON_SHARED_DISK")
        flags = 0
        for n in names:
            flags |= getattr(libvirt, "VIR_MIGRATE_" + n)
        params = {}
        if volumes:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [t for t, _v in volumes]
        if req.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(req.bandwidth)
        if req.migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = req.migrate_uri
        if req.disks_uri:
            params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = req.disks_uri
        timeout = req.timeout
        if not timeout:
            moved = spec.memory_kib * 1024 + sum(v.capacity for _t, v in volumes)
            timeout = max(MIN_DEFAULT_TIMEOUT, int(DEFAULT_SECONDS_PER_GIB * moved / GIB))
        return Plan(flags=flags, flag_names=[n.lower() for n in names], params=params,
                    volumes=[v for _t, v in volumes], timeout=timeout)

    # ------------------------------------------------------------------ execute
    def execute(self, check_mode=False):
        """Bring the domain to the destination.  Returns the result dict for the module."""
        try:
            return self._execute(check_mode)
        finally:
            self.stager.close()

    def _execute(self, check_mode):
        req = self.request
        started = time.monotonic()
        assessment = self.assess()
        result = {"changed": False, "name": req.name, "operation": assessment.action, "reason": assessment.reason}
        if assessment.action == "none":
            result["state"] = self._final_state(assessment.source_domain, assessment.dest_domain)
            return result
        if assessment.action == "undefine_source":
            result["changed"] = True
            if not check_mode:
                self._undefine_source(assessment.source_domain)
                assessment.source_domain = None
            result["state"] = self._final_state(assessment.source_domain, assessment.dest_domain)
            return result

        plan = self.plan(assessment)
        result.update({
            "changed": True,
            "flags": plan.flag_names,
            "storage": req.storage,
            "timeout": plan.timeout,
            "volumes": [v.as_dict() for v in plan.volumes],
            "disks": [d.as_dict() for d in assessment.spec.disks],
        })
        if check_mode:
            result["state"] = self._final_state(assessment.source_domain, None)
            return result

        src = assessment.source_domain
        uuid = src.UUIDString()
        was_paused = state_name(src) == "paused"
        try:
            for vol in plan.volumes:
                self.stager.create(vol)
            error, aborted_by = self._run_and_monitor(src, plan)
        except KvmMigrationError as exc:
            # Staging failed before the migration began: the guest never left the source.
            removed = self.stager.rollback()
            exc.details.setdefault("removed_from_destination", removed)
            raise
        if error is not None:
            self._recover(uuid, error, aborted_by, was_paused)  # raises unless the guest did arrive
        dst = self._verify_destination(uuid, plan.volumes)
        stats = self._completed_stats(src, dst)
        if req.undefine_source:
            self._undefine_source(self.source.lookup_domain_by_uuid(uuid))
        if req.source_cleanup:
            result["source_disks_removed"] = self._cleanup_source(uuid, plan.volumes)
        result.update({
            "volumes_created": list(self.stager.created),
            "stats": stats,
            "summary": summarize(stats, time.monotonic() - started),
            "progress": self.progress,
            "state": self._final_state(self.source.lookup_domain_by_uuid(uuid), dst),
        })
        return result

    def _run_and_monitor(self, dom, plan):
        """Run migrateToURI3 in a thread, poll the job, and abort it when the timeout passes."""
        outcome = {}

        def worker():
            try:
                dom.migrateToURI3(self.request.dest_uri, plan.params, plan.flags)
            except Exception as exc:  # the monitor decides what the failure means
                outcome["error"] = exc

        thread = threading.Thread(target=worker, name="migrate-%s" % self.request.name, daemon=True)
        started = time.monotonic()
        thread.start()
        aborted_by = None
        while thread.is_alive():
            thread.join(self.request.poll_interval)
            if not thread.is_alive():
                break
            elapsed = time.monotonic() - started
            self._sample(dom, elapsed)
            if aborted_by is None and elapsed > plan.timeout:
                aborted_by = "the migration did not finish within its timeout of %d s" % plan.timeout
                try:
                    dom.abortJob()
                except Exception:  # the job may have just finished
                    pass
        return outcome.get("error"), aborted_by

    def _sample(self, dom, elapsed):
        try:
            stats = dom.jobStats(0)
        except Exception:  # the domain may have just left
            return
        if not stats or stats.get("type", 0) == 0:
            return
        sample = {"t": round(elapsed, 2)}
        for key, name in SAMPLE_KEYS.items():
            if key in stats:
                sample[name] = stats[key]
        self.progress.append(sample)
        if len(self.progress) > MAX_SAMPLES:
            # Keep the first sample and thin out the rest evenly.
            self.progress = self.progress[:1] + self.progress[2::2]

    def _recover(self, uuid, error, aborted_by, was_paused):
        """After a failed migration: make sure the guest runs in exactly one place, then raise."""
        req = self.request
        reason = str(error).strip()
        if aborted_by:
            reason = "%s (%s)" % (aborted_by, reason)
        src = self.source.lookup_domain_by_uuid(uuid)
        dst = self.dest.lookup_domain_by_uuid(uuid)
        if src is not None and src.isActive():
            if state_name(src) == "paused" and not was_paused:
                with libvirt_errors("resume %s on the source after the failed migration" % req.name):
                    src.resume()
            cleaned = []
            if dst is not None:
                with libvirt_errors("remove the half-made domain %s from the destination" % req.name):
                    if dst.isActive():
                        dst.destroy()
                    if dst.isPersistent():
                        dst.undefine()
                cleaned.append("domain %s" % req.name)
            removed = self.stager.rollback()
            cleaned += removed
            raise OperationFailed(
                "Migration of %s to %s failed: %s. The guest keeps running on the source; "
                "removed from the destination: %s" % (req.name, req.dest_uri, reason, ", ".join(cleaned) or "nothing"),
                details={
                    "guest_location": "source",
                    "removed_from_destination": cleaned,
                    "progress": self.progress,
                    "state": self._final_state(src, self.dest.lookup_domain_by_uuid(uuid)),
                },
            )
        if dst is not None and dst.isActive() and state_name(dst) == "running":
            # The guest arrived although the call reported an error (for example a lost
            # connection in the finish phase): continue with verification.
            return
        raise OperationFailed(
            "Migration of %s to %s failed and the guest is not running on the source nor on the destination: %s. "
            "Nothing was deleted; disks on both hosts are kept for recovery" % (req.name, req.dest_uri, reason),
            details={
                "guest_location": "unknown",
                "kept_on_destination": list(self.stager.created),
                "progress": self.progress,
                "state": self._final_state(src, dst),
            },
        )

    def _verify_destination(self, uuid, volumes):
        req = self.request
        dst = self.dest.lookup_domain_by_uuid(uuid)
        problems = []
        if dst is None:
            problems.append("the domain is absent")
        else:
            if not dst.isActive():
                problems.append("the domain is %s" % state_name(dst))
            if req.persistent and not dst.isPersistent():
                problems.append("the domain is not persistent")
            with libvirt_errors("read the definition of %s on the destination" % req.name):
                in_use = {d.source for d in DomainSpec.from_xml(dst.XMLDesc(0)).disks}
            for vol in volumes:
                if vol.path not in in_use:
                    problems.append("the domain does not use %s" % vol.path)
                problems += self.stager.check(vol)
        if problems:
            src = self.source.lookup_domain_by_uuid(uuid)
            raise OperationFailed(
                "Migration of %s reported success, but on the destination %s: %s. The source definition is kept"
                % (req.name, req.dest_uri, "; ".join(problems)),
                details={"state": self._final_state(src, dst)},
            )
        return dst

    def _completed_stats(self, src, dst):
        stats = {}
        for dom in (dst, src):  # the source's view has the disk figures; it wins on overlap
            try:
                stats.update(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
            except Exception:  # not every side keeps completed statistics
                pass
        return {k: v for k, v in stats.items() if isinstance(v, (int, float))}

    def _cleanup_source(self, uuid, volumes):
        """Delete the source images that were copied, once the destination checked out.  An image that
        some other domain on the source still uses is kept."""
        in_use = set()
        with libvirt_errors("list the domains on the source %s" % self.source.uri):
            domains = self.source.conn.listAllDomains(0)
        for dom in domains:
            if dom.UUIDString() != uuid:
                in_use.update(d.source for d in DomainSpec.from_xml(dom.XMLDesc(0)).disks)
        source_volumes = VolumeStager(self.source)
        removed = []
        try:
            for vol in volumes:
                if vol.path not in in_use and source_volumes.remove(vol.path):
                    removed.append(vol.path)
        finally:
            source_volumes.close()
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
