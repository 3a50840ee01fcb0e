# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The storage plan: for each disk, left in place (shared storage, proven by a marker file) or copied (whole,
or as an overlay on templates found or copied), with the room it needs on the destination."""

from __future__ import annotations

import dataclasses
import os

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB
from ansible_collections.kvm.migration.plugins.module_utils._report import FAIL, PASS, SKIP
from ansible_collections.kvm.migration.plugins.module_utils._volume import VolumeSpec


@dataclasses.dataclass
class StoragePlan:
    """What happens to each disk: left in place (shared), or copied (whole, or as an overlay on templates)."""

    requested: str
    mode: str = ""
    copy: list = dataclasses.field(default_factory=list)  # (target, VolumeSpec, allocation on the source)
    shared: list = dataclasses.field(default_factory=list)  # targets left where they are
    templates: list = dataclasses.field(default_factory=list)  # backing files: {path, format, capacity, size, action}
    incremental: bool = False
    offline: bool = False  # copied file by file through libvirt streams while the domain is shut off
    unsafe: bool = False  # shared file storage libvirt may not recognise: proven shared, so VIR_MIGRATE_UNSAFE
    stale: list = dataclasses.field(default_factory=list)  # leftovers of an interrupted run, removed before copying

    def as_dict(self):
        found = {"requested": self.requested, "mode": self.mode, "copied": [t for t, _v, _a in self.copy],
                 "shared": list(self.shared), "templates": [dict(t) for t in self.templates]}
        if self.stale:
            found["stale_removed_first"] = list(self.stale)
        return found


class StoragePlanner:
    """Decides the storage plan of one migration from the request, the domain and what both hosts hold; the
    preflight's storage check (StoragePlanning) reports its problems and checks the plan against the
    destination.  Reads only: the shared-storage marker it writes is removed again at once."""

    def __init__(self, request, spec, source_domain, source_stager, stager):
        self.request = request
        self.spec = spec
        self.source_domain = source_domain
        self.source_stager = source_stager
        self.stager = stager
        self.offline = not getattr(request, "live", True)

    def plan(self):
        """Returns (StoragePlan, problems): what happens to every disk, and what stands in the way."""
        req, spec, dom = self.request, self.spec, self.source_domain
        plan = StoragePlan(requested=req.storage, offline=self.offline)
        problems = []
        local = [d for d in spec.disks if d.is_local_image]
        # Read-only and shareable images (ISOs, cluster disks) are never copied: they must be there already.
        for disk in spec.disks:
            if disk.type in ("file", "block") and disk.source and not disk.is_local_image:
                if self.stager.existing(disk.source) is None:
                    problems.append("%s (%s, %s) is not on the destination" % (disk.source, disk.target,
                                                                               "read-only" if disk.readonly else "shareable"))
            elif disk.type == "network":
                plan.shared.append(disk.target)
        shared_dirs = self._shared_directories(local) if req.storage in ("shared", "auto") else set()
        for disk in local:
            with libvirt_errors("read the size of disk %s" % disk.target):
                capacity, allocation, _physical = dom.blockInfo(disk.target)
            if os.path.dirname(disk.source) in shared_dirs:
                plan.shared.append(disk.target)
                plan.unsafe = True
                continue
            if req.storage == "shared":
                problems.append("%s is not on shared storage: a file written in %s on the destination does not "
                                "appear on the source" % (disk.source, os.path.dirname(disk.source)))
                continue
            volume = VolumeSpec(path=disk.source, format=disk.format, capacity=capacity)
            if self.offline:
                # Copied file by file, the image keeps its backing file: stage the chain as for incremental.
                facts = self.source_stager.facts(disk.source)
                if facts is None:
                    problems.append("%s (%s) is not visible to libvirt's storage on the source, so it cannot be "
                                    "copied" % (disk.source, disk.target))
                    continue
                allocation = facts["physical"]
                if disk.backing:
                    backing = disk.backing[0]
                    volume.backing_path, volume.backing_format = backing.path, backing.format
                    problems += self._templates(disk, plan)
            elif req.storage == "copy_incremental" and disk.backing:
                backing = disk.backing[0]
                volume = VolumeSpec(path=disk.source, format=disk.format, capacity=capacity,
                                    backing_path=backing.path, backing_format=backing.format)
                problems += self._templates(disk, plan)
            plan.copy.append((disk.target, volume, allocation))
        plan.incremental = req.storage == "copy_incremental" and not self.offline
        if plan.copy and plan.shared:
            plan.mode = "mixed"
        elif plan.copy and self.offline:
            plan.mode = "copy_offline"
        elif plan.copy:
            plan.mode = "copy_incremental" if plan.incremental else "copy_all"
        else:
            plan.mode = "shared"
        return plan, problems

    def _shared_directories(self, disks):
        """The disks' directories that both hosts see (a marker written on the destination shows on the source)."""
        shared = set()
        for directory in sorted({os.path.dirname(d.source) for d in disks}):
            try:
                if self.source_stager.sees_marker_of(self.stager, directory):
                    shared.add(directory)
            except InvalidRequest:
                pass  # no such directory on the destination: not shared
        return shared

    def _templates(self, disk, plan):
        """Backing files of a disk copied incrementally: present and identical on the destination, or copied."""
        problems = []
        for image in reversed(disk.backing):
            if any(t["path"] == image.path for t in plan.templates):
                continue
            if not image.path.startswith("/"):
                problems.append("backing file %s of %s is not a local file" % (image.path, disk.target))
                continue
            source = self.source_stager.facts(image.path)
            if source is None:
                problems.append("backing file %s of %s is not visible to libvirt on the source" % (image.path, disk.target))
                continue
            entry = {"path": image.path, "format": source["format"], "capacity": source["capacity"],
                     "size": self.source_stager.physical_size(image.path)}
            there = self.stager.facts(image.path)
            if there is None:
                entry["action"] = "copy"
            elif (there["format"], there["capacity"]) != (source["format"], source["capacity"]) \
                    or self._fingerprint(self.stager, image.path) != self._fingerprint(self.source_stager, image.path):
                problems.append("a different file already sits at %s on the destination (format, size or content "
                                "differs from the source's template)" % image.path)
                continue
            else:
                entry["action"] = "present"
            plan.templates.append(entry)
        return problems

    @staticmethod
    def _fingerprint(stager, path):
        # First and last MiB: enough to tell a different template apart without reading it all over the network.
        size = stager.physical_size(path)
        head = stager.digest(path, 0, min(size, MIB))
        tail = stager.digest(path, max(0, size - MIB), min(size, MIB))
        return head, tail, size

    def conflicts(self, plan, dest_domain):
        """Files already at the planned paths on the destination.  Those this collection's journal for the domain
        marks (an interrupted run of the same migration made them) become plan.stale, removed before copying (the
        preflight itself removes nothing); the rest are returned."""
        conflicts = [v.path for _t, v, _a in plan.copy if self.stager.existing(v.path) is not None]
        uuid = self.source_domain.UUIDString() if self.source_domain is not None else None
        if conflicts and uuid and dest_domain is None and all(
                self.stager.has_journal(os.path.dirname(p), uuid) for p in conflicts):
            plan.stale = conflicts
            return []
        return conflicts

    def room(self, plan):
        """Returns (space per directory, the directories that are short): the disks' and templates' bytes
        against what the destination has free, counting what removing the stale files gives back."""
        needs = {}
        for _t, volume, allocation in plan.copy:
            directory = os.path.dirname(volume.path)
            needs[directory] = needs.get(directory, 0) + allocation
        for template in plan.templates:
            if template["action"] == "copy":
                directory = os.path.dirname(template["path"])
                needs[directory] = needs.get(directory, 0) + template["size"]
        freed = {}
        for path in plan.stale:
            facts = self.stager.facts(path) or {"physical": 0}
            freed[os.path.dirname(path)] = freed.get(os.path.dirname(path), 0) + facts["physical"]
        short, space = [], {}
        for directory, need in needs.items():
            available = self.stager.available(directory) + freed.get(directory, 0)
            space[directory] = {"needed_bytes": need, "available_bytes": available}
            if available < need:
                short.append("%s has %d MiB free, the disks need %d MiB"
                             % (directory, available // MIB, -(-need // MIB)))
        return space, short


class StoragePlanning:
    """The preflight's storage check: StoragePlanner decides the plan, this reports it and what stands in its
    way on the destination (files in the way, room).

    A part of Preflight (see _preflight.py), which holds the connections, the request, the stagers, the
    report and what was located."""

    def _storage(self):
        if self.stager is None:
            self.report.add("storage", SKIP, "no destination storage to check")
            return
        planner = StoragePlanner(self.request, self.located.spec, self.located.source_domain, self.source_stager,
                                 self.stager)
        plan, problems = planner.plan()
        self.located.storage = plan
        if problems:
            self.report.add("storage", FAIL, "; ".join(problems),
                            "put shared disks on storage both hosts mount at the same path (NFS), or use storage "
                            "copy_all", plan=plan.as_dict())
            return
        conflicts = planner.conflicts(plan, self.located.dest_domain)
        if conflicts:
            self.report.add(
                "storage", FAIL,
                "The destination %s already has files at %s; refusing to overwrite them"
                % (self.dest.uri, ", ".join(conflicts)),
                "if they are the images an earlier migration left behind, remove them on the destination; "
                "source_cleanup=true removes source images after a verified migration",
                conflicting_paths=conflicts,
            )
            return
        space, short = planner.room(plan)
        if short:
            self.report.add("storage", FAIL, "not enough space on the destination: %s" % "; ".join(short),
                            "free space there, or migrate to a host with more room", space=space, plan=plan.as_dict())
            return
        summary = {"shared": "%d disk(s) stay on shared storage" % len(plan.shared),
                   "copy_all": "%d disk(s) will be copied" % len(plan.copy),
                   "copy_incremental": "%d disk(s) will be copied as overlays, %d template(s) copied, %d present"
                   % (len(plan.copy), sum(t["action"] == "copy" for t in plan.templates),
                      sum(t["action"] == "present" for t in plan.templates)),
                   "copy_offline": "%d image(s) will be copied with their backing chains, %d template(s) copied, %d "
                   "present" % (len(plan.copy), sum(t["action"] == "copy" for t in plan.templates),
                                sum(t["action"] == "present" for t in plan.templates)),
                   "mixed": "%d disk(s) stay on shared storage, %d will be copied" % (len(plan.shared), len(plan.copy))}
        stale = ("; %d file(s) an interrupted run of this migration left (%s) will be removed first"
                 % (len(plan.stale), ", ".join(plan.stale))) if plan.stale else ""
        self.report.add("storage", PASS, "storage %s: %s; the destination has room%s"
                        % (plan.mode, summary[plan.mode], stale), space=space, plan=plan.as_dict())
