# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Where a running vmware_import keeps its conversion progress, and the line the controller prints from it.

The file lives under /run (gone at reboot), is named after the .vmx path (the controller knows that path, not
the domain name the module may derive from it), is replaced atomically at most once a second, and is removed
when the import ends, failed or not."""

from __future__ import annotations

import hashlib
import json
import os
import time

PROGRESS_DIR = "/run/kvm-migration"
WRITE_INTERVAL = 1.0
MIB = 1024 * 1024


def progress_path(vmx):
    digest = hashlib.sha256(os.path.normpath(vmx).encode("utf-8", errors="surrogateescape")).hexdigest()
    return os.path.join(PROGRESS_DIR, "vmware-import-%s.json" % digest[:16])


class ProgressFile:
    """One import's progress: the disk being converted (of how many), its percent, bytes and rate."""

    def __init__(self, vmx, name, disks, clock=time.monotonic):
        self.path = progress_path(vmx)
        self.name = name
        self.disks = disks
        self.clock = clock
        self.started = clock()
        self.disk = None
        self._written = None

    def start_disk(self, index, source, volume, size):
        self.disk = {"index": index, "source": os.path.basename(source), "volume": os.path.basename(volume),
                     "size": size, "started": self.clock(), "percent": 0.0}
        self._write(force=True)

    def update(self, percent):
        self.disk["percent"] = percent
        self._write()

    def _write(self, force=False):
        now = self.clock()
        if not force and self._written is not None and now - self._written < WRITE_INTERVAL:
            return
        disk = self.disk
        elapsed = now - disk["started"]
        done = disk["size"] * disk["percent"] / 100.0
        state = {"name": self.name, "disks": self.disks, "disk": disk["index"] + 1, "source": disk["source"],
                 "volume": disk["volume"], "percent": round(disk["percent"], 1), "size": disk["size"],
                 "rate": done / elapsed if elapsed > 0 else 0.0, "elapsed": round(now - self.started, 1)}
        self._written = now
        partial = self.path + ".tmp"
        try:
            os.makedirs(PROGRESS_DIR, mode=0o755, exist_ok=True)
            with open(partial, "w") as f:
                json.dump(state, f)
            os.replace(partial, self.path)
        except OSError:
            pass  # progress is for the display only; the import goes on without it

    def close(self):
        remove_progress(self.path)


def remove_progress(path):
    """Remove a progress file (this run's, or one a killed run left)."""
    for name in (path, path + ".tmp"):
        try:
            os.unlink(name)
        except OSError:
            pass
    try:
        os.rmdir(os.path.dirname(path))  # only when nothing else is in it
    except OSError:
        pass


def progress_line(host, state):
    """The controller's line for one progress file's content."""
    line = "%s: importing %s, disk %d/%d (%s -> %s) %.0f%% of %.0f MiB" % (
        host, state.get("name"), state.get("disk", 0), state.get("disks", 0), state.get("source"),
        state.get("volume"), state.get("percent", 0), (state.get("size") or 0) / MIB)
    if state.get("rate"):
        line += ", %.1f MiB/s" % (state["rate"] / MIB)
    return line + ", %.0f s" % state.get("elapsed", 0)
