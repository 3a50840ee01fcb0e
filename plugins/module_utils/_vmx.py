# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Read a VMware .vmx file (ESXi or Workstation) into what a KVM definition needs: memory, vCPUs and topology,
firmware, disks in boot order, network adapters with their MAC addresses, the guest OS, and every present device
that has no KVM counterpart (reported, never dropped silently).  Plain Python, no libvirt."""

from __future__ import annotations

import re

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest

MAX_VMX_BYTES = 1024 * 1024  # real .vmx files are a few KiB; anything this big is not one
MAX_MEMORY_MIB = 24 * 1024 * 1024  # ESXi 8's per-VM limit (24 TiB)
MAX_VCPUS = 768  # ESXi 8's per-VM limit

_LINE = re.compile(r'^\s*([A-Za-z0-9_.:\-\[\]]+)\s*=\s*"(.*)"\s*$')
_ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")
_DISK_UNIT = re.compile(r"^(scsi|sata|ide|nvme)(\d+):(\d+)$")
_ETHERNET = re.compile(r"^ethernet(\d+)$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Devices named by these prefixes are mapped (disk controllers and their units, network adapters) or are not
# devices at all; every other "<device>.present = TRUE" is reported as not imported.
_MAPPED_PREFIXES = ("scsi", "sata", "ide", "nvme", "ethernet")
_NOT_DEVICES = ("pcibridge", "svga", "vmotion", "tools", "isolation", "toolscripts", "chipset", "hpet", "mks")
_DEVICE_NAMES = (
    ("pcipassthru", "PCI passthrough device"),
    ("usb_xhci", "USB 3 controller"),
    ("usb", "USB controller"),
    ("ehci", "USB 2 controller"),
    ("sound", "sound card"),
    ("floppy", "floppy drive"),
    ("serial", "serial port"),
    ("parallel", "parallel port"),
    ("vmci", "VMCI device (VMware-only)"),
    ("sharedfolder", "shared folder (VMware-only)"),
    ("vtpm", "virtual TPM"),
    ("nvdimm", "NVDIMM"),
    ("vwdt", "virtual watchdog"),
    ("precisionclock", "precision clock (VMware-only)"),
)

# guestOS -> (osinfo id, family).  Families: linux and bsd guests have virtio drivers; windows and unknown ones may not.
_GUEST_OS = {
    "debian12-64": ("http://debian.org/debian/12", "linux"),
    "debian11-64": ("http://debian.org/debian/11", "linux"),
    "debian10-64": ("http://debian.org/debian/10", "linux"),
    "ubuntu-64": ("http://ubuntu.com/ubuntu/22.04", "linux"),
    "rhel9-64": ("http://redhat.com/rhel/9.0", "linux"),
    "rhel8-64": ("http://redhat.com/rhel/8.0", "linux"),
    "rhel7-64": ("http://redhat.com/rhel/7.0", "linux"),
    "centos9-64": ("http://centos.org/centos-stream/9", "linux"),
    "centos8-64": ("http://centos.org/centos/8", "linux"),
    "centos7-64": ("http://centos.org/centos/7.0", "linux"),
    "rockylinux-64": ("http://rockylinux.org/rocky/9", "linux"),
    "almalinux-64": ("http://almalinux.org/almalinux/9", "linux"),
    "oraclelinux9-64": ("http://oracle.com/ol/9.0", "linux"),
    "sles15-64": ("http://suse.com/sles/15", "linux"),
    "sles12-64": ("http://suse.com/sles/12", "linux"),
    "fedora-64": ("http://fedoraproject.org/fedora/unknown", "linux"),
    "other6xlinux-64": ("http://libosinfo.org/linux/2022", "linux"),
    "other5xlinux-64": ("http://libosinfo.org/linux/2020", "linux"),
    "other4xlinux-64": ("http://libosinfo.org/linux/2018", "linux"),
    "other3xlinux-64": ("http://libosinfo.org/linux/2016", "linux"),
    "otherlinux-64": ("http://libosinfo.org/linux/2016", "linux"),
    "freebsd13-64": ("http://freebsd.org/freebsd/13.0", "bsd"),
    "freebsd14-64": ("http://freebsd.org/freebsd/14.0", "bsd"),
    "windows9-64": ("http://microsoft.com/win/10", "windows"),
    "windows11-64": ("http://microsoft.com/win/11", "windows"),
    "windows9srv-64": ("http://microsoft.com/win/2k16", "windows"),
    "windows2019srv-64": ("http://microsoft.com/win/2k19", "windows"),
    "windows2019srvnext-64": ("http://microsoft.com/win/2k22", "windows"),
    "windows2022srvnext-64": ("http://microsoft.com/win/2k22", "windows"),
}
# The BIOS order VMware uses when bios.hddOrder is not set.
_BUS_ORDER = {"ide": 0, "scsi": 1, "sata": 2, "nvme": 3}


def _unescape(value):
    # .vmx files write '"', '|', '#' and non-ASCII bytes as |XX (hex)
    def byte(match):
        return chr(int(match.group(1), 16))
    text = _ESCAPE.sub(byte, value)
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def parse_vmx_text(text, path="the .vmx file"):
    """key = "value" lines as a dict with lower-case keys (VMware reads keys case-insensitively)."""
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if not match:
            raise InvalidRequest("%s is not a VMware .vmx file: line %d is not key = \"value\" (%r)"
                                 % (path, number, stripped[:80]))
        entries[match.group(1).lower()] = _unescape(match.group(2))
    if "config.version" not in entries or "virtualhw.version" not in entries:
        raise InvalidRequest("%s is not a VMware .vmx file: it has no config.version and virtualHW.version" % path)
    return entries


def _true(entries, key, default=False):
    value = entries.get(key)
    if value is None:
        return default
    return value.strip().lower() in ("true", "yes", "1")


def _int(entries, key, default, path, low, high):
    raw = entries.get(key)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidRequest("%s: %s = %r is not a whole number" % (path, key, raw))
    if not low <= value <= high:
        raise InvalidRequest("%s: %s = %d is outside %d-%d" % (path, key, value, low, high))
    return value


def _disks(entries, path):
    units = {}
    for key in entries:
        name = key.rsplit(".", 1)[0]
        match = _DISK_UNIT.match(name)
        if match and key.endswith(".filename"):
            units[name] = match
    disks, cdroms = [], []
    for unit, match in units.items():
        bus, controller = match.group(1), match.group(2)
        if not _true(entries, "%s.present" % unit) or \
                not _true(entries, "%s%s.present" % (bus, controller), default=True):
            continue
        file_name = entries["%s.filename" % unit]
        device_type = entries.get("%s.devicetype" % unit, "").lower()
        if "cdrom" in device_type or not file_name.lower().endswith(".vmdk"):
            cdroms.append({"vmx_key": "%s.fileName" % unit, "device": "CD-ROM or other media (%s)" % file_name,
                           "reason": "media is not imported; attach it on KVM with virsh change-media"})
            continue
        disks.append({
            "unit": unit, "bus": bus, "controller": int(controller), "slot": int(match.group(3)),
            "file_name": file_name,
            "controller_model": entries.get("%s%s.virtualdev" % (bus, controller), bus),
            "mode": entries.get("%s.mode" % unit, "persistent").lower(),
        })
    order = [u.strip().lower() for u in entries.get("bios.hddorder", "").split(",") if u.strip()]

    def rank(disk):
        listed = order.index(disk["unit"]) if disk["unit"] in order else len(order)
        return (listed, _BUS_ORDER[disk["bus"]], disk["controller"], disk["slot"])
    disks.sort(key=rank)
    if not disks:
        raise InvalidRequest("%s has no virtual disk (no present scsiX:Y, sataX:Y, ideX:Y or nvmeX:Y with a .vmdk "
                             "fileName)" % path)
    return disks, cdroms


def _nics(entries, path):
    nics = []
    for key in entries:
        match = _ETHERNET.match(key.rsplit(".", 1)[0]) if key.endswith(".present") else None
        if not match or not _true(entries, key):
            continue
        prefix = "ethernet%s" % match.group(1)
        address_type = entries.get(prefix + ".addresstype", "generated").lower()
        mac = entries.get(prefix + ".address") if address_type == "static" else entries.get(prefix + ".generatedaddress")
        mac = (mac or "").strip().lower() or None
        if mac is not None and not _MAC.match(mac):
            raise InvalidRequest("%s: %s has the MAC address %r, which is not six hex pairs" % (path, prefix, mac))
        # Workstation's NAT/host-only adapters have no networkName; they are named by their connection type.
        network = entries.get(prefix + ".networkname") or entries.get(prefix + ".connectiontype") or "bridged"
        nics.append({"index": int(match.group(1)), "vmx_name": prefix, "network": network, "mac": mac,
                     "model": entries.get(prefix + ".virtualdev", "e1000").lower()})
    nics.sort(key=lambda nic: nic["index"])
    return nics


def _unmapped(entries):
    found = []
    for key, value in sorted(entries.items()):
        if not key.endswith(".present") or value.strip().lower() not in ("true", "yes", "1"):
            continue
        device = key[:-len(".present")]
        if device.startswith(_MAPPED_PREFIXES) or device.startswith(_NOT_DEVICES):
            continue
        label = next((text for prefix, text in _DEVICE_NAMES if device.startswith(prefix)), "VMware device")
        found.append({"vmx_key": key, "device": "%s (%s)" % (label, device),
                      "reason": "no KVM counterpart is created; add it to the definition by hand if the guest needs it"})
    return found


def read_vmx(text, path="the .vmx file"):
    """The parts of a .vmx a KVM definition is made from, as a plain dict."""
    entries = parse_vmx_text(text, path)
    memory_mib = _int(entries, "memsize", 32, path, 4, MAX_MEMORY_MIB)
    vcpus = _int(entries, "numvcpus", 1, path, 1, MAX_VCPUS)
    cores = _int(entries, "cpuid.corespersocket", 1, path, 1, MAX_VCPUS)
    warnings = []
    if vcpus % cores:
        warnings.append("numvcpus = %d is not a multiple of cpuid.coresPerSocket = %d; the guest gets %d sockets of "
                        "1 core" % (vcpus, cores, vcpus))
        cores = 1
    guest_os = entries.get("guestos", "").strip().lower()
    osinfo, family = _GUEST_OS.get(guest_os, (None, None))
    if family is None:
        family = "windows" if guest_os.startswith("win") else "linux" if "linux" in guest_os else "unknown"
    disks, cdroms = _disks(entries, path)
    return {
        "display_name": entries.get("displayname", "").strip(),
        "memory_mib": memory_mib,
        "vcpus": vcpus,
        "cores_per_socket": cores,
        "sockets": vcpus // cores,
        "firmware": "efi" if entries.get("firmware", "bios").strip().lower() == "efi" else "bios",
        "secure_boot": _true(entries, "uefi.secureboot.enabled"),
        "guest_os": guest_os,
        "osinfo": osinfo,
        "os_family": family,
        "uuid_bios": entries.get("uuid.bios", ""),
        "disks": disks,
        "nics": _nics(entries, path),
        "unmapped": cdroms + _unmapped(entries),
        "warnings": warnings,
    }
