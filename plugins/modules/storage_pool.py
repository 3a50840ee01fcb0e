#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: storage_pool
short_description: Manage a libvirt storage pool (dir or NFS) and make sure volumes exist in it
version_added: 0.1.0
description:
  - Defines a storage pool from options (or from O(xml)), starts, stops, autostarts and refreshes it, and makes sure
    the volumes in O(volumes) exist in it.
  - It never destroys data. O(state=absent) stops and undefines the pool but leaves its directory and files; building
    creates the target only when it does not exist (C(VIR_STORAGE_POOL_BUILD_NO_OVERWRITE)); volumes are only ever
    created, never resized, replaced or deleted.
  - Changing a property that libvirt cannot change on an active pool (type, target, NFS source) fails with a message
    that names it; stop the pool first.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration._attributes
  - kvm.migration._attributes.actiongroup_migration
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff compares the pool's persistent definition before and after.
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the pool.
    type: str
    required: true
  state:
    description:
      - V(present) - defined, left running or stopped as it is.
      - V(started) - defined and active; its target is built first when it does not exist and O(build=true).
      - V(stopped) - defined and inactive (an NFS pool is unmounted).
      - V(absent) - stopped and undefined; the data stays.
    type: str
    choices: [present, started, stopped, absent]
    default: started
  type:
    description:
      - V(dir) - a directory on the host. V(netfs) - an NFS (or GlusterFS, CIFS) export mounted at O(target).
    type: str
    choices: [dir, netfs]
    default: dir
  target:
    description:
      - Absolute path of the directory (V(dir)) or the mount point (V(netfs)). Required unless O(xml) is given or
        O(state=absent).
    type: path
  source_host:
    description:
      - NFS server of a V(netfs) pool.
    type: str
  source_path:
    description:
      - Exported directory on O(source_host).
    type: str
  source_format:
    description:
      - Network filesystem of a V(netfs) pool.
    type: str
    choices: [auto, nfs, glusterfs, cifs]
    default: nfs
  xml:
    description:
      - The pool's definition as libvirt XML, instead of O(type), O(target) and the source options. Its C(<name>) must be
        O(name).
    type: str
  autostart:
    description:
      - Start the pool when libvirt starts. Left as it is when not given.
    type: bool
  build:
    description:
      - Create the target when it does not exist, when the pool is started.
    type: bool
    default: true
  refresh:
    description:
      - Rescan the pool's volumes (an active pool).
    type: bool
    default: false
  volumes:
    description:
      - Volumes that must exist in the pool. Needs O(state=started).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: File name of the volume in the pool.
        type: str
        required: true
      capacity:
        description: Virtual size, in bytes or with a unit (V(64M), V(20G)).
        type: raw
        required: true
      format:
        description: Image format.
        type: str
        default: qcow2
        choices: [qcow2, raw]
      backing_path:
        description: Backing file of a qcow2 overlay.
        type: path
      backing_format:
        description: Format of O(volumes[].backing_path).
        type: str
        default: qcow2
        choices: [qcow2, raw]
"""

EXAMPLES = r"""
- name: A directory pool for the images, started and autostarted
  kvm.migration.storage_pool:
    name: images
    target: /var/lib/libvirt/images
    autostart: true

- name: The shared NFS export as a pool, at the same path on every hypervisor
  kvm.migration.storage_pool:
    name: shared
    type: netfs
    source_host: nas1.example.com
    source_path: /export/vmstore
    target: /var/lib/libvirt/shared
    autostart: true

- name: Make sure an overlay on a template exists
  kvm.migration.storage_pool:
    name: images
    target: /var/lib/libvirt/images
    volumes:
      - name: web01.qcow2
        capacity: 20G
        backing_path: /var/lib/libvirt/images/debian-12.qcow2

- name: Remove the pool definition (never its files)
  kvm.migration.storage_pool:
    name: scratch
    state: absent
"""

RETURN = r"""
actions:
  description: What the module did (or would do, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [define pool images, build pool images, start pool images, enable autostart of pool images]
pool:
  description: The pool afterwards (not in check mode, not after O(state=absent)).
  returned: success
  type: dict
  sample: {name: images, type: dir, target: /var/lib/libvirt/images, active: true, autostart: true,
           persistent: true, capacity: 107374182400, allocation: 2147483648, available: 105226698752}
volumes_created:
  description: Paths of the volumes created.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/web01.qcow2]
"""

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._pools import PoolManager, PoolSpec
from ansible_collections.kvm.migration.plugins.module_utils._volume import VolumeSpec, parse_size


def pool_spec(params):
    if params["xml"]:
        spec = PoolSpec.from_xml(params["xml"])
        if spec.name != params["name"]:
            raise InvalidRequest("The pool XML names %r, but name is %r" % (spec.name, params["name"]))
        return spec
    return PoolSpec(
        name=params["name"],
        type=params["type"],
        target=(params["target"] or "").rstrip("/") or params["target"] or "",
        source_host=params["source_host"] or "",
        source_path=params["source_path"] or "",
        source_format=params["source_format"] if params["type"] == "netfs" else "",
    )


def run_module(module):
    p = module.params
    spec = pool_spec(p)
    volumes = [
        VolumeSpec(path=v["name"], format=v["format"], capacity=parse_size(v["capacity"]),
                   backing_path=v.get("backing_path") or "",
                   backing_format=v.get("backing_format") or "qcow2" if v.get("backing_path") else "")
        for v in p["volumes"]
    ]
    manager = PoolManager(module.client(), check_mode=module.check_mode)
    result = manager.ensure(spec, p["state"], autostart=p["autostart"], build=p["build"], refresh=p["refresh"],
                            volumes=volumes)
    if not module.diff_mode or result["diff"]["before"] == result["diff"]["after"]:
        result.pop("diff")
    module.exit_json(**result)


def main():
    module = LibvirtModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "started", "choices": ["present", "started", "stopped", "absent"]},
            "type": {"type": "str", "default": "dir", "choices": ["dir", "netfs"]},
            "target": {"type": "path"},
            "source_host": {"type": "str"},
            "source_path": {"type": "str"},
            "source_format": {"type": "str", "default": "nfs", "choices": ["auto", "nfs", "glusterfs", "cifs"]},
            "xml": {"type": "str"},
            "autostart": {"type": "bool"},
            "build": {"type": "bool", "default": True},
            "refresh": {"type": "bool", "default": False},
            "volumes": {
                "type": "list", "elements": "dict", "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "capacity": {"type": "raw", "required": True},
                    "format": {"type": "str", "default": "qcow2", "choices": ["qcow2", "raw"]},
                    "backing_path": {"type": "path"},
                    "backing_format": {"type": "str", "default": "qcow2", "choices": ["qcow2", "raw"]},
                },
            },
        },
        mutually_exclusive=[("xml", "target"), ("xml", "source_host"), ("xml", "source_path")],
        required_if=[("type", "netfs", ["source_host", "source_path"])],
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
