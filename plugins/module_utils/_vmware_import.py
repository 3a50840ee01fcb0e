# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Import a VMware VM into a libvirt host: plan (read-only: the .vmx, every VMDK file, the pool's room, the
networks, the host's capabilities), then convert each disk next to its final name, check and compare it, and
define the domain with a record of its sources.  A marker file in the pool names what a run is making, so a run
that was killed is cleaned up by the next one; any failure removes what was made."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import xml.etree.ElementTree as ET

from ansible_collections.kvm.migration.plugins.module_utils import _vmdk, _vmx
from ansible_collections.kvm.migration.plugins.module_utils._import_progress import ProgressFile
from ansible_collections.kvm.migration.plugins.module_utils._errors import (
    InvalidRequest,
    KvmMigrationError,
    OperationFailed,
)
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import is_error, libvirt, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._vmware_definition import (
    IMPORT_RECORD_NS,
    bios_uuid,
    disk_targets,
    domain_xml,
    import_record_xml,
    parse_import_record,
)

FILE_POOL_TYPES = ("dir", "fs", "netfs")
BLOCK_POOL_TYPES = ("logical",)
BLOCK_MARKER_DIR = "/var/lib/kvm-migration/imports"  # a volume group has no directory to keep a marker in
SPACE_RESERVE = 64 * 1024 * 1024  # left free after the import, for the guest's first writes and metadata
MARKER = ".kvm-migration-import-%s.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]")


def check_vmx_path(path):
    if not path or not path.startswith("/") or any(p == ".." for p in path.split("/")) or _UNSAFE_PATH.search(path):
        raise InvalidRequest("vmx=%r is not an absolute path without '..', newlines or control characters" % path)
    if not path.lower().endswith(".vmx"):
        raise InvalidRequest("vmx=%r does not name a .vmx file" % path)


def domain_name(requested, display_name):
    """The requested name, checked, or one made from the VM's displayName (spaces and the like become '-')."""
    if requested is not None:
        if not _NAME.match(requested):
            raise InvalidRequest("name=%r is not usable: it names the domain and its volumes, so it may hold only "
                                 "letters, digits, '_', '.', '+' and '-', start with a letter or digit and have at "
                                 "most 63 characters" % requested)
        return requested
    made = re.sub(r"[^A-Za-z0-9_.+-]+", "-", display_name).strip("-.")[:63].rstrip("-.")
    if not made or not _NAME.match(made):
        raise InvalidRequest("the .vmx has no displayName a domain name can be made from (%r); set name"
                             % display_name)
    return made


def fingerprint(path, with_hash=True):
    st = os.stat(path)
    item = {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": ""}
    if with_hash:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(4 * 1024 * 1024), b""):
                digest.update(block)
        item["sha256"] = digest.hexdigest()
    return item


def source_changes(recorded):
    """The recorded source files that changed since the import (size or content; a new mtime with the same
    content, for example after a plain cp, is no change)."""
    changed = []
    for item in recorded:
        try:
            now = fingerprint(item["path"], with_hash=False)
        except OSError:
            changed.append("%s is gone" % item["path"])
            continue
        if now["size"] != item["size"]:
            changed.append("%s has %d bytes, %d when imported" % (item["path"], now["size"], item["size"]))
        elif now["mtime_ns"] != item["mtime_ns"] and fingerprint(item["path"])["sha256"] != item["sha256"]:
            changed.append("%s has new content (sha256 differs)" % item["path"])
    return changed


def read_import_record(dom):
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, IMPORT_RECORD_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except Exception as exc:
        if is_error(exc, "VIR_ERR_NO_DOMAIN_METADATA", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_NO_SUPPORT"):
            return None
        with libvirt_errors("read the metadata of %s" % dom.name()):
            raise
    return parse_import_record(text)


def _alive(pid, boot_id):
    if boot_id != _boot_id():
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class Pool:
    """The target pool.  A file pool (dir, fs, netfs) is a directory: qemu-img writes the volumes there and the pool
    is refreshed so libvirt lists them.  A block pool (logical: an LVM volume group) gets its volumes from libvirt,
    sized to the disk, and qemu-img writes raw data into the block device."""

    def __init__(self, client, name):
        pool = client.lookup_pool(name)
        if pool is None:
            raise InvalidRequest("pool=%r: there is no storage pool of that name on %s" % (name, client.uri),
                                 hint="create it first with kvm.migration.storage_pool")
        with libvirt_errors("read storage pool %s on %s" % (name, client.uri)):
            if not pool.isActive():
                raise InvalidRequest("pool=%r is not active on %s" % (name, client.uri),
                                     hint="start it (virsh pool-start %s)" % name)
            root = ET.fromstring(pool.XMLDesc(0))
            uuid = pool.UUIDString()
        self.kind = root.get("type")
        if self.kind not in FILE_POOL_TYPES + BLOCK_POOL_TYPES:
            raise InvalidRequest("pool=%r is a %s pool; the import writes image files into a dir, fs or netfs pool, "
                                 "or block volumes into a logical (LVM) pool" % (name, self.kind))
        self.block = self.kind in BLOCK_POOL_TYPES
        self.name = name
        self.pool = pool
        # LVM names its volumes /dev/VG/LV whatever the pool's target path says
        self.path = "/dev/" + root.findtext("source/name", "") if self.block else root.findtext("target/path")
        self.marker_dir = os.path.join(BLOCK_MARKER_DIR, uuid) if self.block else self.path
        self.client = client
        self._listed = False

    def available(self):
        with libvirt_errors("refresh storage pool %s" % self.name):
            self.pool.refresh(0)
            return self.pool.info()[3]

    def refresh(self):
        with libvirt_errors("refresh storage pool %s" % self.name):
            self.pool.refresh(0)

    def marker_path(self, name):
        return os.path.join(self.marker_dir, MARKER % name)

    def has(self, path):
        if not self.block:
            return os.path.lexists(path)
        if not self._listed:  # LVs made since libvirt last looked, by lvcreate or another host of a shared VG
            self.refresh()
            self._listed = True
        return self._volume(path) is not None

    def _volume(self, path):
        try:
            return self.pool.storageVolLookupByName(os.path.basename(path))
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                return None
            with libvirt_errors("look up volume %s in pool %s" % (os.path.basename(path), self.name)):
                raise

    def create_volume(self, path, size):
        """A block volume of at least size bytes at path (LVM rounds up to its extent size)."""
        xml = ("<volume><name>%s</name><capacity unit='bytes'>%d</capacity><allocation unit='bytes'>%d</allocation>"
               "</volume>" % (os.path.basename(path), size, size))
        with libvirt_errors("create volume %s of %d MiB in pool %s" % (os.path.basename(path), size >> 20, self.name)):
            made = self.pool.createXML(xml, 0).path()
        if made != path:
            self.remove([made])
            raise OperationFailed("pool %s made volume %s at %s, not at %s as planned; it was removed"
                                  % (self.name, os.path.basename(path), made, path))

    def remove(self, paths):
        """Removes the volumes (and, in a file pool, the files) of paths; returns those that were there."""
        if not self.block:
            return remove_files(paths)
        removed = []
        for path in paths:
            volume = self._volume(path)
            if volume is None:
                continue
            with libvirt_errors("delete volume %s in pool %s" % (os.path.basename(path), self.name)):
                volume.delete(0)
            removed.append(path)
        return removed

    def prepare_marker_dir(self):
        if self.block:
            os.makedirs(self.marker_dir, mode=0o700, exist_ok=True)

    def drop_marker(self, marker):
        remove_files([marker])
        if self.block:
            try:
                os.rmdir(self.marker_dir)
            except OSError:
                pass  # another import's marker is there


def pending_cleanup(pool, name, domain_has_record):
    """What an interrupted run of this import left (from its marker): (marker path, files) or (None, [])."""
    marker = pool.marker_path(name)
    if not os.path.exists(marker):
        return None, []
    try:
        with open(marker) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    if _alive(int(data.get("pid") or 0), data.get("boot_id")):
        raise InvalidRequest("another import of %s is running (pid %s) on this host" % (name, data.get("pid")),
                             hint="wait for it; if it hangs, stop it, and the next run cleans up after it")
    if domain_has_record:
        return marker, []
    made_here = re.compile(r"^%s-(disk\d+|sd[a-z]+)" % re.escape(name))  # this module's volumes, virt-v2v's files
    files = [p for p in data.get("files", []) if isinstance(p, str) and os.path.dirname(p) == pool.path.rstrip("/")
             and made_here.match(os.path.basename(p)) and pool.has(p)]
    return marker, files


def write_marker(pool, name, files):
    """Names what this run is about to make, for the next run should this one be killed."""
    marker = pool.marker_path(name)
    pool.prepare_marker_dir()
    with open(marker, "w") as f:
        json.dump({"name": name, "files": files, "pid": os.getpid(), "boot_id": _boot_id(),
                   "started": int(time.time())}, f)
    return marker


def remove_files(paths):
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def zero_tail(path, size):
    """Zeroes what lies past size in the device at path (what the volume had before)."""
    chunk = b"\0" * (1 << 20)
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(size)
        while f.tell() < end:
            f.write(chunk[:end - f.tell()])
        f.flush()
        os.fsync(f.fileno())


def resolve_disk_path(vmx_dir, file_name, key):
    """A disk the .vmx names, inside the .vmx's directory.  ESXi names disks on other datastores by an absolute
    /vmfs/volumes/... path; such a disk is looked for by its file name next to the .vmx."""
    base = file_name.rsplit("/", 1)[-1] if file_name.startswith("/") else file_name
    if not base or base in (".", "..") or "/" in base or "\\" in base or _UNSAFE_PATH.search(base):
        raise InvalidRequest("%s = %r: disks must be plain file names next to the .vmx (no '..', '/', '\\' or "
                             "control characters)" % (key, file_name),
                             hint="copy the disk next to the .vmx and write its file name there")
    return os.path.join(vmx_dir, base), base != file_name


def plan_disks(vmx_dir, vm, qemu_img, fmt, delta_chain, block=False):
    """Per disk: its layers (top first), the files it is made of, its size and the space its copy needs (a block
    volume is allocated in full)."""
    disks, seen = [], set()
    for disk in vm["disks"]:
        key = "%s.fileName" % disk["unit"]
        path, by_basename = resolve_disk_path(vmx_dir, disk["file_name"], key)
        if path in seen:
            raise InvalidRequest("%s names %s, which another disk of this VM uses too" % (key, path))
        seen.add(path)
        chain = _vmdk.read_chain(path)
        info = qemu_img.info(path, "vmdk")
        for layer in chain:
            qemu_img.check_source(layer["path"], "vmdk")
        layers = chain if delta_chain == "keep" else chain[:1]
        if block:
            needed = info["virtual-size"]
        elif delta_chain == "consolidate":
            needed = qemu_img.measure(path, "vmdk", "qcow2")
        else:
            needed = sum(os.stat(f).st_size for layer in chain for f in layer["files"])
        disks.append({"unit": disk["unit"], "source": path, "by_basename": by_basename,
                      "create_type": chain[0]["create_type"], "chain": [layer["path"] for layer in chain],
                      "files": [f for layer in chain for f in layer["files"]], "virtual_size": info["virtual-size"],
                      "needed": needed, "format": fmt, "layers": len(layers), "block": block})
    return disks


def volume_names(name, index, layers, fmt, block=False):
    """Final volume names of one disk, base first; the top layer's is the one the domain uses."""
    top = "%s-disk%d" % (name, index) if block else "%s-disk%d.%s" % (name, index, fmt)
    return ["%s-disk%d-snap%d.qcow2" % (name, index, n) for n in range(layers - 1)] + [top]


def _bridge_state(client, name):
    # The module runs on the host itself: sysfs is the truth (libvirt's node-device list misses bridges made
    # after libvirtd started where no udev events arrive, as in containers).
    if os.path.isdir("/sys/class/net/%s" % name):
        return "active"
    return client.host_interface_state(name)


def map_networks(vm, networks, client):
    """VMware network names -> libvirt interfaces.  Every adapter must be mapped (a '*' entry maps the rest)."""
    by_name = {}
    for entry in networks:
        by_name[entry["vmware"]] = entry
    mapped, missing, warnings = [], [], []
    for nic in vm["nics"]:
        entry = by_name.get(nic["network"]) or by_name.get("*")
        if entry is None:
            missing.append("%s (%s)" % (nic["network"], nic["vmx_name"]))
            continue
        kind = "network" if entry.get("network") else "bridge"
        source = entry.get("network") or entry.get("bridge")
        state = client.network_state(source) if kind == "network" else _bridge_state(client, source)
        if state == "absent":
            raise InvalidRequest("networks: %s %r (for VMware network %r) does not exist on %s"
                                 % (kind, source, nic["network"], client.uri))
        if state is None:
            warnings.append("could not tell whether bridge %s exists on %s" % (source, client.uri))
        mapped.append({"vmx_name": nic["vmx_name"], "vmware_network": nic["network"], "type": kind,
                       "source": source, "mac": nic["mac"], "vmware_model": nic["model"]})
    if missing:
        raise InvalidRequest("networks maps no libvirt network or bridge for the VMware network(s) %s"
                             % ", ".join(missing),
                             hint="add {vmware: NAME, network: LIBVIRT_NETWORK} (or bridge: BRIDGE) to networks, "
                                  "or {vmware: '*', ...} for all of them")
    return mapped, warnings


def check_host(client, options, vm):
    """The host can run what the definition asks for: the virtualisation type, the machine, UEFI firmware."""
    try:
        root = client.domain_capabilities("x86_64", options["machine"], options["domain_type"])
    except KvmMigrationError as exc:
        hint = "set domain_type=qemu (this host has no KVM)" if options["domain_type"] == "kvm" else \
            "choose a machine type that virsh domcapabilities lists"
        raise InvalidRequest("this host cannot run an x86_64 %s guest with machine=%r: %s"
                             % (options["domain_type"], options["machine"], exc.msg), hint=hint)
    firmwares = [v.text for v in root.findall("os/enum[@name='firmware']/value")]
    if vm["firmware"] == "efi" and "efi" not in firmwares:
        raise InvalidRequest("the VM boots with UEFI (firmware = \"efi\") but this host has no UEFI firmware for "
                             "QEMU", hint="install OVMF (ovmf on Debian, edk2-ovmf on RHEL/Fedora)")


def definition_disks(disks):
    """What the definition takes of each planned disk."""
    return [{k: d[k] for k in ("volume", "format", "target", "block")} for d in disks]


def check_pool_fits(pool, params):
    if not pool.block:
        return
    if params["format"] != "raw":
        raise InvalidRequest("pool=%r is a logical (LVM) pool: its volumes are block devices, which hold raw data, so "
                             "format=%s cannot be written there" % (pool.name, params["format"]),
                             hint="set format=raw")
    if params["converter"] != "qemu-img":
        raise InvalidRequest("converter=%s writes image files; pool=%r is a logical (LVM) pool"
                             % (params["converter"], pool.name),
                             hint="use converter=qemu-img, or a dir pool for virt-v2v")


def resolve_profile(requested, vm):
    """virtio unless the guest may lack its drivers; 'auto' decides from the guest OS."""
    if requested != "auto":
        return requested, []
    if vm["os_family"] in ("linux", "bsd"):
        return "virtio", []
    return "compat", ["%s (guestOS %r) may have no virtio drivers, so it gets SATA disks and an e1000e adapter, "
                      "which are slow; install the virtio drivers in the guest and re-import with "
                      "device_profile=virtio, or use converter=virt-v2v to inject them"
                      % ("Windows" if vm["os_family"] == "windows" else "this guest", vm["guest_os"] or "unset")]


class Importer:
    """One import on one host.  plan() changes nothing; run() carries a plan out and leaves nothing behind if it
    fails."""

    def __init__(self, client, qemu_img, params, log=None):
        self.client = client
        self.qemu_img = qemu_img
        self.params = params
        self.log = log or (lambda text: None)

    def read(self):
        check_vmx_path(self.params["vmx"])
        try:
            with open(self.params["vmx"], "rb") as f:
                data = f.read(_vmx.MAX_VMX_BYTES + 1)
        except OSError as exc:
            raise InvalidRequest("cannot read vmx=%s: %s" % (self.params["vmx"], exc.strerror or exc))
        if len(data) > _vmx.MAX_VMX_BYTES or b"\0" in data:
            raise InvalidRequest("%s is not a VMware .vmx file: it is binary or larger than 1 MiB" % self.params["vmx"])
        text = data.decode("utf-8", errors="replace")
        return _vmx.read_vmx(text, self.params["vmx"])

    def plan(self, vm, pool, name):
        params = self.params
        check_pool_fits(pool, params)
        vmx_dir = os.path.dirname(params["vmx"])
        options = {"domain_type": params["domain_type"], "machine": params["machine"],
                   "cpu_model": params["cpu_model"]}
        check_host(self.client, options, vm)
        profile, warnings = resolve_profile(params["device_profile"], vm)
        options["device_profile"] = profile
        disks = plan_disks(vmx_dir, vm, self.qemu_img, params["format"], params["delta_chain"], pool.block)
        nics, net_warnings = map_networks(vm, params["networks"] or [], self.client)
        targets = disk_targets(profile, len(disks))
        for index, disk in enumerate(disks):
            disk["volumes"] = [os.path.join(pool.path, v)
                               for v in volume_names(name, index, disk["layers"], disk["format"], pool.block)]
            disk["volume"] = disk["volumes"][-1]
            disk["target"] = targets[index]
            if disk["by_basename"]:
                warnings.append("%s names its disk by the absolute path of a datastore; %s next to the .vmx is used"
                                % (disk["unit"], disk["source"]))
        if vm["firmware"] == "efi":
            warnings.append("the VM boots with UEFI; VMware's boot entries (.nvram) are not carried over, so the "
                            "firmware boots \\EFI\\BOOT\\BOOTX64.EFI unless a boot entry is added")
        xml = domain_xml(name, vm, definition_disks(disks), nics, options)
        return {"name": name, "disks": disks, "nics": nics, "device_profile": profile, "xml": xml,
                "warnings": vm["warnings"] + warnings + net_warnings, "options": options,
                "needed": sum(d["needed"] for d in disks), "uuid_bios": vm["uuid_bios"]}

    def check_room(self, plan, pool, cleanup_files):
        taken = [v for d in plan["disks"] for v in d["volumes"] if pool.has(v) and v not in cleanup_files]
        if taken:
            raise InvalidRequest("pool %s already has %s, which this import did not make; refusing to overwrite"
                                 % (pool.name, ", ".join(taken)),
                                 hint="choose another name, or remove the files if they are not in use")
        available = pool.available()
        if plan["needed"] + SPACE_RESERVE > available:
            raise InvalidRequest("pool %s has %d MiB free; the import needs %d MiB (and keeps %d MiB free)"
                                 % (pool.name, available >> 20, plan["needed"] >> 20, SPACE_RESERVE >> 20),
                                 hint="free space in %s or choose another pool" % pool.path)
        uuid = bios_uuid(plan.get("uuid_bios") or "")
        if uuid:
            other = self.client.lookup_domain_by_uuid(uuid)
            if other is not None:
                raise InvalidRequest("the VM's BIOS UUID %s is already used by domain %s on this host"
                                     % (uuid, other.name()))
        return available

    def run(self, vm, plan, pool):
        """Convert, check, compare, define.  Returns the source fingerprints."""
        made = [p for d in plan["disks"] for v in d["volumes"] for p in ((v,) if pool.block else (v, v + ".part"))]
        marker = write_marker(pool, plan["name"], made)
        dom = None
        progress = ProgressFile(self.params["vmx"], plan["name"], len(plan["disks"]))
        deadline = time.monotonic() + self.params["timeout"] if self.params.get("timeout") else None
        try:
            files = [fingerprint(self.params["vmx"])] + [fingerprint(p) for d in plan["disks"] for p in d["files"]]
            for index, disk in enumerate(plan["disks"]):
                if pool.block:
                    self._convert_to_block(disk, index, pool, progress, deadline)
                else:
                    self._convert(disk, index, progress, deadline)
            changed = source_changes(files)
            if changed:
                raise OperationFailed("the source changed while it was imported: %s" % "; ".join(changed),
                                      hint="power the VM off in VMware (or copy its files again) and re-run")
            record = import_record_xml(self.params["vmx"], files, [v for d in plan["disks"] for v in d["volumes"]])
            xml = domain_xml(plan["name"], vm, definition_disks(plan["disks"]), plan["nics"], plan["options"], record)
            dom = self.client.define_domain(xml)
            pool.refresh()
        except BaseException as exc:
            if dom is not None:
                self._undefine(dom)
            pool.remove(made)
            pool.drop_marker(marker)
            if isinstance(exc, (InvalidRequest, OperationFailed)):
                exc.append("Nothing of the import was left on the host")
            raise
        finally:
            progress.close()
        pool.drop_marker(marker)
        return dom, files

    def _convert(self, disk, index, progress, deadline):
        """Each layer to <volume>.part, checked, then renamed; the top one compared with the whole source."""
        chain = list(reversed(disk["chain"]))[-disk["layers"]:]  # base first
        backing = None
        for source, volume in zip(chain, disk["volumes"]):
            part = volume + ".part"
            fmt = disk["format"] if volume == disk["volume"] else "qcow2"
            self.log("converting %s -> %s" % (source, volume))
            progress.start_disk(index, source, volume, disk["virtual_size"])
            self.qemu_img.convert(source, "vmdk", part, fmt, backing=backing, progress=progress.update,
                                  deadline=deadline, limit="timeout=%s s" % self.params.get("timeout"))
            self.qemu_img.check(part, fmt)
            if volume == disk["volume"]:
                self.qemu_img.compare(disk["source"], "vmdk", part, fmt)
            os.rename(part, volume)
            backing = volume

    def _convert_to_block(self, disk, index, pool, progress, deadline):
        """Into a volume of the disk's size: written in place (a block device cannot be renamed; the marker names
        it until the domain records it), the rounded-up tail zeroed so the compare sees the guest's bytes only."""
        self.log("converting %s -> %s" % (disk["source"], disk["volume"]))
        pool.create_volume(disk["volume"], disk["virtual_size"])
        progress.start_disk(index, disk["source"], disk["volume"], disk["virtual_size"])
        self.qemu_img.convert(disk["source"], "vmdk", disk["volume"], "raw", progress=progress.update,
                              deadline=deadline, limit="timeout=%s s" % self.params.get("timeout"), target_exists=True)
        zero_tail(disk["volume"], disk["virtual_size"])
        self.qemu_img.compare(disk["source"], "vmdk", disk["volume"], "raw")

    @staticmethod
    def _undefine(dom):
        flags = getattr(libvirt, "VIR_DOMAIN_UNDEFINE_NVRAM", 4) | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE", 1)
        with libvirt_errors("undefine %s" % dom.name()):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(flags)
