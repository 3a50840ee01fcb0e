# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""A migration request and its plan: the request checks itself (names, URIs, choices, the bounds of every
number) before anything touches a host; build_plan turns the request and what the preflight found (the storage
plan) into libvirt's flags and parameters, the destination volumes and the timeout."""

from __future__ import annotations

import dataclasses

from ansible_collections.kvm.migration.plugins.module_utils._convergence import ACTIONS
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, libvirt
from ansible_collections.kvm.migration.plugins.module_utils._options import (
    MIGRATE_BOUNDS,
    check_bounds,
    check_data_uri,
    check_domain_name,
    check_downtime_schedule,
    check_libvirt_uri,
)

STORAGE_MODES = ("auto", "shared", "copy_all", "copy_incremental")
COMPRESSION_METHODS = ("none", "xbzrle", "zlib", "zstd")
# The auto strategy raises QEMU's downtime limit step by step up to this.  QEMU's real downtime overshoots its
# limit by the final synchronisation: up to 103 ms on an idle lab, up to 175 ms with the host's CPUs contended
# (525 ms with the schedule topping at 350 ms; docs/performance.md), and 213 ms was seen once on a loaded CI
# host (513 ms with a 300 ms limit).  250 ms keeps the real pause within the 500 ms that Nova and oVirt allow,
# under load too.
AUTO_MAX_DOWNTIME = 250
# Nova's live_migration_completion_timeout: 800 s per GiB of RAM plus copied disk.
DEFAULT_SECONDS_PER_GIB = 800
MIN_DEFAULT_TIMEOUT = 120
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
    max_downtime: int = 250
    downtime_schedule: list = None
    downtime_step_interval: float = 5.0
    parallel_connections: int = 0
    compression: str = "none"
    auto_converge: bool = None
    postcopy: str = "off"
    postcopy_bandwidth: int = 0
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
        if self.postcopy_bandwidth and self.postcopy == "off":
            raise InvalidRequest("postcopy_bandwidth=%s caps the post-copy phase, but postcopy is off"
                                 % self.postcopy_bandwidth, hint="set postcopy: on_demand (or immediate), or drop "
                                 "postcopy_bandwidth; bandwidth caps the pre-copy phase")
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


def build_plan(req, located, tuning=None):
    """The flags, parameters, destination volumes and timeout of a migration of `located` as `req` asks, with
    the strategy's `tuning` (auto-converge, post-copy)."""
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
    if req.postcopy_bandwidth and "POSTCOPY" in names:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = int(req.postcopy_bandwidth)
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
