# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The offline move of a shut-off domain: images copied through libvirt streams and checked by sha256, the
UEFI variable store and the emulated TPM's state, the definition moved with VIR_MIGRATE_OFFLINE and the move
recorded in its metadata; a failure removes what this run made on the destination."""

from __future__ import annotations

import os
import time

from ansible_collections.kvm.migration.plugins.module_utils._arrival import summarize
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    KvmMigrationError,
    OperationFailed,
    libvirt,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._offline_record import (
    OFFLINE_RECORD_NS,
    OFFLINE_RECORD_PREFIX,
    offline_record_xml,
)


class OfflineMove:
    """Move a shut-off domain: its images, its variable store and TPM state, then its definition.

    A part of Migration (see _migration.py), which holds the connections, the request, the stagers and
    the live run."""

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
            result["tpm_state_copied"] = self._copy_tpm_state(located.spec, uuid)
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
            result["source_state_removed"] = self._cleanup_source_state(uuid)
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

    def _copy_tpm_state(self, spec, uuid):
        """An offline move carries the emulated TPM's state (its keys, sealed secrets, measurements) as the tree
        libvirt keeps it in, every file checked by sha256; a tree an interrupted run of this move left (its journal
        says so) is replaced.  Returns the files copied (none when the guest never ran with its TPM)."""
        if not spec.tpm_state or self.source_stager.kind(spec.tpm_state) is None:
            return []
        if self.stager.kind(spec.tpm_state) is not None:
            if not self.stager.has_journal(os.path.dirname(spec.tpm_state), uuid):
                raise OperationFailed("The destination already holds TPM state at %s; refusing to overwrite it"
                                      % spec.tpm_state)
            self.stager.remove_tree(spec.tpm_state)
        return sorted(self.stager.copy_tree_from(self.source_stager, spec.tpm_state))

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
