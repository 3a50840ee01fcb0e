# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The controller side shared by the modules that run long (migrate, vmware_import): the module runs on its
host as an async job while the action plugin prints a progress line, labelled with that host (the delegated
one, if any), at the display interval.

The job's status is asked every second at first and then at the display interval, so a short run ends promptly
and a long one costs two remote calls per interval.  Variables (inventory, group_vars, extra vars or AWX
survey): kvm_migration_progress (false: no progress lines) and kvm_migration_progress_interval (seconds between
lines, 1-3600, default 5); then the environment variables KVM_MIGRATION_PROGRESS=0 and
KVM_MIGRATION_PROGRESS_INTERVAL; then ansible.cfg's [kvm_migration] section (progress, progress_interval).
When the task is already async (AWX users poll the job themselves) or in check mode, the module simply runs as
usual."""

from __future__ import annotations

import configparser
import os
import time

from ansible import constants as C
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

ASYNC_LIMIT = 7 * 24 * 3600  # the modules' own timeouts end a run long before this
DEFAULT_INTERVAL = 5.0
INTERVAL_BOUNDS = (1.0, 3600.0)
JOB_KEYS = ("ansible_job_id", "finished", "started", "results_file", "stdout", "stderr", "stdout_lines",
            "stderr_lines", "erased")


CONFIG_SECTION = "kvm_migration"


def config_file_settings(path):
    """{"progress": ..., "progress_interval": ...} as far as ansible.cfg's [kvm_migration] section sets them."""
    if not path:
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ValueError("%s cannot be read for its [%s] section: %s" % (path, CONFIG_SECTION, exc))
    if not parser.has_section(CONFIG_SECTION):
        return {}
    return {k: v for k, v in parser.items(CONFIG_SECTION) if k in ("progress", "progress_interval")}


def _first(*sources):
    """(value, name) of the first source that sets it: each source is (value, name)."""
    for value, name in sources:
        if value is not None and value != "":
            return value, name
    return None, None


def progress_settings(task_vars, environ, config=None):
    """(enabled, interval) from the variables, else the environment, else ansible.cfg; a bad value names
    where it was set."""
    config = config or {}
    enabled, _where = _first((task_vars.get("kvm_migration_progress"), "kvm_migration_progress"),
                             (environ.get("KVM_MIGRATION_PROGRESS"), "KVM_MIGRATION_PROGRESS"),
                             (config.get("progress"), "ansible.cfg [kvm_migration] progress"))
    if enabled is None:
        enabled = True
    elif isinstance(enabled, str):
        enabled = enabled.strip().lower() not in ("0", "false", "no", "off")
    raw, name = _first((task_vars.get("kvm_migration_progress_interval"), "kvm_migration_progress_interval"),
                       (environ.get("KVM_MIGRATION_PROGRESS_INTERVAL"), "KVM_MIGRATION_PROGRESS_INTERVAL"),
                       (config.get("progress_interval"), "ansible.cfg [kvm_migration] progress_interval"))
    if raw is None:
        return bool(enabled), DEFAULT_INTERVAL
    try:
        interval = float(raw)
    except (TypeError, ValueError):
        raise ValueError("%s=%r is not a number of seconds" % (name, raw))
    low, high = INTERVAL_BOUNDS
    if not low <= interval <= high:
        raise ValueError("%s=%r is out of range: give %g to %g seconds" % (name, raw, low, high))
    return bool(enabled), interval


def poll_delay(elapsed, interval):
    """Seconds until the job's status is asked again: every second for a short job, the display interval for a
    long one (reached after about six intervals)."""
    return min(interval, max(1.0, elapsed / 6.0))


class ProgressAction(ActionBase):
    """Runs the task's module as an async job and prints progress_text() every interval while it runs."""

    # A task the user made async (AWX users poll the job themselves) is handed to Ansible's own async.
    _supports_async = True

    def progress_text(self, host, task_vars):
        """One progress line, or None when there is nothing to show yet."""
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        try:
            enabled, interval = progress_settings(task_vars, os.environ, config_file_settings(C.CONFIG_FILE))
        except ValueError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        if self._task.async_val or self._task.check_mode or not enabled or self._connection.has_native_async:
            result.update(self._execute_module(task_vars=task_vars, wrap_async=bool(self._task.async_val)))
            return result

        host = self._task.delegate_to or task_vars.get("inventory_hostname", "?")
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
        last_line = 0.0
        began = time.monotonic()
        while True:
            status = self._execute_module(module_name="ansible.legacy.async_status", module_args=status_args,
                                          task_vars=task_vars)
            if status.get("finished") or status.get("failed") and "finished" not in status:
                break
            if time.monotonic() - last_line >= interval:
                line = self.progress_text(host, task_vars)
                if line:
                    display.display(line)
                    last_line = time.monotonic()
            time.sleep(poll_delay(time.monotonic() - began, interval))
        self._execute_module(module_name="ansible.legacy.async_status",
                             module_args=dict(status_args, mode="cleanup"), task_vars=task_vars)
        result.update({k: v for k, v in status.items() if k not in JOB_KEYS})
        return result
