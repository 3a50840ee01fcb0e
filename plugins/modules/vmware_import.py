#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vmware_import
short_description: Import a VMware ESXi or Workstation VM from its .vmx and .vmdk files into libvirt
version_added: 0.1.0
description:
  - Runs on the KVM host. Reads the C(.vmx) file and every VMDK it names (monolithicSparse, monolithicFlat,
    twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized as in an OVA, ESXi vmfs/vmfsThin, and snapshot
    deltas with their C(parentFileNameHint) chains), converts each disk with C(qemu-img convert) into a volume of
    the target pool, checks it (C(qemu-img check)) and compares its content with the source (C(qemu-img compare)),
    and defines a libvirt domain generated from the C(.vmx) - not converted text.
  - The definition has the VM's memory, vCPUs and socket/core topology, its MAC addresses, UEFI (OVMF) when
    C(firmware = "efi") and BIOS otherwise, Secure Boot when the VM had it, the machine type, the disks in the
    VMware BIOS order (C(bios.hddOrder), then IDE, SCSI, SATA, NVMe), libosinfo metadata from C(guestOS), a
    serial console logged to C(/var/log/libvirt/qemu/NAME-console.log), VNC on 127.0.0.1, and the BIOS UUID.
  - With O(device_profile=virtio) disks are virtio-blk and adapters virtio-net (plus the guest agent channel, a
    virtio RNG and balloon); V(compat) gives SATA disks and e1000e adapters for guests without virtio drivers.
    V(auto) picks V(virtio) for Linux and BSD guests and V(compat), with a warning, for Windows and unknown ones.
  - What has no KVM counterpart (USB and PCI passthrough, sound, floppy, serial and parallel ports, VMCI, shared
    folders, CD-ROM media, ...) is listed in RV(unmapped) and as warnings, never dropped silently.
  - Idempotent - the domain's metadata records every source file's size, modification time and sha256 and the
    volumes made. A re-run that finds the domain with unchanged sources reports no change; changed source files
    are refused, not overwritten. A domain of that name that this module did not import is refused.
  - Safe - nothing changes before every check passed (the .vmx, every extent and parent, a C(qemu-img check) of
    each source layer, the pool's free space against C(qemu-img measure), the networks, the host's machine type
    and firmware). Each disk is written to C(VOLUME.part) and renamed once checked. A failure removes what the
    run made; a run that was killed leaves a marker file in the pool (C(.kvm-migration-import-NAME.json)) and
    the next run removes what it names first.
  - With O(converter=virt-v2v) the conversion is handed to C(virt-v2v -i vmx), which also installs virtio
    drivers into the guest (Windows included) and fixes its boot configuration; the module then adds its
    import record to the domain virt-v2v defined. virt-v2v must be installed on the host. Its progress
    (C(Copying disk N/M) and the percent it prints) feeds the same progress line, and its files
    (C(NAME-sda), ...) are named in the marker while it runs.
  - A conversion runs at the speed of the datastore copy, so the action plugin runs the module as an async job
    and prints a progress line (disk, percent, size, rate) labelled with the host every few seconds, read from
    a small file the module keeps under C(/run/kvm-migration) while it converts and removes at the end. The
    variables C(kvm_migration_progress) and C(kvm_migration_progress_interval) control it as for
    M(kvm.migration.migrate). A task given C(async) runs as a plain async task without lines.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration._attributes
  - kvm.migration._attributes.actiongroup_migration
options:
  vmx:
    description:
      - Absolute path of the VM's C(.vmx) file on the KVM host (a datastore folder copied or mounted there).
      - Every disk must be in the same directory. A disk named by an absolute C(/vmfs/volumes/...) path is looked
        for by its file name next to the C(.vmx).
    type: path
    required: true
  name:
    description:
      - Name of the libvirt domain. It also names the volumes (C(NAME-disk0.qcow2), ...), so it may hold only
        letters, digits, C(_), C(.), C(+) and C(-).
      - Default - the VM's C(displayName) with other characters replaced by C(-).
    type: str
  state:
    description:
      - V(present) imports the VM (or finds it imported). V(absent) undefines a domain this module imported and
        deletes the volumes it made; it refuses a running domain and one it did not import.
    type: str
    default: present
    choices: [present, absent]
  pool:
    description:
      - The libvirt storage pool the volumes are written to - a file pool (type dir, fs or netfs), or a block pool
        (type logical, an LVM volume group).
      - In a logical pool each disk gets a logical volume C(NAME-diskN) of the disk's virtual size (allocated in
        full), made through libvirt; C(qemu-img convert -n) writes the raw data into it, the part past the disk's
        size that LVM rounds up to is zeroed, and the volume is compared with the source. The domain uses it as
        a C(type=block) disk. A logical pool needs O(format=raw) and O(converter=qemu-img); the marker of a run
        in progress is kept in C(/var/lib/kvm-migration/imports/POOL-UUID/).
    type: str
    default: default
  format:
    description:
      - Volume format - V(qcow2) stays thin, V(raw) as the seed wiki does (sparse where the file system allows).
      - A logical (block) pool takes V(raw) only.
    type: str
    default: qcow2
    choices: [qcow2, raw]
  delta_chain:
    description:
      - For a disk with snapshot deltas - V(consolidate) writes one volume with the current content; V(keep)
        writes each layer as a qcow2 volume backed by its parent (C(NAME-diskN-snapM.qcow2)), as VMware kept them.
      - V(keep) needs O(format=qcow2).
    type: str
    default: consolidate
    choices: [consolidate, keep]
  networks:
    description:
      - Maps VMware networks (C(ethernetN.networkName), or the connection type of a Workstation adapter such as
        V(nat)) to libvirt. Every adapter must be mapped; an entry with O(networks[].vmware=*) maps the rest.
    type: list
    elements: dict
    default: []
    suboptions:
      vmware:
        description: The VMware network (port group) name, or V(*).
        type: str
        required: true
      network:
        description: A libvirt virtual network on the host.
        type: str
      bridge:
        description: A host bridge.
        type: str
  device_profile:
    description: V(virtio), V(compat) (SATA and e1000e), or V(auto) from the guest OS, as described above.
    type: str
    default: auto
    choices: [auto, virtio, compat]
  domain_type:
    description: V(kvm), or V(qemu) (emulation, for hosts without KVM such as nested labs).
    type: str
    default: kvm
    choices: [kvm, qemu]
  machine:
    description: The QEMU machine type. V(q35) fits every guest VMware runs at hardware version 7 or later.
    type: str
    default: q35
  cpu_model:
    description:
      - A named CPU model (for example V(Cascadelake-Server)) the guest sees, for a fleet that migrates between
        hosts of different generations. Default - C(host-model) with O(domain_type=kvm), QEMU's default CPU
        otherwise.
    type: str
  converter:
    description: V(qemu-img) (this module does the conversion) or V(virt-v2v), as described above.
    type: str
    default: qemu-img
    choices: [qemu-img, virt-v2v]
  start:
    description: Start the domain after the import (and on a re-run, if it is shut off).
    type: bool
    default: false
  timeout:
    description:
      - Seconds the disk conversions may take in all, 0 to 172800; V(0) means no limit.
      - When it runs out, C(qemu-img) (or C(virt-v2v) with the processes it started) is stopped, everything the
        run made is removed, and the failure names the disk and the percent reached.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Reports the plan - disks, sizes, space needed, network mapping and the definition - and writes nothing.
  diff_mode:
    support: full
    details: Shows the definition that is (or would be) defined.
  idempotent:
    support: full
notes:
  - Shut the VM down in VMware (or copy its files while it is off) first - the module refuses source files
    that change while it reads them.
  - UEFI boot entries stored in VMware's C(.nvram) are not carried over; the firmware falls back to
    C(\EFI\BOOT\BOOTX64.EFI).
  - A guest without virtio drivers does not boot from virtio disks. Keep O(device_profile=auto) or V(compat)
    for it, or use O(converter=virt-v2v).
seealso:
  - name: Migration from VMware ESX/ESXi to KVM (the manual way this module replaces)
    description: qemu-img convert and vmware2libvirt by hand.
    link: https://help.ubuntu.com/community/VMware/ESXi
  - module: kvm.migration.migrate
"""

EXAMPLES = r"""
- name: Import web01 from a copied datastore folder, virtio devices, thin qcow2
  kvm.migration.vmware_import:
    vmx: /srv/datastore1/web01/web01.vmx
    pool: default
    networks:
      - vmware: VM Network
        bridge: br0
    start: true

- name: What would the import do? (writes nothing)
  kvm.migration.vmware_import:
    vmx: /srv/datastore1/web01/web01.vmx
    networks:
      - {vmware: "*", network: default}
  check_mode: true
  register: plan

- name: Into logical volumes of the LVM volume group behind pool vg_guests
  kvm.migration.vmware_import:
    vmx: /srv/datastore1/db01/db01.vmx
    pool: vg_guests
    format: raw
    networks:
      - {vmware: "*", bridge: br0}

- name: A Windows guest, drivers injected by virt-v2v
  kvm.migration.vmware_import:
    vmx: /srv/datastore1/win2022/win2022.vmx
    converter: virt-v2v
    networks:
      - {vmware: "*", bridge: br0}

- name: Remove an import (domain and the volumes it made)
  kvm.migration.vmware_import:
    vmx: /srv/datastore1/web01/web01.vmx
    state: absent
"""

RETURN = r"""
name:
  description: The domain's name.
  returned: always
  type: str
  sample: web01
state:
  description: The domain's state after the task (V(running), V(shutoff), or V(absent)).
  returned: always
  type: str
disks:
  description: Each disk in boot order - the C(.vmx) unit, the source descriptor, its C(create_type), the
    C(chain) of layers (top first), every source C(files), C(virtual_size) and C(needed) bytes, the
    C(target) device, the C(volumes) made (base first) and C(volume) the domain uses, and C(block) (true for a
    logical volume in a logical pool).
  returned: when state=present
  type: list
  elements: dict
interfaces:
  description: Each network adapter - C(vmx_name), C(vmware_network), libvirt C(type) and C(source), C(mac)
    (null when the VM had none and libvirt makes one), and the VMware model it had.
  returned: when state=present
  type: list
  elements: dict
device_profile:
  description: The profile used (V(virtio) or V(compat)).
  returned: when state=present
  type: str
os:
  description: The VM's C(guest_os), the C(osinfo) id written into the definition, and its C(family).
  returned: when state=present
  type: dict
unmapped:
  description: VMware devices that have no counterpart in the definition - C(vmx_key), C(device), C(reason).
  returned: when state=present
  type: list
  elements: dict
space:
  description: The pool, its C(available) bytes and the bytes the import C(needed).
  returned: when the domain was (or would be) imported by this run
  type: dict
xml:
  description: The generated definition.
  returned: when the domain was (or would be) imported by this run
  type: str
cleaned_up:
  description: Files of an interrupted earlier run that were removed (or, in check mode, would be).
  returned: always
  type: list
  elements: str
removed:
  description: Volumes deleted with the domain (state=absent).
  returned: when state=absent
  type: list
  elements: str
"""

import os

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._import_progress import progress_path, remove_progress
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._options import Bound
from ansible_collections.kvm.migration.plugins.module_utils._qemu_img import QemuImg
from ansible_collections.kvm.migration.plugins.module_utils._vmware_import import (
    Importer,
    Pool,
    check_vmx_path,
    domain_name,
    pending_cleanup,
    read_import_record,
    source_changes,
)
from ansible_collections.kvm.migration.plugins.module_utils._vmware_v2v import run_virt_v2v

TIMEOUT = Bound(0, 172800, "s", "48 hours", "no limit")


def _state(dom):
    if dom is None:
        return "absent"
    with libvirt_errors("read the state of %s" % dom.name()):
        return "running" if dom.isActive() else "shutoff"


def _check_request(p):
    check_vmx_path(p["vmx"])
    TIMEOUT.check("timeout", p["timeout"])
    if p["delta_chain"] == "keep" and p["format"] != "qcow2":
        raise InvalidRequest("delta_chain=keep writes each snapshot layer as a qcow2 backed by its parent, so it "
                             "needs format=qcow2 (got format=%s)" % p["format"])
    for index, entry in enumerate(p["networks"]):
        targets = [k for k in ("network", "bridge") if entry.get(k)]
        if len(targets) != 1:
            raise InvalidRequest("networks[%d] (vmware=%r) needs exactly one of network and bridge"
                                 % (index, entry.get("vmware")))
        target = entry[targets[0]]
        if "/" in target or any(c.isspace() or ord(c) < 32 for c in target):
            raise InvalidRequest("networks[%d].%s=%r is not a libvirt network or bridge name"
                                 % (index, targets[0], target))


def _absent(module, client, pool, name):
    dom = client.lookup_domain(name)
    record = read_import_record(dom) if dom is not None else None
    if dom is not None and record is None:
        raise InvalidRequest("domain %s was not imported by kvm.migration.vmware_import; refusing to remove it" % name)
    marker, leftovers = pending_cleanup(pool, name, record is not None)
    if dom is not None and _state(dom) == "running":
        raise InvalidRequest("domain %s is running; shut it down before removing it" % name)
    volumes = [v for v in (record or {}).get("volumes", []) if v.startswith(pool.path.rstrip("/") + "/")]
    changed = dom is not None or bool(leftovers) or marker is not None
    removed = []
    if changed and not module.check_mode:
        if dom is not None:
            Importer._undefine(dom)
        removed = pool.remove(volumes)
        pool.remove(leftovers)
        if marker:
            pool.drop_marker(marker)
        pool.refresh()
    module.exit_json(changed=changed, name=name, state="absent", removed=removed if not module.check_mode else volumes,
                     cleaned_up=leftovers)


def _existing(module, pool, dom, record, vm, name, marker):
    p = module.params
    if record["vmx"] != p["vmx"]:
        raise InvalidRequest("domain %s was imported from %s, not from %s" % (name, record["vmx"], p["vmx"]),
                             hint="choose another name to import this VM next to it")
    changes = source_changes(record["files"])
    if changes:
        raise InvalidRequest("domain %s was imported from %s, and the source changed since: %s; refusing to "
                             "overwrite the import" % (name, p["vmx"], "; ".join(changes)),
                             hint="to import it again, remove the domain first (state=absent)")
    missing = [v for v in record["volumes"] if not os.path.exists(v)]
    if missing:
        raise OperationFailed("domain %s was imported, but its volume(s) %s are missing" % (name, ", ".join(missing)),
                              hint="remove it with state=absent and import it again")
    changed = False
    if marker and not module.check_mode:
        pool.drop_marker(marker)
    if p["start"] and _state(dom) != "running":
        changed = True
        if not module.check_mode:
            with libvirt_errors("start %s" % name):
                dom.create()
    module.exit_json(changed=changed, name=name, state="running" if changed else _state(dom),
                     disks=[{"volume": v} for v in record["volumes"]],
                     interfaces=[], device_profile=None, os=_os(vm), unmapped=vm["unmapped"], cleaned_up=[])


def _os(vm):
    return {"guest_os": vm["guest_os"], "osinfo": vm["osinfo"], "family": vm["os_family"]}


def run_module(module):
    p = module.params
    _check_request(p)
    client = module.client()
    pool = Pool(client, p["pool"])
    importer = Importer(client, QemuImg(module.module.run_command), p)
    vm = importer.read()
    name = domain_name(p["name"], vm["display_name"])
    if p["state"] == "absent":
        _absent(module, client, pool, name)
        return
    dom = client.lookup_domain(name)
    record = read_import_record(dom) if dom is not None else None
    if dom is not None and record is None:
        raise InvalidRequest("a domain named %s already exists on %s and was not imported by this module" %
                             (name, client.uri), hint="choose another name")
    marker, leftovers = pending_cleanup(pool, name, record is not None)
    if record is not None:
        _existing(module, pool, dom, record, vm, name, marker)
        return
    plan = importer.plan(vm, pool, name)
    available = importer.check_room(plan, pool, leftovers)
    result = {
        "changed": True, "name": name, "disks": plan["disks"], "interfaces": plan["nics"],
        "device_profile": plan["device_profile"], "os": _os(vm), "unmapped": vm["unmapped"],
        "space": {"pool": pool.name, "available": available, "needed": plan["needed"]},
        "xml": plan["xml"], "cleaned_up": leftovers,
    }
    for warning in plan["warnings"] + ["not imported: %s" % u["device"] for u in vm["unmapped"]]:
        module.module.warn(warning)
    if module.diff_mode:
        result["diff"] = {"before": "", "after": plan["xml"], "after_header": "%s (definition)" % name}
    if module.check_mode:
        module.exit_json(state="absent", **result)
        return
    pool.remove(leftovers)
    if marker:
        pool.drop_marker(marker)
    remove_progress(progress_path(p["vmx"]))  # a killed run's, so the controller shows no stale line
    if p["converter"] == "virt-v2v":
        dom = run_virt_v2v(module, client, pool, plan)
    else:
        dom, _files = importer.run(vm, plan, pool)
    if p["start"]:
        with libvirt_errors("start %s" % name):
            dom.create()
    module.exit_json(state=_state(dom), **result)


def main():
    module = LibvirtModule(
        argument_spec={
            "vmx": {"type": "path", "required": True},
            "name": {"type": "str"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "pool": {"type": "str", "default": "default"},
            "format": {"type": "str", "default": "qcow2", "choices": ["qcow2", "raw"]},
            "delta_chain": {"type": "str", "default": "consolidate", "choices": ["consolidate", "keep"]},
            "networks": {"type": "list", "elements": "dict", "default": [], "options": {
                "vmware": {"type": "str", "required": True},
                "network": {"type": "str"},
                "bridge": {"type": "str"},
            }},
            "device_profile": {"type": "str", "default": "auto", "choices": ["auto", "virtio", "compat"]},
            "domain_type": {"type": "str", "default": "kvm", "choices": ["kvm", "qemu"]},
            "machine": {"type": "str", "default": "q35"},
            "cpu_model": {"type": "str"},
            "converter": {"type": "str", "default": "qemu-img", "choices": ["qemu-img", "virt-v2v"]},
            "start": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 0},
        },
        needs_lxml=False,
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
