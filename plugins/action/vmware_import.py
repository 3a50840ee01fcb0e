# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of kvm.migration.vmware_import: a progress line per display interval while the disks convert.

The module runs on the KVM host as an async job and keeps its conversion's progress in a small file under
/run/kvm-migration named after the .vmx path; this plugin reads it with slurp and prints the disk, percent,
size and rate.  Cadence and variables as for migrate (plugins/plugin_utils/_async_progress.py)."""

from __future__ import annotations

import base64
import json

from ansible_collections.kvm.migration.plugins.module_utils._import_progress import progress_line, progress_path
from ansible_collections.kvm.migration.plugins.plugin_utils._async_progress import ProgressAction


class ActionModule(ProgressAction):
    def progress_text(self, host, task_vars):
        vmx = self._task.args.get("vmx")
        if not vmx or self._task.args.get("state", "present") != "present":
            return None
        read = self._execute_module(module_name="ansible.legacy.slurp", module_args={"src": progress_path(vmx)},
                                    task_vars=task_vars)
        if read.get("failed") or "content" not in read:
            return None  # not converting yet (checks, or virt-v2v), or already done
        try:
            state = json.loads(base64.b64decode(read["content"]))
        except ValueError:
            return None
        return progress_line(host, state)
