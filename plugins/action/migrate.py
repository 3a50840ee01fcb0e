# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of kvm.migration.migrate: a live progress line in the ansible-playbook output.

The module runs on the source host as an async job; meanwhile this plugin reads the migration job on the
source with kvm.migration.migration_info at the display interval and prints percent, rate, remaining data and
iteration.  The cadence and the variables that control it are those of
plugins/plugin_utils/_async_progress.py (kvm_migration_progress, kvm_migration_progress_interval)."""

from __future__ import annotations

from ansible_collections.kvm.migration.plugins.plugin_utils._async_progress import ProgressAction


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


class ActionModule(ProgressAction):
    def progress_text(self, host, task_vars):
        args = self._task.args
        info = self._execute_module(module_name="kvm.migration.migration_info",
                                    module_args={"name": args.get("name"), "uri": args.get("uri", "qemu:///system")},
                                    task_vars=task_vars)
        job = info.get("job", {})
        if job.get("type") in (None, "none"):
            return None
        return progress_line(host, args.get("name"), job)
