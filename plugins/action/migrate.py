# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of kvm.migration.migrate: a live progress line in the ansible-playbook output.

The module runs on the source host as an async job; meanwhile this plugin reads the migration job on the
source with kvm.migration.migration_info every few seconds and prints percent, rate, remaining data and
iteration.  When the task is already async (AWX users poll migration_info themselves), in check mode, or with
KVM_MIGRATION_PROGRESS=0, the module simply runs as usual."""

from __future__ import annotations

import os
import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

ASYNC_LIMIT = 7 * 24 * 3600  # the module's own timeouts end a migration long before this
JOB_KEYS = ("ansible_job_id", "finished", "started", "results_file", "stdout", "stderr", "stdout_lines",
            "stderr_lines", "erased")


def progress_line(host, name, job):
    stats = job.get("stats", {})
    total = stats.get("data_total") or 0
    remaining = stats.get("data_remaining") or 0
    parts = ["%s: migrating %s" % (host, name)]
    if total:
        parts.append("%.0f%% of %.0f MiB" % (job.get("percent", 0), total / 1048576.0))
        parts.append("%.0f MiB left" % (remaining / 1048576.0))
    if stats.get("disk_remaining"):
        parts.append("disks %.0f MiB left" % (stats["disk_remaining"] / 1048576.0))
    if stats.get("memory_bps"):
        parts.append("%.1f MiB/s" % (stats["memory_bps"] / 1048576.0))
    if stats.get("memory_iteration"):
        parts.append("iteration %d" % stats["memory_iteration"])
    if stats.get("memory_dirty_rate"):
        parts.append("dirty %.1f MiB/s" % (stats["memory_dirty_rate"] * stats.get("memory_page_size", 4096) / 1048576.0))
    if stats.get("time_elapsed"):
        parts.append("%.0f s" % (stats["time_elapsed"] / 1000.0))
    return ", ".join(parts)


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        interval = float(os.environ.get("KVM_MIGRATION_PROGRESS_INTERVAL", "5"))
        if (self._task.async_val or self._task.check_mode or os.environ.get("KVM_MIGRATION_PROGRESS") == "0"
                or self._connection.has_native_async):
            result.update(self._execute_module(task_vars=task_vars, wrap_async=bool(self._task.async_val)))
            return result

        host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        self._task.async_val = ASYNC_LIMIT
        try:
            started = self._execute_module(task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = 0
        jid = started.get("ansible_job_id")
        if not jid or started.get("failed"):
            result.update(started)
            return result

        status_args = {"jid": jid, "mode": "status", "_async_dir": async_dir}
        info_args = {"name": args.get("name"), "uri": args.get("uri", "qemu:///system")}
        last_line = 0.0
        while True:
            status = self._execute_module(module_name="ansible.legacy.async_status", module_args=status_args,
                                          task_vars=task_vars)
            if status.get("finished") or status.get("failed") and "finished" not in status:
                break
            if time.monotonic() - last_line >= interval:
                info = self._execute_module(module_name="kvm.migration.migration_info", module_args=info_args,
                                            task_vars=task_vars)
                job = info.get("job", {})
                if job.get("type") not in (None, "none"):
                    display.display(progress_line(host, args.get("name"), job))
                    last_line = time.monotonic()
            time.sleep(1)
        self._execute_module(module_name="ansible.legacy.async_status",
                             module_args=dict(status_args, mode="cleanup"), task_vars=task_vars)
        result.update({k: v for k, v in status.items() if k not in JOB_KEYS})
        return result
