# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""One run at a time per domain on the host that runs the module.

A controller killed mid-migration does not stop the module on the host: it goes on to finish (or clean up)
its migration.  A re-run started meanwhile would race it, both removing the same volumes and pools.  The
re-run waits here for the other run to end, then finds the state that run left.  The lock is an flock(2) on
a file under /run/lock: the kernel drops it when its holder dies, so a stale file never blocks, and the file
is removed on release.  Plain Python (no libvirt)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time

from ansible_collections.kvm.migration.plugins.module_utils._errors import OperationFailed

LOCK_DIR = "/run/lock/kvm-migration"
# Long enough for the other run to finish its own migration within its timeouts (its watchdog ends it).
DEFAULT_WAIT_SECONDS = 1800


def lock_path(name, directory=LOCK_DIR):
    """The lock file of domain `name`: a digest of the name, so no name escapes the directory."""
    return os.path.join(directory, "migrate-%s.lock" % hashlib.sha256(name.encode("utf-8")).hexdigest()[:24])


class RunLock:
    """`with RunLock(name):` holds the domain's lock, waiting up to `wait` seconds for another run to end.
    After the block, `waited` says how long it waited and `holder` who held it (None when it was free)."""

    def __init__(self, name, wait=DEFAULT_WAIT_SECONDS, directory=LOCK_DIR, poll=1.0):
        self.name = name
        self.wait = wait
        self.path = lock_path(name, directory)
        self.poll = poll
        self.waited = 0.0
        self.holder = None
        self._fd = None

    def __enter__(self):
        started = time.monotonic()
        while True:
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OperationFailed("Cannot create the lock %s for the migration of %s: %s; nothing was changed"
                                      % (self.path, self.name, exc),
                                      hint="run the module as root (become: true)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise OperationFailed("Cannot lock %s for the migration of %s: %s" % (self.path, self.name, exc))
                self.holder = self.holder or _read_holder(fd)
                os.close(fd)
                self.waited = time.monotonic() - started
                if self.waited >= self.wait:
                    raise OperationFailed(
                        "Another run of kvm.migration.migrate for %s is still going on this host (%s) after %d s "
                        "of waiting; nothing was changed by this run" % (self.name, _describe(self.holder),
                                                                         self.waited),
                        hint="let that run finish, or stop it with kvm.migration.migration_job state=aborted, "
                             "then run the task again",
                        details={"guest_location": "unchanged", "lock_file": self.path, "lock_holder": self.holder})
                time.sleep(self.poll)
                continue
            if _same_file(fd, self.path):
                break
            # The file was removed (released by its holder) between our open and flock: lock the new one.
            os.close(fd)
        self._fd = fd
        self.waited = time.monotonic() - started
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": int(time.time())}).encode("utf-8"))
        return self

    def __exit__(self, *_exc):
        try:
            os.unlink(self.path)  # while still holding it: a waiter then re-opens the path afresh
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
        return False


def _same_file(fd, path):
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd):
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "null")
    except (OSError, ValueError):
        return None


def _describe(holder):
    if not isinstance(holder, dict) or "pid" not in holder:
        return "its process is unknown"
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, int) else "an unknown time"
    return "process %s, since %s" % (holder["pid"], when)
