# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""A long command (qemu-img convert, virt-v2v) run under watch: its output passed on as it comes, so progress
can be read from it, and the whole process group killed past a deadline or when the module itself fails."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time

ERROR_TAIL = 4096


def run_watched(argv, on_output, deadline=None, stopped=None, env=None):
    """Runs argv in its own session (env: variables to set for it).  on_output(chunk, is_stderr) gets every
    read; past deadline (time.monotonic()) the exception stopped() returns is raised after the process group is
    killed.  Returns (rc, the tail of its stderr as text)."""
    err = b""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True, env=dict(os.environ, **(env or {}))) as proc, \
            selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        try:
            while selector.get_map():
                if deadline is not None and time.monotonic() > deadline:
                    raise stopped()
                for key, _events in selector.select(timeout=1.0):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    if key.fileobj is proc.stderr:
                        err = (err + chunk)[-ERROR_TAIL:]
                    on_output(chunk, key.fileobj is proc.stderr)
        except BaseException:
            _kill_group(proc)
            raise
        rc = proc.wait()
    return rc, err.decode("utf-8", errors="replace")


def _kill_group(proc):
    # the children too: virt-v2v runs nbdkit and a libguestfs appliance
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()
