# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The libvirt definition of a VM imported from VMware, generated from what the .vmx says (never converted
text): memory, vCPU topology, firmware, machine type, disks in boot order, MAC addresses, a serial console, and
the device profile (virtio, or SATA/e1000e for guests without virtio drivers).  Also the import record the
definition carries in its metadata, so a re-run recognises its own import.  Plain Python, no libvirt."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

IMPORT_RECORD_NS = "https://github.com/kvm-migration/kvm.migration/vmware-import/1"
IMPORT_RECORD_PREFIX = "kvmimport"
LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
CONSOLE_LOG = "/var/log/libvirt/qemu/%s-console.log"
_UUID_HEX = re.compile(r"^[0-9a-f]{32}$")


def bios_uuid(vmx_uuid):
    """uuid.bios ("56 4d 12 ... 34-56 ...") as a libvirt UUID, or None: the guest keeps its SMBIOS system UUID."""
    digits = re.sub(r"[\s-]", "", vmx_uuid or "").lower()
    if not _UUID_HEX.match(digits):
        return None
    return "%s-%s-%s-%s-%s" % (digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:])


def _sub(parent, tag, text=None, **attrs):
    element = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        element.text = str(text)
    return element


def _disk_target(profile, index):
    prefix = "vd" if profile == "virtio" else "sd"
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def disk_targets(profile, count):
    return [_disk_target(profile, i) for i in range(count)]


def _os(root, vm, options):
    os_el = _sub(root, "os", firmware="efi" if vm["firmware"] == "efi" else None)
    _sub(os_el, "type", "hvm", arch="x86_64", machine=options["machine"])
    if vm["firmware"] == "efi" and vm["secure_boot"]:
        firmware = _sub(os_el, "firmware")
        _sub(firmware, "feature", enabled="yes", name="secure-boot")
        _sub(firmware, "feature", enabled="yes", name="enrolled-keys")
        _sub(os_el, "loader", secure="yes")
    _sub(os_el, "bootmenu", enable="no")


def _features(root, vm, options):
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if vm["firmware"] == "efi" and vm["secure_boot"]:
        _sub(features, "smm", state="on")
    if vm["os_family"] == "windows" and options["domain_type"] == "kvm":
        hyperv = _sub(features, "hyperv", mode="custom")
        _sub(hyperv, "relaxed", state="on")
        _sub(hyperv, "vapic", state="on")
        _sub(hyperv, "spinlocks", state="on", retries="8191")


def _cpu(root, vm, options):
    if options["cpu_model"]:
        cpu = _sub(root, "cpu", mode="custom", match="exact", check="partial")
        _sub(cpu, "model", options["cpu_model"], fallback="forbid")
    elif options["domain_type"] == "kvm":
        cpu = _sub(root, "cpu", mode="host-model", check="partial")
    else:
        cpu = _sub(root, "cpu")
    _sub(cpu, "topology", sockets=vm["sockets"], dies=1, cores=vm["cores_per_socket"], threads=1)


def _disks(devices, disks, profile):
    bus = "virtio" if profile == "virtio" else "sata"
    for index, disk in enumerate(disks):
        if disk.get("block"):
            element = _sub(devices, "disk", type="block", device="disk")
            _sub(element, "driver", name="qemu", type="raw", cache="none", io="native", discard="unmap")
            _sub(element, "source", dev=disk["volume"])
        else:
            element = _sub(devices, "disk", type="file", device="disk")
            _sub(element, "driver", name="qemu", type=disk["format"], cache="none", discard="unmap")
            _sub(element, "source", file=disk["volume"])
        _sub(element, "target", dev=disk["target"], bus=bus)
        if index == 0:
            _sub(element, "boot", order="1")


def _interfaces(devices, nics, profile, machine):
    if profile == "virtio":
        model = "virtio"
    else:
        model = "e1000" if machine.startswith("pc") else "e1000e"
    for nic in nics:
        element = _sub(devices, "interface", type=nic["type"])
        if nic["mac"]:
            _sub(element, "mac", address=nic["mac"])
        if nic["type"] == "network":
            _sub(element, "source", network=nic["source"])
        else:
            _sub(element, "source", bridge=nic["source"])
        _sub(element, "model", type=model)


def _console(devices, name):
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=CONSOLE_LOG % name, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")


def domain_xml(name, vm, disks, nics, options, record_xml=None):
    """The definition as XML text.  disks: [{volume, format, target, block}] in boot order; nics: [{type
    network|bridge, source, mac}]; options: domain_type, machine, device_profile, cpu_model."""
    profile = options["device_profile"]
    root = ET.Element("domain", {"type": options["domain_type"]})
    _sub(root, "name", name)
    uuid = bios_uuid(vm["uuid_bios"])
    if uuid:
        _sub(root, "uuid", uuid)
    metadata = _sub(root, "metadata")
    if vm["osinfo"]:
        ET.register_namespace("libosinfo", LIBOSINFO_NS)
        info = _sub(metadata, "{%s}libosinfo" % LIBOSINFO_NS)
        _sub(info, "{%s}os" % LIBOSINFO_NS, id=vm["osinfo"])
    if record_xml is not None:
        ET.register_namespace(IMPORT_RECORD_PREFIX, IMPORT_RECORD_NS)
        metadata.append(ET.fromstring(record_xml))
    _sub(root, "memory", vm["memory_mib"], unit="MiB")
    _sub(root, "currentMemory", vm["memory_mib"], unit="MiB")
    _sub(root, "vcpu", vm["vcpus"], placement="static")
    _os(root, vm, options)
    _features(root, vm, options)
    _cpu(root, vm, options)
    clock = _sub(root, "clock", offset="localtime" if vm["os_family"] == "windows" else "utc")
    _sub(clock, "timer", name="rtc", tickpolicy="catchup")
    _sub(clock, "timer", name="pit", tickpolicy="delay")
    _sub(clock, "timer", name="hpet", present="no")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    _disks(devices, disks, profile)
    _interfaces(devices, nics, profile, options["machine"])
    _console(devices, name)
    if profile == "virtio":
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type="virtio" if profile == "virtio" else "vga")
    _sub(devices, "memballoon", model="virtio" if profile == "virtio" else "none")
    if hasattr(ET, "indent"):  # Python 3.9+
        ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def import_record_xml(vmx_path, files, volumes, for_set_metadata=False):
    """What the definition records of its source: every source file's size, mtime and sha256, and the volumes
    the import made (the only files state=absent deletes).  for_set_metadata: without the namespace, which
    virDomainSetMetadata adds itself (it fails on an element that declares it)."""
    ns = "" if for_set_metadata else "{%s}" % IMPORT_RECORD_NS
    root = ET.Element(ns + "import", {"vmx": vmx_path, "at": str(int(time.time()))})
    for item in files:
        ET.SubElement(root, ns + "file", {
            "path": item["path"], "size": str(item["size"]), "mtime_ns": str(item["mtime_ns"]),
            "sha256": item["sha256"]})
    for volume in volumes:
        ET.SubElement(root, ns + "volume", {"path": volume})
    ET.register_namespace(IMPORT_RECORD_PREFIX, IMPORT_RECORD_NS)
    return ET.tostring(root, encoding="unicode")


def parse_import_record(text):
    """The import record (metadata element text) as a dict."""
    root = ET.fromstring(text)

    def local(element):
        return element.tag.rsplit("}", 1)[-1]
    return {
        "vmx": root.get("vmx"),
        "at": int(root.get("at") or 0),
        "files": [{"path": e.get("path"), "size": int(e.get("size") or -1), "mtime_ns": int(e.get("mtime_ns") or -1),
                   "sha256": e.get("sha256")} for e in root if local(e) == "file"],
        "volumes": [e.get("path") for e in root if local(e) == "volume"],
    }
