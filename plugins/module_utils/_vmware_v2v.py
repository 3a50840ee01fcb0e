# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The virt-v2v path of vmware_import: virt-v2v -i vmx converts the disks, injects virtio drivers and defines
the domain; this side checks the same things first, adds the import record, and removes what virt-v2v made if
anything fails."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._vmware_definition import (
    IMPORT_RECORD_NS,
    IMPORT_RECORD_PREFIX,
    import_record_xml,
)
from ansible_collections.kvm.migration.plugins.module_utils._vmware_import import Importer, fingerprint, remove_files


def virt_v2v_argv(binary, vmx, pool, fmt, name, nics):
    argv = [binary, "-i", "vmx", vmx, "-o", "libvirt", "-os", pool, "-of", fmt, "-on", name]
    for nic in nics:
        flag = "--network" if nic["type"] == "network" else "--bridge"
        argv += [flag, "%s:%s" % (nic["vmware_network"], nic["source"])]
    return argv


def _disk_files(dom):
    root = ET.fromstring(dom.XMLDesc(0))
    return [s.get("file") for s in root.findall("devices/disk/source") if s.get("file")]


def run_virt_v2v(module, client, pool, plan):
    p = module.params
    binary = module.module.get_bin_path("virt-v2v")
    if not binary:
        raise InvalidRequest("converter=virt-v2v, but virt-v2v is not installed on this host",
                             hint="install virt-v2v (the virt-v2v package), or use converter=qemu-img")
    files = [fingerprint(p["vmx"])] + [fingerprint(f) for d in plan["disks"] for f in d["files"]]
    argv = virt_v2v_argv(binary, p["vmx"], pool.name, p["format"], plan["name"], plan["nics"])
    rc, out, err = module.module.run_command(argv)
    dom = client.lookup_domain(plan["name"])
    try:
        if rc != 0:
            raise OperationFailed("virt-v2v failed (exit %d): %s" % (rc, (err or out).strip()[-1500:]),
                                  details={"command": " ".join(argv)})
        if dom is None:
            raise OperationFailed("virt-v2v finished but defined no domain %s" % plan["name"])
        volumes = _disk_files(dom)
        record = import_record_xml(p["vmx"], files, volumes)
        with libvirt_errors("record the import in the metadata of %s" % plan["name"]):
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, record, IMPORT_RECORD_PREFIX, IMPORT_RECORD_NS,
                            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except BaseException as exc:
        if dom is not None:
            made = _disk_files(dom)
            Importer._undefine(dom)
            remove_files(made)
        pool.refresh()
        if isinstance(exc, OperationFailed):
            exc.append("What virt-v2v made was removed")
        raise
    pool.refresh()
    return dom
