#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nfs_share
short_description: Manage one NFS export for shared VM storage
version_added: 0.1.0
description:
  - Manages the export of one directory, with its clients and their options, in C(/etc/exports.d/NAME.exports) (one
    file per export, the default) or as one line of a shared exports file such as C(/etc/exports).
  - Validates the clients and options against exports(5) before anything changes. An export to every host (C(*))
    needs O(allow_any_client=true); C(no_root_squash), which QEMU running as root on the hypervisors needs, is only
    accepted for single hosts (a hostname or one address), never for networks, wildcards or netgroups.
  - Applies the change with C(exportfs -ra). If that fails (for example because no NFS server runs), the exports
    file is put back as it was and the module fails with exportfs's message.
  - Runs on the NFS server. It does not install or start the server; the C(kvm.migration.shared_storage) role does.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  path:
    description:
      - The exported directory. It must exist.
    type: path
    required: true
  clients:
    description:
      - Who may mount the export, each with its options.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: A hostname, an address, a network (V(10.0.0.0/24)), a wildcard (V(*.example.com)), an C(@netgroup),
          or V(*) (with O(allow_any_client)).
        type: str
        required: true
      options:
        description: exports(5) options, for example V(rw), V(sync), V(no_root_squash), V(no_subtree_check).
        type: list
        elements: str
        default: [rw, sync, no_subtree_check]
  state:
    description:
      - V(present) exports the directory as described; V(absent) removes the export (never the directory).
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - Name of the file in C(/etc/exports.d) (without C(.exports)). Defaults to the path with C(/) turned into C(-).
    type: str
  exports_file:
    description:
      - Manage the export as one line of this file instead of a file of its own in C(/etc/exports.d).
    type: path
  allow_any_client:
    description:
      - Allow the client V(*) (every host that can reach the server).
    type: bool
    default: false
  apply:
    description:
      - Run C(exportfs -ra) after a change.
    type: bool
    default: true
requirements:
  - exportfs (C(nfs-kernel-server) on Debian/Ubuntu, C(nfs-utils) on RHEL/Fedora) when O(apply=true)
"""

EXAMPLES = r"""
- name: Export the VM store to the two hypervisors, root allowed (QEMU runs as root there)
  kvm.migration.nfs_share:
    path: /export/vmstore
    clients:
      - host: hv1.example.com
        options: [rw, sync, no_root_squash, no_subtree_check]
      - host: hv2.example.com
        options: [rw, sync, no_root_squash, no_subtree_check]

- name: Remove it
  kvm.migration.nfs_share:
    path: /export/vmstore
    state: absent
"""

RETURN = r"""
file:
  description: The exports file managed.
  returned: always
  type: str
  sample: /etc/exports.d/export-vmstore.exports
line:
  description: The export line (empty after O(state=absent)).
  returned: always
  type: str
  sample: /export/vmstore hv1.example.com(rw,sync,no_root_squash,no_subtree_check)
exportfs:
  description: What C(exportfs -ra) printed, when it ran.
  returned: when the exports changed and O(apply=true), outside check mode
  type: str
  sample: ""
"""

import os

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._module import CollectionModule
from ansible_collections.kvm.migration.plugins.module_utils._nfs import (
    apply_exports,
    desired_content,
    exports_file,
    render_line,
    validate_export,
)
from ansible_collections.kvm.migration.plugins.module_utils._options import check_file_name


def run_module(module):
    p = module.params
    path = p["path"].rstrip("/") or "/"
    present = p["state"] == "present"
    line = ""
    if present:
        clients = validate_export(path, p["clients"], p["allow_any_client"])
        if not os.path.isdir(path):
            raise InvalidRequest("Export path %s does not exist (or is not a directory)" % path,
                                 hint="create it first, for example with ansible.builtin.file")
        line = render_line(path, clients)
    name = p["name"] or path.strip("/").replace("/", "-") or "root"
    check_file_name("name", name)
    target = exports_file(name, path, p["exports_file"])
    exists = os.path.exists(target)
    current = open(target).read() if exists else ""
    wanted = desired_content(current, path, line, present, shared_file=bool(p["exports_file"]))
    changed = (wanted is None and exists) or (wanted is not None and wanted != current)
    result = {"changed": changed, "file": target, "line": line}
    if module.diff_mode:
        result["diff"] = {"before": current, "after": wanted or "", "before_header": target, "after_header": target}
    if not changed or module.check_mode:
        module.exit_json(**result)
    exportfs = module.module.get_bin_path("exportfs") if p["apply"] else None
    if p["apply"] and not exportfs:
        raise OperationFailed("exportfs is not installed on this host",
                              hint="install nfs-kernel-server (Debian/Ubuntu) or nfs-utils (RHEL/Fedora)")
    runner = (lambda: module.module.run_command([exportfs, "-ra"])) if exportfs else None
    output = apply_exports(target, wanted, current if exists else None, module.module.atomic_move, runner)
    if output is not None:
        result["exportfs"] = output
    module.exit_json(**result)


def main():
    module = CollectionModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "clients": {
                "type": "list", "elements": "dict", "default": [],
                "options": {
                    "host": {"type": "str", "required": True},
                    "options": {"type": "list", "elements": "str", "default": ["rw", "sync", "no_subtree_check"]},
                },
            },
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "name": {"type": "str"},
            "exports_file": {"type": "path"},
            "allow_any_client": {"type": "bool", "default": False},
            "apply": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
