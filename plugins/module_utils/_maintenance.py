# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The maintenance mark of a hypervisor: a small JSON file on the host, so that the mark lives as long as the
host and every tool on it can see it.  Plain Python (no libvirt)."""

from __future__ import annotations

import json
import os

from ansible_collections.kvm.migration.plugins.module_utils._errors import OperationFailed

MARK_PATH = "/var/lib/kvm-migration/maintenance.json"
# Written by migration_job state=aborted: an evacuation running from this host starts nothing more.  The
# evacuation removes it when it starts and when it ends.
ABORT_REQUEST_PATH = "/var/lib/kvm-migration/abort-requested.json"
MAX_REASON = 500


def read_mark(path=MARK_PATH):
    """The mark ({"reason", "since", "by"}) or None when the host is active.  A mark that is not ours (unreadable
    JSON) still counts as a mark: a host someone meant to keep empty stays empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperationFailed("Cannot read the maintenance mark %s: %s" % (path, exc))
    try:
        mark = json.loads(text)
    except ValueError:
        return {"reason": "unreadable mark file %s" % path, "since": None, "by": None}
    return mark if isinstance(mark, dict) else {"reason": str(mark), "since": None, "by": None}


def write_mark(module, mark, path=MARK_PATH):  # also writes the abort request
    """Write the mark atomically (a temporary file in the same directory, then a rename)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temporary = os.path.join(directory, ".maintenance.json.%d" % os.getpid())
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(mark, handle, sort_keys=True)
            handle.write("\n")
        module.atomic_move(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def remove_mark(path=MARK_PATH):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
