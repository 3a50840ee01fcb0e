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


class CollectionModule:
    """AnsibleModule plus the collection's error handling: the collection's exceptions become a clean failure with
    the message, the details and the hint.  For modules that do not talk to libvirt (nfs_share)."""

    def __init__(self, argument_spec, **kwargs):
        self.module = AnsibleModule(argument_spec=argument_spec, **kwargs)

    @property
    def params(self):
        return self.module.params

    @property
    def check_mode(self):
        return self.module.check_mode

    @property
    def diff_mode(self):
        return self.module._diff

    def _close(self):
        pass

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
            self._run(logic)
        except KvmMigrationError as exc:
            self.fail_from_exception(exc)

    def _run(self, logic):
        logic(self)


class LibvirtModule(CollectionModule):
    """A module that talks to libvirt: the common uri option, libvirt-python and lxml found (respawning into the
    system Python where distro packages put them), connections closed on exit."""

    def __init__(self, argument_spec, needs_lxml=True, **kwargs):
        spec = dict(COMMON_ARGUMENT_SPEC)
        spec.update(argument_spec)
        super().__init__(spec, **kwargs)
        self._check_imports(needs_lxml)
        self._clients = []

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

    def _run(self, logic):
        # A libvirt error that no narrower step translated still gets the collection's message and hint.
        with libvirt_errors("complete %s" % getattr(self.module, "_name", "the task")):
            logic(self)
