# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Preflight: every check a migration needs, run before anything changes, reported all at once.

Each check has a status (pass, warn, fail, skip), a message, and a hint on how to fix it.  The
verdict is "fail" when any check fails.  Nothing here changes either host (the only thing it may
create is a transient storage pool that is gone again when the run ends)."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import time
import xml.etree.ElementTree as ET
from urllib.parse import urlparse
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils import _cpu
from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, state_name
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    ConnectionFailed,
    InvalidRequest,
    KvmMigrationError,
    is_error,
    libvirt,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeSpec

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
SAFE_CACHE_MODES = ("none", "directsync")
# qemu.conf migration_port_min: the first port carries RAM, the next one the NBD disk copy.
MIGRATION_PORTS = (49152, 49153)
PORT_TIMEOUT = 2.0
MIB = 1024 * 1024
# How long to wait for the destination's incoming domain when the source already has an outgoing migration job
# (libvirt starts the job on the source before the destination is prepared).
INCOMING_WAIT = 10.0
# The record an offline move leaves in the destination's definition (domain metadata), to recognise its own copy.
OFFLINE_RECORD_NS = "https://github.com/kvm-migration/kvm.migration/offline/1"
OFFLINE_RECORD_PREFIX = "kvmmig"
CHECK_ORDER = ("connection", "host_uuid", "domain", "name", "cpu", "memory", "machine", "devices", "interfaces",
               "firmware", "cache", "storage", "network")


@dataclasses.dataclass
class Check:
    name: str
    status: str
    message: str
    hint: str = ""
    details: dict = dataclasses.field(default_factory=dict)

    def as_dict(self):
        data = {"name": self.name, "status": self.status, "message": self.message}
        if self.hint:
            data["hint"] = self.hint
        if self.details:
            data["details"] = self.details
        return data


class Report:
    def __init__(self):
        self.checks = []
        self.hosts = {}
        self.nothing_to_do = False
        self.attach = False

    def add(self, name, status, message, hint="", **details):
        self.checks.append(Check(name, status, message, hint, details))

    def has(self, name):
        return any(c.name == name for c in self.checks)

    def skip_rest(self, reason):
        for name in CHECK_ORDER:
            if not self.has(name):
                self.add(name, SKIP, reason)

    @property
    def blockers(self):
        return [c for c in self.checks if c.status == FAIL]

    @property
    def verdict(self):
        return FAIL if self.blockers else PASS

    def summary(self):
        return "; ".join("%s: %s" % (c.name, c.message) for c in self.blockers)

    def as_dict(self):
        order = {n: i for i, n in enumerate(CHECK_ORDER)}
        return {
            "verdict": self.verdict,
            "nothing_to_do": self.nothing_to_do,
            "attach": self.attach,
            "blockers": [c.name for c in self.blockers],
            "warnings": [c.name for c in self.checks if c.status == WARN],
            "checks": [c.as_dict() for c in sorted(self.checks, key=lambda c: order.get(c.name, 99))],
            "hosts": self.hosts,
        }


class PreflightFailed(InvalidRequest):
    """At least one preflight check failed; details['preflight'] holds the whole report."""

    def __init__(self, name, dest_uri, report):
        blockers = report.blockers
        super().__init__(
            "Preflight found %d blocker%s for migrating %s to %s: %s"
            % (len(blockers), "" if len(blockers) == 1 else "s", name, dest_uri, report.summary()),
            details={"preflight": report.as_dict()},
            hint=" / ".join(c.hint for c in blockers if c.hint) or None,
        )


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


@dataclasses.dataclass
class Located:
    """Where the domain is, as preflight found it, and what happens to its storage."""

    source_domain: object = None
    dest_domain: object = None
    spec: DomainSpec = None
    storage: StoragePlan = None
    running_job: dict = None  # job statistics of a migration that was already running when the preflight began
    not_a_current_copy: list = None  # offline: why the destination's definition of the same domain is not our copy


class Preflight:
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

    def _domain(self):
        req, r = self.request, self.report
        src = self.source.lookup_domain(req.name)
        dst = self.dest.lookup_domain(req.name)
        self.located.source_domain, self.located.dest_domain = src, dst
        src_active = bool(src is not None and src.isActive())
        dst_active = bool(dst is not None and dst.isActive())
        if src_active and self._running_migration(src):
            return self._attach(src)
        if src_active and dst_active:
            r.add("domain", FAIL, "Domain %s is active on both hosts; refusing to touch either" % req.name,
                  "find out which copy is authoritative and stop the other one")
            return False
        if dst_active:
            r.nothing_to_do = True
            r.add("domain", PASS, "domain %s already runs on the destination (%s)" % (req.name, state_name(dst)))
            return True
        if src is None and dst is None:
            r.add("domain", FAIL, "Domain %s does not exist on the source %s nor on the destination %s"
                  % (req.name, self.source.uri, self.dest.uri), "check the name and the hosts")
            return False
        if not getattr(req, "live", True):
            return self._domain_offline(src, dst, src_active)
        if src is None:
            r.add("domain", FAIL, "Domain %s is defined on the destination %s but not running, and is absent from "
                  "the source %s" % (req.name, self.dest.uri, self.source.uri),
                  "start it on the destination if that copy is the right one")
            return False
        if not src_active:
            r.add("domain", FAIL, "Domain %s is %s on the source; a live migration needs a running domain"
                  % (req.name, state_name(src)),
                  "start the domain first, or move it while it is shut off with live=false (an offline migration)")
            return False
        with libvirt_errors("read the definition of %s" % req.name):
            self.located.spec = DomainSpec.from_xml(src.XMLDesc(0))
        r.add("domain", PASS, "domain %s is %s on the source" % (req.name, state_name(src)))
        return True

    def _domain_offline(self, src, dst, src_active):
        """An offline move: the domain must be shut off on the source.  Done when the destination holds the
        definition and the source does not, or when the source's images are unchanged since this collection copied
        them (its record in the destination's definition says so)."""
        req, r = self.request, self.report
        if src is None:
            if dst.isPersistent():
                r.nothing_to_do = True
                r.add("domain", PASS, "domain %s is defined on the destination (%s) and not on the source"
                      % (req.name, state_name(dst)))
                return True
            r.add("domain", FAIL, "Domain %s is absent from the source %s" % (req.name, self.source.uri),
                  "check the name and the hosts")
            return False
        if src_active:
            r.add("domain", FAIL, "Domain %s is %s on the source; an offline migration (live=false) moves a shut-off "
                  "domain" % (req.name, state_name(src)),
                  "shut the domain down first (virsh shutdown), or migrate it live (live=true)")
            return False
        if dst is not None and dst.UUIDString() == src.UUIDString():
            self.located.not_a_current_copy = self.offline_copy_changes(src, dst)
            if not self.located.not_a_current_copy:
                r.nothing_to_do = True
                r.add("domain", PASS, "domain %s was moved to the destination offline, and its images on the source "
                      "have not changed since" % req.name)
                return True
        with libvirt_errors("read the definition of %s" % req.name):
            self.located.spec = DomainSpec.from_xml(src.XMLDesc(0))
        r.add("domain", PASS, "domain %s is shut off on the source; it moves offline" % req.name)
        return True

    def offline_copy_changes(self, src, dst):
        """Why the destination's definition of `src` is not a current copy made by an offline move (empty list: it
        is).  It is current when its record names this source host and every source image still has the size and
        modification time it had when it was copied."""
        record = read_offline_record(dst)
        if record is None:
            return ["the destination's definition was not made by an offline move of kvm.migration"]
        if record.get("source_host_uuid") != self.source.host_uuid():
            return ["the destination's copy came from another host"]
        problems = []
        for image in record.get("images", []):
            facts = self.source_stager.facts(image["path"]) if self.source_stager else None
            if facts is None:
                problems.append("%s is gone from the source" % image["path"])
            elif (facts["physical"], facts["mtime"]) != (image["size"], image["mtime"]):
                problems.append("%s changed on the source since it was copied" % image["path"])
        return problems

    def _running_migration(self, src):
        """The job statistics of a migration out of the source that is already running, or None."""
        try:
            stats = src.jobStats(0)
        except Exception:  # no job information: nothing runs
            return None
        outgoing = getattr(libvirt, "VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT", 5)
        if not stats or stats.get("type", 0) == 0 or stats.get("operation") != outgoing:
            return None
        self.located.running_job = stats
        return stats

    def _attach(self, src):
        """A migration of the domain is already running (another client started it, or an earlier run that was cut
        off).  If it goes to this destination, the run waits for it instead of starting a second one."""
        req, r = self.request, self.report
        deadline = time.monotonic() + INCOMING_WAIT
        while True:
            dst = self.dest.lookup_domain_by_uuid(src.UUIDString())
            if dst is not None and dst.isActive():
                break
            if time.monotonic() >= deadline or self._running_migration(src) is None:
                r.add("domain", FAIL, "A migration of %s is already running on the source, but not to %s"
                      % (req.name, self.dest.uri),
                      "wait for it to finish, or abort it (virsh domjobabort %s)" % req.name)
                return False
            time.sleep(0.5)
        self.located.dest_domain = dst
        r.add("domain", PASS, "a migration of %s to the destination is already running (%.0f%% of %d MiB processed); "
              "this run attaches to it instead of starting another"
              % (req.name, 100.0 * _done_fraction(self.located.running_job),
                 self.located.running_job.get("data_total", 0) // MIB), attached=True)
        r.attach = True
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

    def _machine(self):
        spec = self.located.spec
        machines, emulators = set(), set()
        for guest in self.dest.capabilities().findall("guest"):
            arch = guest.find("arch")
            if arch is None or arch.get("name") != spec.arch:
                continue
            for m in arch.iter("machine"):
                machines.add(m.text)
                if m.get("canonical"):
                    machines.add(m.get("canonical"))
            emulators.update((e.text or "").strip() for e in arch.iter("emulator"))
        problems, hints, details = [], [], {}
        if spec.machine and spec.machine not in machines:
            problems.append("machine type %s (%s) is not supported by the destination's QEMU" % (spec.machine, spec.arch))
            hints.append("upgrade QEMU on the destination; migration to an older QEMU is not supported")
            details["supported"] = sorted(m for m in machines if m)
        if spec.emulator and emulators and spec.emulator not in emulators:
            # libvirt keeps the <emulator> path across a migration (RHEL's /usr/libexec/qemu-kvm, Debian's
            # /usr/bin/qemu-system-x86_64).
            problems.append("the domain's emulator %s does not exist on the destination (it has %s)"
                            % (spec.emulator, ", ".join(sorted(emulators))))
            hints.append("set <emulator> in the domain to a path the destination has (a symlink there also works)")
            details["emulators"] = sorted(emulators)
        if problems:
            self.report.add("machine", FAIL, "; ".join(problems), " / ".join(hints), **details)
        else:
            self.report.add("machine", PASS, "machine type %s and emulator %s are available on the destination"
                            % (spec.machine, spec.emulator or "(default)"))

    def _devices(self):
        blockers = []
        for dev in self.located.spec.hostdevs:
            blockers.append("host device passthrough (%s %s)" % (dev["type"], dev["address"] or dev["model"] or ""))
        blockers += self.located.spec.unmigratable_devices
        if blockers and self.offline:
            self.report.add("devices", WARN, "offline: the destination needs the same host devices before the domain "
                            "starts there: %s" % ", ".join(blockers),
                            "make the devices available on the destination, or detach them", devices=blockers)
        elif blockers:
            self.report.add("devices", FAIL, "devices that cannot migrate: %s" % ", ".join(blockers),
                            "detach them before migrating (virsh detach-device), or migrate offline", devices=blockers)
        else:
            self.report.add("devices", PASS, "no device that prevents migration")

    def _interfaces(self):
        """Every network, bridge and device the guest's NICs plug into must exist and be up on the destination,
        or the migration fails late (after the disk copy began) with QEMU's tap error."""
        problems, unknown = [], []
        for nic in self.located.spec.interfaces:
            kind = "network" if nic["type"] == "network" else "host interface"
            what = "%s %s (NIC %s)" % (kind, nic["source"], nic["mac"] or "?")
            if nic["type"] == "network":
                state = self.dest.network_state(nic["source"])
            else:
                state = self.dest.host_interface_state(nic["source"])
            if state is None:
                unknown.append(what)
            elif state != "active":
                problems.append("%s is %s" % (what, "missing" if state == "absent" else "not active"))
        hint = ("create or start them on the destination (virsh net-start NAME for a libvirt network; the bridge "
                "in the host's network configuration), or change the guest's interface source")
        if problems and self.offline:
            self.report.add("interfaces", WARN, "offline: the domain will not start on the destination until these "
                            "exist there: %s" % "; ".join(problems), hint, interfaces=problems)
        elif problems:
            self.report.add("interfaces", FAIL, "the destination lacks what the guest's network interfaces use: %s"
                            % "; ".join(problems), hint, interfaces=problems)
        elif unknown:
            self.report.add("interfaces", WARN, "the destination's libvirt cannot list host interfaces, so these were "
                            "not checked: %s" % "; ".join(unknown), "make sure they exist there", interfaces=unknown)
        elif self.located.spec.interfaces:
            self.report.add("interfaces", PASS, "every network and bridge the guest uses is up on the destination: %s"
                            % ", ".join(sorted({n["source"] for n in self.located.spec.interfaces})))
        else:
            self.report.add("interfaces", PASS, "no interface that needs a network or bridge on the destination")

    def _dest_has(self, path):
        try:
            return self.stager.existing(path) is not None
        except InvalidRequest:  # its directory does not exist there
            return False

    def _firmware(self):
        """UEFI firmware, the guest's variable store (NVRAM) and an emulated TPM live outside the disks.  A live
        move needs the firmware and a way to make the variable store on the destination (QEMU then writes the
        guest's variables into it after the switch) and swtpm there; an offline move copies the store."""
        spec = self.located.spec
        if not (spec.loader or spec.nvram or spec.tpm_emulator):
            self.report.add("firmware", PASS, "no UEFI variable store or emulated TPM to carry")
            return
        problems, warnings, notes = [], [], []
        if spec.loader and not self._dest_has(spec.loader):
            (warnings if self.offline else problems).append("the firmware %s is missing" % spec.loader)
        if spec.nvram and self.offline:
            if self._dest_has(spec.nvram) and not self.stager.has_journal(os.path.dirname(spec.nvram), spec.uuid):
                problems.append("the destination already has a variable store at %s; refusing to overwrite it"
                                % spec.nvram)
            else:
                notes.append("the variable store %s is copied with the disks" % spec.nvram)
        elif spec.nvram and not self._dest_has(spec.nvram):
            if spec.nvram_template and not self._dest_has(spec.nvram_template):
                problems.append("the variable store %s is not there and its template %s is missing too"
                                % (spec.nvram, spec.nvram_template))
            else:
                notes.append("libvirt makes the variable store %s from %s, QEMU writes the guest's variables into "
                             "it after the switch" % (spec.nvram, spec.nvram_template or "the firmware's template"))
        if spec.tpm_emulator and self.offline:
            warnings.append("the emulated TPM's state (/var/lib/libvirt/swtpm/%s) is not copied by an offline move: "
                            "the guest starts with a new TPM there" % spec.uuid)
        elif spec.tpm_emulator:
            caps = self.dest.domain_capabilities(spec.arch, spec.machine, spec.domain_type)
            models = [v.text for v in caps.findall("devices/tpm/enum[@name='backendModel']/value")]
            if "emulator" not in models:
                problems.append("the destination's libvirt offers no emulated TPM (swtpm is not installed)")
            else:
                notes.append("QEMU carries the emulated TPM's state in the migration stream")
        hint = ("install the firmware (ovmf / edk2-ovmf) and swtpm on the destination, or migrate offline; a variable "
                "store left there by an earlier copy of this guest can be removed")
        if problems:
            self.report.add("firmware", FAIL, "; ".join(problems), hint, problems=problems)
        elif warnings:
            self.report.add("firmware", WARN, "; ".join(warnings + notes), hint)
        else:
            self.report.add("firmware", PASS, "; ".join(notes) or "firmware present on the destination")

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

    def _storage(self):
        """Work out what happens to every disk (left in place on shared storage, copied whole, or copied as an
        overlay on a template) and check that the destination can take it."""
        if self.stager is None:
            self.report.add("storage", SKIP, "no destination storage to check")
            return
        req, spec, dom = self.request, self.located.spec, self.located.source_domain
        plan = StoragePlan(requested=req.storage)
        self.located.storage = plan
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
        shared_dirs = set()
        if req.storage in ("shared", "auto"):
            for directory in sorted({os.path.dirname(d.source) for d in local}):
                try:
                    if self.source_stager.sees_marker_of(self.stager, directory):
                        shared_dirs.add(directory)
                except InvalidRequest:
                    pass  # no such directory on the destination: not shared
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
        plan.offline = self.offline
        if plan.copy and plan.shared:
            plan.mode = "mixed"
        elif plan.copy and self.offline:
            plan.mode = "copy_offline"
        elif plan.copy:
            plan.mode = "copy_incremental" if plan.incremental else "copy_all"
        else:
            plan.mode = "shared"
        if problems:
            self.report.add("storage", FAIL, "; ".join(problems),
                            "put shared disks on storage both hosts mount at the same path (NFS), or use storage "
                            "copy_all", plan=plan.as_dict())
            return
        self._destination_room(plan)

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

    def _destination_room(self, plan):
        conflicts = [v.path for _t, v, _a in plan.copy if self.stager.existing(v.path) is not None]
        uuid = self.located.source_domain.UUIDString() if self.located.source_domain is not None else None
        if conflicts and uuid and self.located.dest_domain is None and all(
                self.stager.has_journal(os.path.dirname(p), uuid) for p in conflicts):
            # This collection's journal for this domain is there: the files are what an interrupted run of the
            # same migration made.  They are removed before copying (the preflight itself removes nothing).
            plan.stale = conflicts
            conflicts = []
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

    def _network(self):
        req = self.request
        if self.offline:
            self.report.add("network", SKIP, "offline: the disks and the definition travel over the libvirt "
                            "connection, not the migration ports")
            return
        if urlparse(self.source.uri).hostname:
            self.report.add("network", SKIP, "the module runs away from the source host (uri %s); run it on the "
                            "source to check the migration data path" % self.source.uri)
            return
        problems, notes = [], []
        targets = []
        if req.migrate_uri:
            targets.append(("migrate_uri", urlparse(req.migrate_uri).hostname or req.migrate_uri))
        else:
            targets.append(("destination hostname", self.dest.hostname()))
        if req.disks_uri:
            targets.append(("disks_uri", urlparse(req.disks_uri).hostname or req.disks_uri))
        checked = set()
        for label, host in targets:
            address, error = resolve(host)
            if error:
                problems.append("the %s %s does not resolve on the source (%s)" % (label, host, error))
                continue
            if ipaddress.ip_address(address).is_loopback:
                problems.append("the %s %s resolves to %s, a loopback address, on the source" % (label, host, address))
                continue
            notes.append("%s %s -> %s" % (label, host, address))
            if address in checked:
                continue
            checked.add(address)
            for port in MIGRATION_PORTS:
                reachable, why = probe_port(address, port)
                if not reachable:
                    problems.append("port %d on %s (%s) is not reachable from the source: %s" % (port, host, address, why))
        if problems:
            self.report.add("network", FAIL, "; ".join(problems),
                            "open 49152-49215/tcp on the destination's firewall (firewall-cmd --add-port); make the "
                            "destination's name resolve on the source, set migration_host in its qemu.conf, or "
                            "pass migrate_uri/disks_uri with its address")
        else:
            self.report.add("network", PASS, "migration data path open: %s; ports %s reachable"
                            % (", ".join(notes), ", ".join(map(str, MIGRATION_PORTS))))


def _done_fraction(stats):
    total = stats.get("data_total") or 0
    return (stats.get("data_processed", 0) / float(total)) if total else 0.0


def _attr(value):
    return escape(str(value), {"'": "&apos;", '"': "&quot;"})


def offline_record_xml(source_host_uuid, source_uri, images):
    """The record an offline move writes into the destination's definition: where the domain came from, and
    each copied image's size, modification time and sha256 on the source."""
    parts = ["<move source_host_uuid='%s' source_uri='%s' at='%d'>"
             % (_attr(source_host_uuid), _attr(source_uri), int(time.time()))]
    for image in images:
        parts.append("<image path='%s' size='%d' mtime='%s' sha256='%s'/>"
                     % (_attr(image["path"]), image["size"], _attr(image["mtime"]), _attr(image["sha256"])))
    parts.append("</move>")
    return "".join(parts)


def read_offline_record(dom):
    """The offline move record of a domain's persistent definition, as a dict, or None."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OFFLINE_RECORD_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except Exception as exc:
        if is_error(exc, "VIR_ERR_NO_DOMAIN_METADATA", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_NO_SUPPORT"):
            return None
        with libvirt_errors("read the metadata of %s" % dom.name()):
            raise
    root = ET.fromstring(text)
    return {
        "source_host_uuid": root.get("source_host_uuid"),
        "source_uri": root.get("source_uri"),
        "at": int(root.get("at") or 0),
        "images": [{"path": i.get("path"), "size": int(i.get("size") or 0), "mtime": i.get("mtime") or "",
                    "sha256": i.get("sha256")} for i in root.iter() if i.tag.rsplit("}", 1)[-1] == "image"],
    }


def describe_cpu_model(cpu_xml):
    return _cpu.describe_cpu(cpu_xml)["model"]


def resolve(host):
    """(address, None) or (None, reason), as the source host resolves `host`."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return None, exc.strerror
    return infos[0][4][0], None


def probe_port(address, port, timeout=PORT_TIMEOUT):
    """(True, note) if a TCP connection reaches the host's port (accepted, or refused because nothing
    listens yet); (False, reason) if a firewall or the network stops it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        return True, "open"
    except ConnectionRefusedError:
        return True, "closed (nothing listens until a migration starts)"
    except socket.timeout:
        return False, "no answer within %.0f s (filtered)" % timeout
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
            return False, "%s (rejected by a firewall)" % os.strerror(exc.errno)
        return False, os.strerror(exc.errno) if exc.errno else str(exc)
    finally:
        sock.close()
