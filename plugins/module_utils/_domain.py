# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""A domain's XML as plain objects: disks with their backing chains, memory, machine, CPU, devices."""

from __future__ import annotations

import dataclasses
import os
import traceback

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt, libvirt_errors

try:
    from lxml import etree
except ImportError:
    etree = None
    LXML_IMPORT_ERROR = traceback.format_exc()
else:
    LXML_IMPORT_ERROR = None

# libvirt's state numbers (virDomainState), by value, so this works without libvirt.
DOMAIN_STATES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
# Why a domain is shut off (virDomainShutoffReason): says whether the guest stopped itself or QEMU died.
SHUTOFF_REASONS = {
    1: "the guest shut down", 2: "destroyed", 3: "QEMU crashed", 4: "migrated away", 5: "saved",
    6: "QEMU failed to start", 7: "restored from a snapshot", 8: "libvirtd found it gone",
}


@dataclasses.dataclass
class BackingImage:
    path: str
    format: str


@dataclasses.dataclass
class Disk:
    target: str
    device: str
    type: str
    source: str
    format: str
    cache: str
    readonly: bool
    shareable: bool
    backing: list

    @property
    def is_local_image(self):
        """A writable image on a local path: the kind that copy-storage migration moves."""
        return (
            self.device in ("disk", "lun")
            and self.type in ("file", "block")
            and bool(self.source)
            and not self.readonly
            and not self.shareable
        )

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DomainSpec:
    name: str
    uuid: str
    domain_type: str
    memory_kib: int
    vcpus: int
    arch: str
    machine: str
    cpu_mode: str
    disks: list
    hostdevs: list
    unmigratable_devices: list
    emulator: str = ""
    # [{"type": "network"|"bridge"|"direct", "source": name, "mac": address}]: what each NIC plugs into.
    interfaces: list = dataclasses.field(default_factory=list)
    # UEFI: the firmware code (<loader>), the guest's variable store (<nvram>) and the template it starts from.
    loader: str = ""
    nvram: str = ""
    nvram_template: str = ""
    # An emulated TPM (swtpm) keeps its state on the host, outside the domain's disks: tpm_state is the file or
    # directory tree that holds it.
    tpm_emulator: bool = False
    tpm_state: str = ""

    @classmethod
    def from_xml(cls, xml):
        root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
        os_type = root.find("os/type")
        vcpu = root.findtext("vcpu")
        cpu = root.find("cpu")
        return cls(
            name=root.findtext("name"),
            uuid=root.findtext("uuid"),
            domain_type=root.get("type"),
            memory_kib=_kib(root.find("memory")),
            vcpus=int(vcpu) if vcpu else 1,
            arch=os_type.get("arch") if os_type is not None else None,
            machine=os_type.get("machine") if os_type is not None else None,
            cpu_mode=(cpu.get("mode") or "custom") if cpu is not None else None,
            disks=[_parse_disk(d) for d in root.findall("devices/disk")],
            hostdevs=[_describe_hostdev(h) for h in root.findall("devices/hostdev")],
            unmigratable_devices=_unmigratable_devices(root),
            emulator=(root.findtext("devices/emulator") or "").strip(),
            interfaces=[_parse_interface(i) for i in root.findall("devices/interface")
                        if i.get("type") in INTERFACE_SOURCES],
            loader=(root.findtext("os/loader") or "").strip(),
            nvram=(root.findtext("os/nvram") or "").strip(),
            nvram_template=(root.find("os/nvram").get("template") or "") if root.find("os/nvram") is not None else "",
            tpm_emulator=any(b.get("type") == "emulator" for b in root.findall("devices/tpm/backend")),
            tpm_state=_tpm_state(root),
        )

    def disk(self, target):
        for d in self.disks:
            if d.target == target:
                return d
        return None


# Where libvirt keeps an emulated TPM's state unless the definition names a place (libvirt 9.0: <source>).
SWTPM_STORAGE_DIR = "/var/lib/libvirt/swtpm"


def _tpm_state(root):
    """The file or directory tree of the domain's emulated TPM state on the host, or ''."""
    backend = root.find("devices/tpm/backend[@type='emulator']")
    if backend is None:
        return ""
    source = backend.find("source")
    if source is not None and source.get("path"):
        path = os.path.normpath(source.get("path"))
    else:
        path = os.path.join(SWTPM_STORAGE_DIR, (root.findtext("uuid") or "").strip())
    # Never a top-level directory (or the storage root itself): the tree is copied and, as a leftover, removed.
    path = os.path.normpath(path)
    if not os.path.isabs(path) or path.count("/") < 2 or path == SWTPM_STORAGE_DIR:
        return ""
    return path


def _kib(node):
    if node is None or not node.text:
        return 0
    value = int(node.text)
    unit = (node.get("unit") or "KiB").lower()
    factors = {"b": 1.0 / 1024, "bytes": 1.0 / 1024, "k": 1, "kib": 1, "kb": 1000.0 / 1024, "m": 1024,
               "mib": 1024, "mb": 1000000.0 / 1024, "g": 1024 ** 2, "gib": 1024 ** 2, "gb": 1e9 / 1024}
    return int(value * factors.get(unit, 1))


def _source_of(disk_type, node):
    src = node.find("source")
    if src is None:
        return ""
    if disk_type == "file":
        return src.get("file") or ""
    if disk_type == "block":
        return src.get("dev") or ""
    if disk_type == "volume":
        return "%s/%s" % (src.get("pool"), src.get("volume"))
    if disk_type == "network":
        host = src.find("host")
        where = ""
        if host is not None:
            where = "%s:%s" % (host.get("name"), host.get("port") or "")
        return "%s://%s/%s" % (src.get("protocol"), where, src.get("name") or "")
    return ""


def _parse_disk(node):
    disk_type = node.get("type", "file")
    driver = node.find("driver")
    backing = []
    store = node.find("backingStore")
    while store is not None and store.get("type"):
        fmt = store.find("format")
        backing.append(BackingImage(path=_source_of(store.get("type"), store),
                                    format=fmt.get("type") if fmt is not None else ""))
        store = store.find("backingStore")
    target = node.find("target")
    return Disk(
        target=target.get("dev") if target is not None else "",
        device=node.get("device", "disk"),
        type=disk_type,
        source=_source_of(disk_type, node),
        format=(driver.get("type") if driver is not None else None) or "raw",
        cache=(driver.get("cache") if driver is not None else None) or "default",
        readonly=node.find("readonly") is not None,
        shareable=node.find("shareable") is not None,
        backing=backing,
    )


# The <interface> types whose <source> names something that must exist on the host, and its attribute.
INTERFACE_SOURCES = {"network": "network", "bridge": "bridge", "direct": "dev"}


def _parse_interface(node):
    src = node.find("source")
    # A running domain's XML shows a NIC on a libvirt network as type 'bridge' with source network= kept; the
    # destination needs the network (migration uses the definition's type).
    kind = "network" if src is not None and src.get("network") else node.get("type")
    mac = node.find("mac")
    return {"type": kind, "source": (src.get(INTERFACE_SOURCES[kind]) or "") if src is not None else "",
            "mac": mac.get("address") if mac is not None else ""}


def _describe_hostdev(node):
    src = node.find("source")
    address = src.find("address") if src is not None else None
    return {
        "mode": node.get("mode"),
        "type": node.get("type"),
        "model": node.get("model"),
        "address": dict(address.attrib) if address is not None else {},
    }


def _unmigratable_devices(root):
    """Devices other than <hostdev> that keep a domain from migrating live."""
    found = []
    for iface in root.findall("devices/interface[@type='hostdev']"):
        mac = iface.find("mac")
        found.append("SR-IOV interface passthrough (%s)" % (mac.get("address") if mac is not None else "hostdev"))
    for fs in root.findall("devices/filesystem"):
        driver = fs.find("driver")
        if driver is not None and driver.get("type") == "virtiofs":
            target = fs.find("target")
            found.append("virtiofs filesystem (%s)" % (target.get("dir") if target is not None else "?"))
    for tpm in root.findall("devices/tpm"):
        backend = tpm.find("backend")
        if backend is not None and backend.get("type") == "passthrough":
            found.append("TPM passthrough")
    return found


def state_name(domain):
    """'running', 'shutoff', ... for a virDomain, or 'absent' for None."""
    if domain is None:
        return "absent"
    state, _reason = domain.state()
    return DOMAIN_STATES.get(state, "unknown")


def state_detail(domain):
    """state_name(), with the reason when the domain is shut off: 'shutoff (QEMU crashed)'."""
    name = state_name(domain)
    if name == "shutoff":
        reason = SHUTOFF_REASONS.get(domain.state()[1])
        if reason:
            return "%s (%s)" % (name, reason)
    return name


def describe(domain):
    """Small, JSON-friendly summary of a domain on one host (None means absent)."""
    if domain is None:
        return {"state": "absent", "persistent": False, "active": False}
    return {
        "state": state_name(domain),
        "active": bool(domain.isActive()),
        "persistent": bool(domain.isPersistent()),
        "uuid": domain.UUIDString(),
    }


JOB_TYPES = {0: "none", 1: "bounded", 2: "unbounded", 3: "completed", 4: "failed", 5: "cancelled"}


def outgoing_migration(domain):
    """The statistics of the migration out of `domain` that is running now, or None."""
    if domain is None or not domain.isActive():
        return None
    try:
        stats = domain.jobStats(0)
    except Exception:  # no job information: nothing runs
        return None
    outgoing = getattr(libvirt, "VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT", 5)
    if not stats or stats.get("type", 0) == 0 or stats.get("operation") != outgoing:
        return None
    return stats


def job_report(domain):
    """The job running on a domain (type, percent done, libvirt's numeric statistics); type none without one."""
    if domain is None or not domain.isActive():
        return {"type": "none", "stats": {}}
    with libvirt_errors("read the job of %s" % domain.name()):
        stats = domain.jobStats(0)
    job = {"type": JOB_TYPES.get(stats.get("type", 0), "unknown"),
           "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "type"}}
    total = stats.get("data_total") or 0
    if total:
        job["percent"] = round(100.0 * (total - stats.get("data_remaining", 0)) / total, 1)
    return job
