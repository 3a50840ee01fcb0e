# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The migration engine.

preflight (where is the guest now; every check, read-only) -> plan (flags, parameters, destination
volumes) -> stage the volumes -> migrate peer-to-peer while polling the job -> verify on the
destination -> undefine the source -> report.  On any failure: find where the guest runs, and if
that is the source, remove everything this run made on the destination."""

from __future__ import annotations

import dataclasses
import os
import time

from ansible_collections.kvm.migration.plugins.module_utils import _measure
from ansible_collections.kvm.migration.plugins.module_utils._convergence import (
    ACTIONS,
    MIB,
    Controller,
    Policy,
    Workload,
    predict,
)
from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, describe, state_detail, state_name
from ansible_collections.kvm.migration.plugins.module_utils._live import (
    POSTCOPY_RECOVERY_BUDGET as POSTCOPY_BUDGET,
    LiveRun,
    Monitor,
    describe_states,
    failure_hint,
)
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    ConnectionFailed,
    InvalidRequest,
    KvmMigrationError,
    OperationFailed,
    error_text,
    is_error,
    libvirt,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._options import (
    MIGRATE_BOUNDS,
    check_bounds,
    check_data_uri,
    check_domain_name,
    check_downtime_schedule,
    check_libvirt_uri,
)
from ansible_collections.kvm.migration.plugins.module_utils._preflight import (
    Preflight,
    PreflightFailed,
    offline_record_xml,
    OFFLINE_RECORD_NS,
    OFFLINE_RECORD_PREFIX,
)
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeSpec, VolumeStager

STORAGE_MODES = ("auto", "shared", "copy_all", "copy_incremental")
COMPRESSION_METHODS = ("none", "xbzrle", "zlib", "zstd")
# The auto strategy raises QEMU's downtime limit step by step up to this.  QEMU's real downtime overshoots its
# limit by the final synchronisation: up to 103 ms on an idle lab, up to 175 ms with the host's CPUs contended
# (525 ms with the schedule topping at 350 ms; docs/performance.md).  300 ms keeps the real pause within the
# 500 ms that Nova and oVirt allow, under load too.
AUTO_MAX_DOWNTIME = 300
# One-second dirty rate samples averaged before predicting (see _measure.dirty_rate).
DIRTY_RATE_SAMPLES = 3
# Nova's live_migration_completion_timeout: 800 s per GiB of RAM plus copied disk.
DEFAULT_SECONDS_PER_GIB = 800
MIN_DEFAULT_TIMEOUT = 120
# After a failure: how long to try to reach a host whose connection was lost, before reporting.
RECONNECT_SECONDS = 60
# A destination directory with less free space than this after a failure explains it (a qcow2 cluster needs 64 KiB,
# QEMU's write-out buffers more).
FULL_BELOW_BYTES = 1024 ** 2
GIB = 1024 ** 3


@dataclasses.dataclass
class MigrationRequest:
    name: str
    dest_uri: str
    storage: str = "auto"
    live: bool = True
    verify_copies: bool = True
    persistent: bool = True
    undefine_source: bool = True
    migrate_uri: str = ""
    disks_uri: str = ""
    bandwidth: int = 0
    link_speed: int = 0
    timeout: int = 0
    poll_interval: float = 0.5
    source_cleanup: bool = False
    allow_unsafe: bool = False
    memory_margin: int = 256
    tls: bool = False
    strategy: str = "auto"
    max_downtime: int = 300
    downtime_schedule: list = None
    downtime_step_interval: float = 5.0
    parallel_connections: int = 0
    compression: str = "none"
    auto_converge: bool = None
    postcopy: str = "off"
    completion_timeout: int = DEFAULT_SECONDS_PER_GIB
    completion_action: str = "abort"
    progress_timeout: int = 150
    progress_action: str = "abort"
    measure_mib: int = 32

    @classmethod
    def from_params(cls, params):
        """Build a request from module parameters (unknown keys ignored, None means the default)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in fields and v is not None})

    def validate(self):
        """Every check that needs no host: names, URIs, choices and the bounds of every number."""
        check_domain_name("name", self.name)
        check_libvirt_uri("dest_uri", self.dest_uri)
        check_data_uri("migrate_uri", self.migrate_uri)
        check_data_uri("disks_uri", self.disks_uri)
        check_bounds(dataclasses.asdict(self), MIGRATE_BOUNDS)
        check_downtime_schedule(self.downtime_schedule)
        if self.source_cleanup and not self.undefine_source:
            raise InvalidRequest("source_cleanup=true deletes the images the source definition uses; it needs "
                                 "undefine_source=true, or the source would keep a definition without its disks")
        if not self.live and not self.persistent:
            raise InvalidRequest("An offline migration (live=false) always defines the domain on the destination; "
                                 "persistent=false makes no sense for it")
        if not self.live and self.postcopy != "off":
            raise InvalidRequest("postcopy=%s needs a live migration; an offline migration (live=false) copies a "
                                 "shut-off domain" % self.postcopy)
        if self.storage not in STORAGE_MODES:
            raise InvalidRequest("Unsupported storage mode %r (supported: %s)" % (self.storage, ", ".join(STORAGE_MODES)))
        if self.strategy not in ("auto", "manual"):
            raise InvalidRequest("strategy must be auto or manual, not %r" % self.strategy)
        if self.postcopy not in ("off", "immediate", "on_demand"):
            raise InvalidRequest("postcopy must be off, immediate or on_demand, not %r" % self.postcopy)
        if self.compression not in COMPRESSION_METHODS:
            raise InvalidRequest("compression must be one of %s" % ", ".join(COMPRESSION_METHODS))
        if self.compression in ("zlib", "zstd") and not self.parallel_connections:
            raise InvalidRequest("compression=%s compresses the streams of a parallel (multifd) migration, but "
                                 "parallel_connections is 0" % self.compression,
                                 hint="set parallel_connections (2 or more), or use compression: xbzrle")
        for name in ("completion_action", "progress_action"):
            action = getattr(self, name)
            if action not in ACTIONS:
                raise InvalidRequest("%s must be one of %s, not %r" % (name, ", ".join(ACTIONS), action))
            if action == "postcopy" and self.postcopy == "off":
                raise InvalidRequest("%s postcopy needs postcopy: on_demand (or immediate)" % name)

    def schedule(self):
        """The downtimes (ms) the migration may step through as progress stalls, lowest first."""
        if self.downtime_schedule:
            return sorted(self.downtime_schedule)
        if self.strategy == "auto" and self.max_downtime < AUTO_MAX_DOWNTIME:
            steps = [self.max_downtime]
            while steps[-1] < AUTO_MAX_DOWNTIME:
                steps.append(min(AUTO_MAX_DOWNTIME, steps[-1] + 100))
            return steps
        return [self.max_downtime]


@dataclasses.dataclass
class Plan:
    flags: int
    flag_names: list
    params: dict
    volumes: list
    timeout: int
    storage: object = None


class Migration:
    def __init__(self, source, dest, request):
        self.source = source
        self.dest = dest
        self.request = request
        self.stager = VolumeStager(dest)
        self.source_stager = VolumeStager(source)
        self.progress = []

    # ------------------------------------------------------------------ preflight
    def preflight(self):
        """Run every check (read-only).  Returns (report, located)."""
        self.request.validate()
        return Preflight(self.source, self.dest, self.request, stager=self.stager,
                         source_stager=self.source_stager).run()

    # ------------------------------------------------------------------ plan
    def plan(self, located, tuning=None):
        req = self.request
        tuning = tuning or {}
        storage = located.storage
        if not req.live:
            # Only the definition travels through libvirt (the disks are copied beforehand, file by file).
            names = ["OFFLINE", "PEER2PEER", "PERSIST_DEST"]
            flags = 0
            for n in names:
                flags |= getattr(libvirt, "VIR_MIGRATE_" + n)
            return Plan(flags=flags, flag_names=[n.lower() for n in names], params={},
                        volumes=[v for _t, v, _a in storage.copy], timeout=0, storage=storage)
        names = ["LIVE", "PEER2PEER", "ABORT_ON_ERROR"]
        if req.persistent:
            names.append("PERSIST_DEST")
        if storage.copy:
            names.append("NON_SHARED_INC" if storage.incremental else "NON_SHARED_DISK")
        if req.allow_unsafe or storage.unsafe:
            names.append("UNSAFE")
        if req.tls:
            names.append("TLS")
        if tuning.get("auto_converge"):
            names.append("AUTO_CONVERGE")
        if tuning.get("postcopy", "off") != "off":
            names.append("POSTCOPY")
        if req.parallel_connections:
            names.append("PARALLEL")
        if req.compression != "none":
            names.append("COMPRESSED")
        flags = 0
        for n in names:
            flags |= getattr(libvirt, "VIR_MIGRATE_" + n)
        params = {}
        if storage.copy:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [t for t, _v, _a in storage.copy]
        if req.bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(req.bandwidth)
        if req.migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = req.migrate_uri
        if req.disks_uri:
            params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = req.disks_uri
        if req.parallel_connections:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(req.parallel_connections)
        if req.compression != "none":
            params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = [req.compression]
        timeout = req.timeout
        if not timeout:
            moved = located.spec.memory_kib * 1024 + sum(v.capacity for _t, v, _a in storage.copy)
            timeout = max(MIN_DEFAULT_TIMEOUT, int(req.completion_timeout * moved / GIB))
        return Plan(flags=flags, flag_names=[n.lower() for n in names], params=params,
                    volumes=[v for _t, v, _a in storage.copy], timeout=timeout, storage=storage)

    # ------------------------------------------------------------------ execute
    def execute(self, check_mode=False):
        """Bring the domain to the destination.  Returns the result dict for the module."""
        try:
            return self._execute(check_mode)
        finally:
            self.stager.close()
            self.source_stager.close()

    def _execute(self, check_mode):
        req = self.request
        started = time.monotonic()
        report, located = self.preflight()
        src, dst = located.source_domain, located.dest_domain
        result = {"changed": False, "name": req.name, "preflight": report.as_dict()}
        if report.nothing_to_do:
            return self._converge_done(result, src, dst, check_mode)
        if report.verdict == "fail":
            raise PreflightFailed(req.name, self.dest.uri, report)
        if report.attach:
            return self._attach(result, located, check_mode, started)
        if not req.live:
            return self._move_offline(result, located, check_mode, started)

        tuning = self._choose_strategy(located, check_mode)
        plan = self.plan(located, tuning)
        self._report_plan(result, located, plan, "domain %s runs on the source" % req.name,
                          {k: v for k, v in tuning.items() if k != "policy"})
        result["timeout"] = plan.timeout
        if check_mode:
            result["state"] = self._final_state(src, None)
            return result

        uuid = src.UUIDString()
        was_paused = state_name(src) == "paused"
        self.controller = Controller(Policy(
            completion_timeout=plan.timeout, completion_action=req.completion_action,
            progress_timeout=req.progress_timeout, progress_action=req.progress_action,
            downtime_schedule=tuning["downtime_schedule"], step_interval=req.downtime_step_interval,
            postcopy=tuning["postcopy"], switch_when_stalled=req.strategy == "auto"))
        try:
            self._begin_staging(result, plan.storage, uuid)
            self._stage_templates(plan.storage)
            for vol in plan.volumes:
                self.stager.create(vol)
            self.live = LiveRun(self.source, self.dest, req, self.controller, self.progress)
            error = self.live.run(src, plan)
        except KvmMigrationError as exc:
            # Staging failed before the migration began: the guest never left the source.
            removed = self.stager.rollback()
            exc.details.setdefault("removed_from_destination", removed)
            exc.details.setdefault("guest_location", "source")
            exc.details.setdefault("strategy", result["strategy"])
            raise
        postcopy_found = None
        if error is not None and self.controller.postcopy_started:
            error, postcopy_found = self.live.recover_postcopy(uuid, plan, error)
        if error is not None:
            # raises unless the guest did arrive
            self._recover(uuid, error, was_paused, result["strategy"], postcopy_found)
        # A cut link or a restarted libvirtd may have closed the destination's connection while the guest
        # still arrived (post-copy resumed, or QEMU finished on its own): reopen it to verify.
        self._reach_destination()
        try:
            dst = self._verify_destination(uuid, plan.volumes)
        except ConnectionFailed:
            # The connection died under the check (its keepalive outlived the cut): once more, on a new one.
            self.dest.close()
            if not self._reach_destination():
                raise
            dst = self._verify_destination(uuid, plan.volumes)
        self.stager.end_journal()
        if self.controller.paused and not was_paused and state_name(dst) == "paused":
            with libvirt_errors("resume %s on the destination (it was paused to finish the migration)" % req.name):
                dst.resume()
        stats = self._completed_stats(src, dst)
        if req.undefine_source:
            self._undefine_source(self.source.lookup_domain_by_uuid(uuid))
        if req.source_cleanup:
            result["source_disks_removed"] = self._cleanup_source(uuid, plan.volumes)
        result["strategy"]["events"] = [{"t": round(t, 1), "event": e, "reason": r} for t, e, r in self.controller.events]
        throttle = max([s.get("throttle", 0) for s in self.progress] + [stats.get("auto_converge_throttle", 0)])
        result["strategy"]["finished_by"] = ("post-copy" if self.controller.postcopy_started else
                                             "pausing the guest" if self.controller.paused else
                                             "auto-converge" if throttle else "pre-copy")
        result["strategy"]["max_throttle_percent"] = throttle
        result.update({
            "volumes_created": list(self.stager.created),
            "stats": stats,
            "summary": summarize(stats, time.monotonic() - started),
            "progress": self.progress,
            "state": self._final_state(self.source.lookup_domain_by_uuid(uuid), dst),
        })
        return result

    def _report_plan(self, result, located, plan, reason, strategy):
        """What a migration will do (all that check mode reports)."""
        result.update({
            "changed": True,
            "operation": "migrate",
            "reason": reason,
            "strategy": strategy,
            "flags": plan.flag_names,
            "storage": self.request.storage,
            "storage_plan": plan.storage.as_dict(),
            "volumes": [v.as_dict() for v in plan.volumes],
            "disks": [d.as_dict() for d in located.spec.disks],
        })

    # ------------------------------------------------------------------ offline
    def _move_offline(self, result, located, check_mode, started):
        """A shut-off domain: copy its images (and missing templates) through libvirt streams, verify every copy
        by sha256, move the definition (VIR_MIGRATE_OFFLINE), verify it, then undefine the source.  Any failure
        removes what this run made on the destination; the source is not touched until the end."""
        req = self.request
        plan = self.plan(located)
        src = located.source_domain
        self._report_plan(result, located, plan, "domain %s is shut off on the source; it moves offline" % req.name,
                          {"requested": req.strategy, "chosen": "offline"})
        if check_mode:
            result["state"] = self._final_state(src, None)
            return result
        uuid = src.UUIDString()
        copied = []
        copy_started = time.monotonic()
        try:
            self._begin_staging(result, plan.storage, uuid)
            self._stage_templates(plan.storage)
            for target, vol, _allocation in plan.storage.copy:
                facts = self.source_stager.facts(vol.path)
                sent = self.stager.copy_from(self.source_stager, vol.path, vol.format, sparse=True)
                received = self.stager.digest(vol.path, sparse=True) if req.verify_copies else sent
                if received != sent:
                    raise OperationFailed("The copy of %s on the destination does not match the source (sha256 %s vs "
                                          "%s)" % (vol.path, received, sent))
                copied.append({"target": target, "path": vol.path, "size": facts["physical"],
                               "mtime": facts["mtime"], "sha256": sent, "read_back": req.verify_copies})
            result["nvram_copied"] = self._copy_nvram(located.spec, uuid)
            copy_seconds = time.monotonic() - copy_started
            with libvirt_errors("move the definition of %s to %s" % (req.name, req.dest_uri)):
                src.migrateToURI3(req.dest_uri, plan.params, plan.flags)
            dst = self._verify_destination(uuid, plan.volumes, active=False)
            record = offline_record_xml(self.source.host_uuid(), self.source.uri, copied)
            with libvirt_errors("record the offline move in the definition of %s on the destination" % req.name):
                dst.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, record, OFFLINE_RECORD_PREFIX, OFFLINE_RECORD_NS,
                                libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        except KvmMigrationError as exc:
            exc.details.setdefault("guest_location", "source")
            exc.details.setdefault("removed_from_destination", self._rollback_offline(uuid))
            exc.msg += ". The domain stays defined on the source; removed from the destination: %s" % (
                ", ".join(exc.details["removed_from_destination"]) or "nothing")
            exc.args = (exc.msg,)
            raise
        self.stager.end_journal()
        if req.undefine_source:
            self._undefine_source(self.source.lookup_domain_by_uuid(uuid))
        if req.source_cleanup:
            result["source_disks_removed"] = self._cleanup_source(uuid, plan.volumes)
        moved = sum(c["size"] for c in copied) + sum(t["size"] for t in plan.storage.templates
                                                     if t["action"] == "copied")
        stats = {"time_elapsed": int(copy_seconds * 1000), "disk_processed": moved, "downtime": 0}
        result.update({
            "volumes_created": list(self.stager.created),
            "copied": copied,
            "stats": stats,
            "summary": summarize(stats, time.monotonic() - started),
            "state": self._final_state(self.source.lookup_domain_by_uuid(uuid), dst),
        })
        return result

    def _copy_nvram(self, spec, uuid):
        """An offline move carries the guest's UEFI variable store (boot entries, Secure Boot keys) too; a copy an
        interrupted run of this move left (its journal says so) is replaced.  Returns the path copied, or None."""
        if not spec.nvram or self.source_stager.existing(spec.nvram) is None:
            return None
        if self.stager.existing(spec.nvram) is not None and self.stager.has_journal(os.path.dirname(spec.nvram), uuid):
            self.stager.remove(spec.nvram)
        sent = self.stager.copy_from(self.source_stager, spec.nvram, "raw")
        if self.stager.digest(spec.nvram) != sent:
            raise OperationFailed("The copy of the variable store %s on the destination does not match the source"
                                  % spec.nvram)
        return spec.nvram

    def _rollback_offline(self, uuid):
        """Undo an offline move that failed: the destination's definition (the preflight made sure there was none
        before) and every volume this run created there."""
        removed = []
        dst = self.dest.lookup_domain_by_uuid(uuid)
        if dst is not None and not dst.isActive():
            with libvirt_errors("remove the half-made definition of %s from the destination" % self.request.name):
                dst.undefine()
            removed.append("domain %s" % self.request.name)
        return removed + self.stager.rollback()

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

    def _begin_staging(self, result, storage, uuid):
        """Remove what an interrupted run of this migration left (the preflight recognised it by its journal),
        then arm the journal: every directory gets one before its first new volume."""
        removed = [path for path in storage.stale if self.stager.remove(path)]
        if removed:
            result["stale_removed"] = removed
        self.stager.journal_uuid = uuid

    def _stage_templates(self, storage):
        """Copy the backing files the destination lacks, and verify each copy's size and checksum."""
        for template in storage.templates:
            if template["action"] != "copy":
                continue
            sent = self.stager.copy_from(self.source_stager, template["path"], template["format"])
            size = self.stager.physical_size(template["path"])
            received = self.stager.digest(template["path"])
            if size != template["size"] or received != sent:
                raise OperationFailed(
                    "The copy of template %s on the destination does not match the source (size %d vs %d, sha256 %s vs "
                    "%s)" % (template["path"], size, template["size"], received, sent))
            template.update(action="copied", sha256=sent)

    def _choose_strategy(self, located, check_mode=False):
        """Flags and steering for this migration.  manual: as the options say.  auto: measure the guest's dirty
        rate and the bandwidth, predict, and pick pre-copy, auto-converge or post-copy before starting."""
        req = self.request
        tuning = {"requested": req.strategy, "downtime_schedule": req.schedule(), "postcopy": req.postcopy,
                  "auto_converge": bool(req.auto_converge)}
        if req.strategy == "manual":
            tuning["chosen"] = ("post-copy" if req.postcopy == "immediate" else
                                "auto-converge" if req.auto_converge else "pre-copy")
            return tuning
        dom = located.source_domain
        rate = _measure.dirty_rate(self.source, dom, 1, samples=DIRTY_RATE_SAMPLES)
        if req.bandwidth and (not req.link_speed or req.bandwidth <= req.link_speed):
            bandwidth = {"mib_per_s": float(req.bandwidth), "source": "bandwidth cap"}
        elif req.link_speed:
            bandwidth = {"mib_per_s": float(req.link_speed), "source": "link speed (stated)"}
        elif check_mode:
            # Measuring writes a scratch volume on the destination: not in check mode.
            tuning.update(measured={"dirty_rate_mib_s": rate["mib_per_s"]}, chosen="decided when the migration runs",
                          note="the bandwidth is measured only for a real run (or give link_speed)")
            return tuning
        else:
            directory = os.path.dirname(located.storage.copy[0][1].path) if located.storage.copy else "/var/lib/libvirt/images"
            try:
                bandwidth = dict(_measure.bandwidth(self.stager, directory, req.measure_mib), source="measured")
            except _measure.NoRoomToMeasure as exc:
                # No prediction without a bandwidth: run with the safety nets on (auto-converge, and post-copy
                # when allowed, on stalls) rather than fill the destination's disk.
                tuning.update(measured={"dirty_rate_mib_s": rate["mib_per_s"], "bandwidth": None},
                              chosen="auto-converge", auto_converge=req.auto_converge is not False,
                              note="bandwidth not measured: %s; give link_speed to predict" % exc)
                return tuning
        memory = located.spec.memory_kib * 1024
        workload = Workload(
            ram_bytes=_measure.touched_ram(dom, memory),
            dirty_rate=rate["mib_per_s"] * MIB,
            bandwidth=(bandwidth["mib_per_s"] or 1) * MIB,
            disk_bytes=sum(a for _t, _v, a in located.storage.copy),
            max_downtime=tuning["downtime_schedule"][-1] / 1000.0,
            postcopy_allowed=req.postcopy != "off",
            auto_converge_allowed=req.auto_converge is not False,
        )
        prediction = predict(workload)
        tuning.update(measured={"dirty_rate_mib_s": rate["mib_per_s"], "bandwidth": bandwidth,
                                "touched_ram_bytes": workload.ram_bytes},
                      prediction=prediction.as_dict())
        if prediction.strategy == "offline":
            raise InvalidRequest(
                "Migration of %s would not converge (%s), and neither post-copy nor auto-converge is allowed"
                % (req.name, "; ".join(prediction.reasons)),
                hint="allow postcopy (postcopy: on_demand) or auto_converge, cap the guest's load, or shut it down and move it offline (live=false)",
                details={"strategy": tuning})
        if prediction.strategy == "postcopy":
            tuning["postcopy"] = "immediate"
            tuning["chosen"] = "post-copy"
        else:
            # Auto-converge costs nothing while pre-copy progresses (QEMU throttles only when rounds do not
            # shrink), so the auto strategy keeps it on as the safety net unless told otherwise.
            tuning["auto_converge"] = req.auto_converge is not False
            tuning["chosen"] = "auto-converge" if prediction.strategy == "auto_converge" else "pre-copy"
        return tuning

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
            raise OperationFailed(
                "Migration of %s to %s failed: %s; the connection to the source %s was lost and it did not come back "
                "within %d s, so where the guest runs is not known. Nothing was deleted on either host"
                % (req.name, req.dest_uri, error_text(error), self.source.uri, RECONNECT_SECONDS),
                hint="bring the source's libvirtd back (systemctl status libvirtd), then run the same task again: it "
                     "finds the guest and removes this run's leftovers (its journal) if the guest stayed on the source",
                details={"guest_location": "unknown", "strategy": strategy, "kept_on_destination": list(self.stager.created),
                         "events": [{"t": round(t, 1), "event": e, "reason": r} for t, e, r in self.controller.events]})
        dest_reachable = self._reach_destination()
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
        dst = self.dest.lookup_domain_by_uuid(uuid) if dest_reachable else None
        details = {"cause": diagnosis, "strategy": strategy, "progress": self.progress,
                   "events": [{"t": round(t, 1), "event": e, "reason": r} for t, e, r in self.controller.events]}
        if self.controller.postcopy_started:
            hints = {
                "running": "QEMU was still moving the guest's pages when this run stopped waiting: watch it with "
                           "virsh domjobinfo %s on the source and destroy neither side" % req.name,
                "failed": "fix the link, then resume: virsh migrate --postcopy --postcopy-resume %s %s"
                          % (req.name, req.dest_uri),
            }
            raise OperationFailed(
                "Post-copy migration of %s to %s failed and could not be resumed within %.0f s: %s. The guest's "
                "memory is split between the two hosts (found: %s), so nothing was destroyed or deleted on either"
                % (req.name, req.dest_uri, POSTCOPY_BUDGET, cause, describe_states(src, dst)),
                hint=hints.get(postcopy_found, "a host cannot be reached: bring it back, then run this task again; it "
                               "finds the guest and resumes or reports"),
                details=dict(details, guest_location="split (post-copy)", postcopy_state=postcopy_found,
                             state=self._final_state(src, dst)))
        if src is not None and src.isActive():
            if state_name(src) == "paused" and not was_paused:
                with libvirt_errors("resume %s on the source after the failed migration" % req.name):
                    src.resume()
            cleaned = []
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
            if dst is not None:
                with libvirt_errors("remove the half-made domain %s from the destination" % req.name):
                    if dst.isActive():
                        dst.destroy()
                    if dst.isPersistent():
                        dst.undefine()
                cleaned.append("domain %s" % req.name)
            cleaned += self.stager.rollback()
            self.stager.close()  # also drops a transient pool a restarted libvirtd brought back
            raise OperationFailed(
                "Migration of %s to %s failed: %s. The guest keeps running on the source; "
                "removed from the destination: %s" % (req.name, req.dest_uri, cause, ", ".join(cleaned) or "nothing"),
                hint=failure_hint(diagnosis, cause, req.name),
                details=dict(details, guest_location="source", removed_from_destination=cleaned,
                             state=self._final_state(src, self.dest.lookup_domain_by_uuid(uuid))))
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

    def _reach_destination(self):
        """The destination's connection, reopened when it was lost (a restarted libvirtd comes back within
        seconds)."""
        return self._reach(self.dest, self.stager)

    @staticmethod
    def _reach(client, stager):
        """Whether the host answers, after reopening its connection if it was lost; the stager working through
        that connection forgets its old pool handles."""
        if client.alive():
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
            if removable:
                operations.append("cleanup_source")
                result["source_disks_removed"] = removable
        if operations:
            result.update(changed=True, operation="+".join(operations),
                          reason="the domain is on the destination; %s" % " and ".join(
                              {"persist": "it was not defined persistently there",
                               "undefine_source": "its stale definition remained on the source",
                               "cleanup_source": "its old images remained on the source"}[o] for o in operations))
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
