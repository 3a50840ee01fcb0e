# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The virt-v2v path of vmware_import: virt-v2v -i vmx converts the disks, injects virtio drivers and defines
the domain; this side checks the same things first, follows its output for the progress line, stops it (with
its children) when the timeout runs out, adds the import record, and removes what virt-v2v made if anything
fails.  The marker names virt-v2v's files, so a killed run is cleaned up by the next one."""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._import_progress import ProgressFile
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._vmware_definition import (
    IMPORT_RECORD_NS,
    IMPORT_RECORD_PREFIX,
    disk_targets,
    import_record_xml,
)
from ansible_collections.kvm.migration.plugins.module_utils._vmware_import import (
    Importer,
    fingerprint,
    write_marker,
)
from ansible_collections.kvm.migration.plugins.module_utils._watched_process import ERROR_TAIL, run_watched

_V2V_DISK = re.compile(rb"Copying disk (\d+)/(\d+)")
_V2V_PERCENT = re.compile(rb"\((\d{1,3}(?:\.\d+)?)/100%\)|\b(\d{1,3})% \[")


def virt_v2v_argv(binary, vmx, pool, fmt, name, nics):
    argv = [binary, "-i", "vmx", vmx, "-o", "libvirt", "-os", pool, "-of", fmt, "-on", name]
    for nic in nics:
        flag = "--network" if nic["type"] == "network" else "--bridge"
        argv += [flag, "%s:%s" % (nic["vmware_network"], nic["source"])]
    return argv


def v2v_volumes(pool, name, count):
    """The files virt-v2v -o libvirt writes into a dir pool: NAME-sda, NAME-sdb, ... in the source's disk order."""
    return [os.path.join(pool.path, "%s-%s" % (name, target)) for target in disk_targets("compat", count)]


class V2vOutput:
    """Follows virt-v2v's output: "Copying disk N/M" starts a disk; "(P/100%)" (virt-v2v 1.x) or "P% [" (the
    nbdcopy bar of 2.x) is its percent.  Keeps the tail of its stdout for the failure message."""

    def __init__(self, progress, plan, volumes):
        self.progress = progress
        self.plan = plan
        self.volumes = volumes
        self.disk = None
        self.percent = 0.0
        self.out = b""

    def __call__(self, chunk, is_stderr):
        if is_stderr:
            return
        window = self.out[-64:] + chunk  # a message split over two reads
        self.out = (self.out + chunk)[-ERROR_TAIL:]
        for match in _V2V_DISK.finditer(window):
            index = int(match.group(1)) - 1
            if index != self.disk and 0 <= index < len(self.plan["disks"]):
                self.disk, self.percent = index, 0.0
                disk = self.plan["disks"][index]
                self.progress.start_disk(index, disk["source"], self.volumes[index], disk["virtual_size"])
        found = _V2V_PERCENT.findall(chunk)
        if found and self.disk is not None:
            self.percent = min(100.0, float(found[-1][0] or found[-1][1]))
            self.progress.update(self.percent)

    def where(self):
        if self.disk is None:
            return "before it copied a disk (it inspects and converts the guest first)"
        return "at disk %d/%d, %.0f%%" % (self.disk + 1, len(self.plan["disks"]), self.percent)


def _disk_files(dom):
    root = ET.fromstring(dom.XMLDesc(0))
    return [s.get("file") for s in root.findall("devices/disk/source") if s.get("file")]


def run_virt_v2v(module, client, pool, plan):
    p = module.params
    binary = module.module.get_bin_path("virt-v2v")
    if not binary:
        raise InvalidRequest("converter=virt-v2v, but virt-v2v is not installed on this host",
                             hint="install virt-v2v (the virt-v2v package), or use converter=qemu-img")
    volumes = v2v_volumes(pool, plan["name"], len(plan["disks"]))
    taken = [v for v in volumes if os.path.lexists(v)]
    if taken:
        raise InvalidRequest("pool %s already has %s, which virt-v2v would write and this import did not make; "
                             "refusing to overwrite" % (pool.name, ", ".join(taken)),
                             hint="choose another name, or remove the files if they are not in use")
    files = [fingerprint(p["vmx"])] + [fingerprint(f) for d in plan["disks"] for f in d["files"]]
    argv = virt_v2v_argv(binary, p["vmx"], pool.name, p["format"], plan["name"], plan["nics"])
    marker = write_marker(pool, plan["name"], volumes)
    progress = ProgressFile(p["vmx"], plan["name"], len(plan["disks"]))
    output = V2vOutput(progress, plan, volumes)
    deadline = time.monotonic() + p["timeout"] if p.get("timeout") else None
    dom = None

    def stopped():
        return OperationFailed("virt-v2v was stopped %s: timeout=%s s ran out" % (output.where(), p["timeout"]),
                               hint="give it more time, or copy the source to faster local storage first")

    try:
        rc, err = run_watched(argv, output, deadline, stopped, env={"LC_ALL": "C"})
        dom = client.lookup_domain(plan["name"])
        if rc != 0:
            text = err.strip() or output.out.decode("utf-8", errors="replace").strip()
            raise OperationFailed("virt-v2v failed (exit %d): %s" % (rc, text[-1500:]),
                                  details={"command": " ".join(argv)})
        if dom is None:
            raise OperationFailed("virt-v2v finished but defined no domain %s" % plan["name"])
        record = import_record_xml(p["vmx"], files, _disk_files(dom), for_set_metadata=True)
        with libvirt_errors("record the import in the metadata of %s" % plan["name"]):
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, record, IMPORT_RECORD_PREFIX, IMPORT_RECORD_NS,
                            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except BaseException as exc:
        made = list(volumes)
        if dom is not None:
            made += [f for f in _disk_files(dom) if f not in made]
            Importer._undefine(dom)
        pool.remove(made)
        pool.drop_marker(marker)
        pool.refresh()
        if isinstance(exc, OperationFailed):
            exc.append("What virt-v2v made was removed")
        raise
    finally:
        progress.close()
    pool.drop_marker(marker)
    pool.refresh()
    return dom
