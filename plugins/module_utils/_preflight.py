# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Preflight: every check a migration needs, run before anything changes, reported all at once.

Each check has a status (pass, warn, fail, skip), a message, and a hint on how to fix it.  The
verdict is "fail" when any check fails.  Nothing here is left behind on either host: a transient storage
pool it opens and the marker file that proves shared storage are gone again when the run ends.  The checks live
in their own files: where the guest is (_placement.py), the storage plan (_storage_plan.py), the data path
(_network_probe.py); the report in _report.py and the offline record in _offline_record.py."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlparse

from ansible_collections.kvm.migration.plugins.module_utils import _cpu
from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, state_name
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    ConnectionFailed,
    KvmMigrationError,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._guest_checks import GuestFitChecks
from ansible_collections.kvm.migration.plugins.module_utils._network_probe import NetworkChecks, probe_port, resolve
from ansible_collections.kvm.migration.plugins.module_utils._offline_record import (
    OFFLINE_RECORD_NS,
    OFFLINE_RECORD_PREFIX,
    offline_record_xml,
    read_offline_record,
)
from ansible_collections.kvm.migration.plugins.module_utils._placement import PlacementChecks
from ansible_collections.kvm.migration.plugins.module_utils._report import (
    CHECK_ORDER,
    Check,
    FAIL,
    PASS,
    PreflightFailed,
    Report,
    SKIP,
    WARN,
)
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB
from ansible_collections.kvm.migration.plugins.module_utils._storage_plan import StoragePlan, StoragePlanning

# Re-exported: the engine, the modules and the tests import the report and the offline record from here.
__all__ = [
    "Located", "Preflight", "CHECK_ORDER", "FAIL", "PASS", "SKIP", "WARN", "Check", "Report", "PreflightFailed",
    "StoragePlan", "probe_port", "resolve", "OFFLINE_RECORD_NS", "OFFLINE_RECORD_PREFIX", "offline_record_xml",
    "read_offline_record",
]


SAFE_CACHE_MODES = ("none", "directsync")


@dataclasses.dataclass
class Located:
    """Where the domain is, as preflight found it, and what happens to its storage."""

    source_domain: object = None
    dest_domain: object = None
    spec: DomainSpec = None
    storage: StoragePlan = None
    running_job: dict = None  # job statistics of a migration that was already running when the preflight began
    not_a_current_copy: list = None  # offline: why the destination's definition of the same domain is not our copy


class Preflight(PlacementChecks, GuestFitChecks, StoragePlanning, NetworkChecks):
    def __init__(self, source, dest, request, stager=None, source_stager=None):
        self.source = source
        self.dest = dest
        self.request = request
        self.stager = stager
        self.source_stager = source_stager
        self.report = Report()
        self.located = Located()

    def run(self):
        """Run every check; returns (report, located)."""
        r = self.report
        if not self._connection():
            r.skip_rest("needs a connection to the destination")
            return r, self.located
        if not self._host_uuid():
            # The same host, or a clone: what the domain checks would find is meaningless until that is fixed.
            r.skip_rest("the destination reports the source's host UUID")
            return r, self.located
        if not self._domain():
            r.skip_rest("needs the domain running on the source")
            return r, self.located
        if r.nothing_to_do:
            r.skip_rest("the domain is already on the destination")
            return r, self.located
        if r.attach:
            r.skip_rest("a migration to the destination is already running; this run waits for it")
            return r, self.located
        for check in (self._name, self._cpu, self._memory, self._machine, self._devices, self._interfaces,
                      self._firmware, self._cache, self._storage, self._network):
            try:
                check()
            except KvmMigrationError as exc:
                # A check that cannot run is a blocker too, with the reason it could not run.
                name = check.__name__.lstrip("_")
                r.add(name, FAIL, "could not be checked: %s" % exc.msg, exc.hint or "")
        return r, self.located

    # ------------------------------------------------------------------ checks
    def _connection(self):
        r = self.report
        r.hosts["source"] = dict(self.source.versions(), uri=self.source.uri, hostname=self.source.hostname())
        try:
            self.dest.open()
        except ConnectionFailed as exc:
            r.add("connection", FAIL, exc.msg, exc.hint or "", **exc.details)
            return False
        r.hosts["destination"] = dict(self.dest.versions(), uri=self.dest.uri, hostname=self.dest.hostname())
        src, dst = r.hosts["source"], r.hosts["destination"]
        r.add("connection", PASS,
              "connected to %s over %s: libvirt %s, QEMU %s (source: libvirt %s, QEMU %s)"
              % (self.dest.uri, urlparse(self.dest.uri).scheme, dst["libvirt"], dst["hypervisor"],
                 src["libvirt"], src["hypervisor"]))
        return True

    def _host_uuid(self):
        src, dst = self.source.host_uuid(), self.dest.host_uuid()
        self.report.hosts["source"]["host_uuid"] = src
        self.report.hosts["destination"]["host_uuid"] = dst
        if src == dst:
            self.report.add(
                "host_uuid", FAIL,
                "The destination %s is the same host as the source %s (libvirt host UUID %s)"
                % (self.dest.uri, self.source.uri, src),
                "point dest_uri at another hypervisor; cloned hosts need a distinct host_uuid in libvirtd.conf",
                host_uuid=src,
            )
            return False
        self.report.add("host_uuid", PASS, "host UUIDs differ (%s, %s)" % (src, dst))
        return True

    def _name(self):
        req, dst = self.request, self.located.dest_domain
        if dst is not None:
            why = ""
            if self.located.not_a_current_copy:
                why = " (%s)" % "; ".join(self.located.not_a_current_copy)
            self.report.add(
                "name", FAIL,
                "A domain named %s is already defined on the destination %s (state %s, UUID %s)%s"
                % (req.name, self.dest.uri, state_name(dst), dst.UUIDString(), why),
                "undefine or rename the destination's domain, or migrate to another host",
            )
            return
        same_uuid = self.dest.lookup_domain_by_uuid(self.located.spec.uuid)
        if same_uuid is not None:
            self.report.add(
                "name", FAIL,
                "The destination %s already has a domain with the UUID %s of %s, named %s (state %s)"
                % (self.dest.uri, self.located.spec.uuid, req.name, same_uuid.name(), state_name(same_uuid)),
                "libvirt refuses two domains with one UUID: undefine the destination's %s, or migrate to another host"
                % same_uuid.name(),
            )
            return
        self.report.add("name", PASS, "no domain named %s, nor with its UUID, on the destination" % req.name)

    def _cpu(self):
        spec = self.located.spec
        with libvirt_errors("read the live definition of %s" % spec.name):
            cpu_xml = _cpu.domain_cpu_xml(self.located.source_domain.XMLDesc(0))
        virttype = "kvm" if spec.domain_type == "kvm" else "qemu"
        if cpu_xml is None:
            self.report.add("cpu", PASS, "the domain uses the hypervisor's default CPU model")
            return
        mode = _cpu.describe_cpu(cpu_xml)["mode"]
        if mode == "host-passthrough":
            src_cpu = _cpu.host_model_cpu(self.source, spec.arch, virttype)
            verdict = _cpu.compare_on_hypervisor(self.dest, src_cpu, spec.arch, virttype)
            status = PASS if verdict in ("identical", "superset") else WARN
            self.report.add("cpu", status, "host-passthrough CPU: the source's host CPU is %s on the destination"
                            % verdict, "" if status == PASS else "use a named CPU model (cpu_baseline) to migrate "
                            "between different hosts", verdict=verdict)
            return
        if mode in ("host-model", "maximum") and describe_cpu_model(cpu_xml) is None:
            cpu_xml = _cpu.host_model_cpu(self.source, spec.arch, virttype)
        verdict = _cpu.compare_on_hypervisor(self.dest, cpu_xml, spec.arch, virttype)
        model = _cpu.describe_cpu(cpu_xml)["model"]
        if verdict in ("identical", "superset"):
            self.report.add("cpu", PASS, "the domain's CPU (%s) runs on the destination (%s)" % (model, verdict),
                            verdict=verdict)
            return
        # libvirt can call a CPU incompatible with a hypervisor that runs it anyway (QEMU TCG does not
        # emulate every feature of a host-model CPU).  If the source, where the domain does run, gets the
        # same answer, the comparison tells nothing about the destination.
        source_verdict = _cpu.compare_on_hypervisor(self.source, cpu_xml, spec.arch, virttype)
        if source_verdict == verdict:
            self.report.add("cpu", WARN, "libvirt calls the domain's CPU (%s) %s with both hypervisors, though it "
                            "runs on the source; the destination is taken to run it as well" % (model, verdict),
                            "compare the hosts' CPUs with kvm.migration.cpu_baseline", verdict=verdict,
                            source_verdict=source_verdict)
        else:
            self.report.add("cpu", FAIL, "the domain's CPU (%s) is %s with the destination's hypervisor"
                            % (model, verdict),
                            "compute a common CPU with kvm.migration.cpu_baseline, apply it to the domain and "
                            "restart it", verdict=verdict, source_verdict=source_verdict)

    @property
    def offline(self):
        return not getattr(self.request, "live", True)

    def _memory(self):
        if self.offline:
            self.report.add("memory", SKIP, "offline: the domain needs memory on the destination only when it starts")
            return
        need = self.located.spec.memory_kib * 1024
        margin = self.request.memory_margin * MIB
        free = self.dest.free_memory()
        details = {"domain_bytes": need, "margin_bytes": margin, "free_bytes": free}
        if free >= need + margin:
            self.report.add("memory", PASS, "%d MiB free on the destination for %d MiB (+%d MiB margin)"
                            % (free // MIB, need // MIB, margin // MIB), **details)
        else:
            self.report.add("memory", FAIL, "only %d MiB free on the destination; the domain needs %d MiB plus a "
                            "%d MiB margin" % (free // MIB, need // MIB, margin // MIB),
                            "free memory on the destination or pick another host", **details)

    def _cache(self):
        if self.offline:
            self.report.add("cache", SKIP, "offline: no guest writes while the disks are copied")
            return
        unsafe = ["%s (cache=%s)" % (d.target, d.cache) for d in self.located.spec.disks
                  if d.device in ("disk", "lun") and not d.readonly and d.cache not in SAFE_CACHE_MODES]
        if not unsafe:
            self.report.add("cache", PASS, "every writable disk uses cache=none or directsync")
        elif self.request.allow_unsafe:
            self.report.add("cache", WARN, "unsafe cache modes allowed by allow_unsafe: %s" % ", ".join(unsafe),
                            disks=unsafe)
        else:
            self.report.add("cache", FAIL, "disk cache mode is unsafe for live migration: %s" % ", ".join(unsafe),
                            "set cache='none' (or directsync) on these disks, or set allow_unsafe if you accept "
                            "the risk", disks=unsafe)


def describe_cpu_model(cpu_xml):
    return _cpu.describe_cpu(cpu_xml)["model"]
