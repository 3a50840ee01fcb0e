# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The Ansible glue every module shares: common options, import checks (with a respawn into the
system Python, where distro packages install libvirt-python and lxml), and exception -> fail_json."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.kvm.migration.plugins.module_utils._domain import LXML_IMPORT_ERROR
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    LIBVIRT_IMPORT_ERROR,
    KvmMigrationError,
    LibvirtClient,
    libvirt_errors,
)

try:
    from ansible.module_utils.common.respawn import has_respawned, probe_interpreters_for_module, respawn_module
except ImportError:  # ansible-core without respawn support
    has_respawned = None

# Must match plugins/doc_fragments/libvirt.py (validate-modules compares them).
COMMON_ARGUMENT_SPEC = {
    "uri": {"type": "str", "default": "qemu:///system"},
}
# What to migrate and where; must match plugins/doc_fragments/migration.py.
MIGRATION_ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "dest_uri": {"type": "str", "required": True},
    "storage": {"type": "str", "default": "auto", "choices": ["auto", "shared", "copy_all", "copy_incremental"]},
    "live": {"type": "bool", "default": True},
    "migrate_uri": {"type": "str"},
    "disks_uri": {"type": "str"},
    "allow_unsafe": {"type": "bool", "default": False},
    "memory_margin": {"type": "int", "default": 256},
}
SYSTEM_PYTHONS = ["/usr/bin/python3", "/usr/libexec/platform-python"]


class LibvirtModule:
    """AnsibleModule plus the collection's common options and error handling."""

    def __init__(self, argument_spec, needs_lxml=True, common=True, **kwargs):
        """common=False: a module that does not talk to libvirt (no uri option, no libvirt import check)."""
        spec = dict(COMMON_ARGUMENT_SPEC) if common else {}
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        if common:
            self._check_imports(needs_lxml)
        self._clients = []

    @property
    def params(self):
        return self.module.params

    @property
    def check_mode(self):
        return self.module.check_mode

    @property
    def diff_mode(self):
        return self.module._diff

    def client(self, uri=None, role="host", connect=True):
        """A LibvirtClient for `uri` (default: the uri option), closed when the module exits.  With
        connect=False the caller opens it (preflight reports a failed connection instead of raising)."""
        client = LibvirtClient(uri or self.params["uri"], role=role)
        self._clients.append(client)
        return client.open() if connect else client

    def _check_imports(self, needs_lxml):
        missing = LIBVIRT_IMPORT_ERROR is not None or (needs_lxml and LXML_IMPORT_ERROR is not None)
        if missing and has_respawned is not None and not has_respawned():
            interpreter = probe_interpreters_for_module(SYSTEM_PYTHONS, "libvirt")
            if interpreter:
                respawn_module(interpreter)  # does not return
        if LIBVIRT_IMPORT_ERROR is not None:
            self.module.fail_json(msg=missing_required_lib("libvirt-python (python3-libvirt)"),
                                  exception=LIBVIRT_IMPORT_ERROR)
        if needs_lxml and LXML_IMPORT_ERROR is not None:
            self.module.fail_json(msg=missing_required_lib("lxml (python3-lxml)"), exception=LXML_IMPORT_ERROR)

    def _close(self):
        for client in self._clients:
            client.close()

    def exit_json(self, **result):
        self._close()
        self.module.exit_json(**result)

    def fail_json(self, msg, **kwargs):
        self._close()
        self.module.fail_json(msg=msg, **kwargs)

    def fail_from_exception(self, exc):
        details = dict(exc.details)
        if exc.hint:
            details["hint"] = exc.hint
        self.fail_json(msg=exc.msg, exception=traceback.format_exc(), **details)

    def run(self, logic):
        """Call logic(self) and turn the collection's exceptions into a clean failure."""
        try:
            # A libvirt error that no narrower step translated still gets the collection's message and hint.
            with libvirt_errors("complete %s" % getattr(self.module, "_name", "the task")):
                logic(self)
        except KvmMigrationError as exc:
            self.fail_from_exception(exc)
