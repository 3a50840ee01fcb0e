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

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed

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


MAX_RECORDED = 1000
MAX_NAME = 255


def recorded_moves(rows):
    """The guests an evacuation moved, from its rows (`kvm.migration.evacuate`'s RV moves, or the same shape):
    {name, to, strategy} for every row whose result is "moved".  Anything else is a clear error naming the row,
    so that nothing unreadable lands in the mark."""
    if not isinstance(rows, list) or len(rows) > MAX_RECORDED:
        raise InvalidRequest("moved must be a list of at most %d rows (got %s)"
                             % (MAX_RECORDED, len(rows) if isinstance(rows, list) else type(rows).__name__))
    moves = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidRequest("moved[%d] must be a dict with name and to (got %r)" % (index, row))
        if row.get("result", "moved") != "moved":
            continue
        for key in ("name", "to"):
            value = row.get(key)
            if not isinstance(value, str) or not value or len(value) > MAX_NAME or any(
                    ord(ch) < 32 or ch in "/\\" for ch in value):
                raise InvalidRequest("moved[%d].%s must be a name of 1-%d characters without '/' or control "
                                     "characters (got %r)" % (index, key, MAX_NAME, value))
        moves.append({"name": row["name"], "to": row["to"], "strategy": str(row.get("strategy") or "")[:100]})
    return moves


def merge_moves(recorded, moves):
    """The mark's record after an evacuation run: the latest move of each guest wins, in name order."""
    by_name = {m["name"]: m for m in (recorded or []) if isinstance(m, dict) and "name" in m}
    by_name.update((m["name"], m) for m in moves)
    return [by_name[name] for name in sorted(by_name)]
