# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The migration engine.

preflight (where is the guest now; every check, read-only) -> plan (_plan.py: flags, parameters, destination
volumes) -> stage the volumes -> migrate peer-to-peer while polling the job (_live.py) -> verify on the
destination -> undefine the source -> report.  On any failure (_recovery.py): find where the guest runs, and if
that is the source, remove everything this run made on the destination.  A shut-off domain moves offline
(_offline.py); a domain already on its way or there converges (_arrival.py)."""

from __future__ import annotations

import os
import time

from ansible_collections.kvm.migration.plugins.module_utils import _measure
from ansible_collections.kvm.migration.plugins.module_utils._arrival import Arrival, summarize
from ansible_collections.kvm.migration.plugins.module_utils._convergence import Controller, Policy, predict
from ansible_collections.kvm.migration.plugins.module_utils._domain import state_name
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
from ansible_collections.kvm.migration.plugins.module_utils._live import LiveRun
from ansible_collections.kvm.migration.plugins.module_utils._migration_diff import migration_diff, predicted_state
from ansible_collections.kvm.migration.plugins.module_utils._offline import OfflineMove
from ansible_collections.kvm.migration.plugins.module_utils._plan import MigrationRequest, build_plan
from ansible_collections.kvm.migration.plugins.module_utils._preflight import Preflight, PreflightFailed
from ansible_collections.kvm.migration.plugins.module_utils._recovery import Recovery
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeGateway

# Re-exported: the modules and tests import the request and the report from the engine.
__all__ = ["Migration", "MigrationRequest", "summarize"]

# One-second dirty rate samples averaged before predicting (see _measure.dirty_rate).
DIRTY_RATE_SAMPLES = 3
# An object that vanishes between lookup and read means something else is changing the guest right now (an
# interrupted run's module still finishing on the host): look again, for at most this long.
VANISHED_RETRY_SECONDS = 30
VANISHED_CODES = ("VIR_ERR_NO_STORAGE_VOL", "VIR_ERR_NO_DOMAIN", "VIR_ERR_NO_STORAGE_POOL")


class Migration(Recovery, Arrival, OfflineMove):
    """One migration: preflight -> plan -> execute.  The concerns live in their own files: the live path here, the
    offline move in _offline.py, attach and convergence in _arrival.py, recovery in _recovery.py."""

    def __init__(self, source, dest, request):
        self.source = source
        self.dest = dest
        self.request = request
        self.stager = VolumeGateway(dest)
        self.source_stager = VolumeGateway(source)
        self.progress = []
        self.preflight_retries = []

    # ------------------------------------------------------------------ preflight
    def preflight(self):
        """Run every check (read-only).  Returns (report, located)."""
        self.request.validate()
        deadline = time.monotonic() + VANISHED_RETRY_SECONDS
        while True:
            try:
                return Preflight(self.source, self.dest, self.request, stager=self.stager,
                                 source_stager=self.source_stager).run()
            except OperationFailed as exc:
                if exc.details.get("libvirt_error") not in VANISHED_CODES or time.monotonic() > deadline:
                    raise
                self.preflight_retries.append(exc.msg)
            except libvirt.libvirtError as exc:
                if not is_error(exc, *VANISHED_CODES) or time.monotonic() > deadline:
                    raise
                self.preflight_retries.append(error_text(exc))
            time.sleep(2)

    def check(self):
        """The preflight on its own, read-only: returns the report, and leaves nothing on either host (the pools
        the checks opened are closed)."""
        try:
            report, _located = self.preflight()
        finally:
            self.stager.close()
            self.source_stager.close()
        return report

    # ------------------------------------------------------------------ plan
    def plan(self, located, tuning=None):
        return build_plan(self.request, located, tuning)

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
        self.found = (src, dst, self._final_state(src, dst))
        result = {"changed": False, "name": req.name, "preflight": report.as_dict()}
        if self.preflight_retries:
            result["preflight_retries"] = self.preflight_retries
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
            result["source_state_removed"] = self._cleanup_source_state(uuid)
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

    def diff(self, result, check_mode=False):
        """Before and after of a finished execute(): placement and the destination's definition."""
        src, dst, before = self.found
        if not result.get("changed"):
            return migration_diff(self.request, before, before, dst, dst, self.request.dest_uri)
        if check_mode:
            return migration_diff(self.request, before, predicted_state(self.request, before), dst, dst,
                                  self.request.dest_uri, source_for_after=src if dst is None else None)
        uuid = (src or dst).UUIDString()
        try:
            arrived = self.dest.lookup_domain_by_uuid(uuid)
        except Exception:  # the diff never turns a finished migration into a failure
            arrived = None
        return migration_diff(self.request, before, result.get("state", before), dst, arrived, self.request.dest_uri)

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
        workload = _measure.guest_workload(
            _measure.touched_ram(dom, located.spec.memory_kib * 1024), rate["mib_per_s"], bandwidth["mib_per_s"],
            sum(a for _t, _v, a in located.storage.copy), tuning["downtime_schedule"][-1], req.postcopy,
            req.auto_converge)
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
