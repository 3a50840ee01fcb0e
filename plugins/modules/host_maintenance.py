#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_maintenance
short_description: Mark a hypervisor as in maintenance, so that no evacuation places guests on it
version_added: 0.1.0
description:
  - Sets or removes the maintenance mark of the host the task runs on, a small JSON file
    (C(/var/lib/kvm-migration/maintenance.json)) with the reason, the time and the user.
  - M(kvm.migration.evacuation_plan) never chooses a candidate in maintenance, and the C(kvm.migration.evacuate)
    role marks the host it empties, so a re-run finds nothing to do. The mark does not stop libvirt itself -
    other tools can still start guests there.
  - M(kvm.migration.migration_info) reports the mark as RV(kvm.migration.migration_info#module:maintenance).
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration._attributes
options:
  state:
    description: V(maintenance) sets the mark; V(active) removes it.
    type: str
    default: maintenance
    choices: [maintenance, active]
  reason:
    description: Why, for whoever reads the mark. A changed reason on a marked host updates the mark.
    type: str
    default: ""
  moved:
    description:
      - With O(state=maintenance), guests that left the host, recorded in the mark so that the
        C(kvm.migration.evacuate) role can bring them back (C(evacuate_return)). Takes the rows of
        RV(kvm.migration.evacuate#module:moves) as they are - C(name), C(to) (an inventory hostname) and C(strategy);
        rows whose C(result) is not V(moved) are left out.
      - The latest move of a guest replaces an earlier one; guests recorded before stay. The record goes with
        the mark when O(state=active).
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
seealso:
  - module: kvm.migration.evacuation_plan
"""

EXAMPLES = r"""
- name: Keep guests away from hv1 while it is patched
  kvm.migration.host_maintenance:
    state: maintenance
    reason: kernel update CHG-1234

- name: Record where the evacuation took the guests
  kvm.migration.host_maintenance:
    reason: kernel update CHG-1234
    moved: "{{ evacuation.moves }}"

- name: Take hv1 back into service
  kvm.migration.host_maintenance:
    state: active
"""

RETURN = r"""
maintenance:
  description: Whether the host is in maintenance after the task.
  returned: always
  type: bool
mark:
  description:
    - The mark after the task (C(reason), C(since) in UTC ISO 8601, C(by), and C(moved), the guests recorded
      with O(moved)), or null.
  returned: always
  type: dict
  sample: {reason: kernel update, since: "2026-12-03T18:00:00Z", by: root,
           moved: [{name: web01, to: hv2, strategy: live (pre-copy)}]}
"""

import datetime
import getpass

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._maintenance import (
    MAX_REASON,
    merge_moves,
    read_mark,
    recorded_moves,
    remove_mark,
    write_mark,
)
from ansible_collections.kvm.migration.plugins.module_utils._module import CollectionModule


def run_module(module):
    p = module.params
    if len(p["reason"]) > MAX_REASON or any(ord(ch) < 32 for ch in p["reason"]):
        raise InvalidRequest("reason must be one line of at most %d characters (got %d characters)"
                             % (MAX_REASON, len(p["reason"])))
    moves = recorded_moves(p["moved"])
    if moves and p["state"] == "active":
        raise InvalidRequest("moved is recorded with state=maintenance only (got %d rows with state=active)"
                             % len(moves))
    before = read_mark()
    if p["state"] == "active":
        after = None
    else:
        after = dict(before or {})
        if before is None or before.get("reason") != p["reason"]:
            after.update({"reason": p["reason"], "by": getpass.getuser(),
                          "since": after.get("since") or
                          datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        if moves:
            after["moved"] = merge_moves(after.get("moved"), moves)
    changed = after != before
    if changed and not module.check_mode:
        if after is None:
            remove_mark()
        else:
            write_mark(module.module, after)
    result = {"changed": changed, "maintenance": after is not None, "mark": after}
    if module.diff_mode:
        result["diff"] = {"before": {"maintenance": before is not None, "mark": before},
                          "after": {"maintenance": after is not None, "mark": after}}
    module.exit_json(**result)


def main():
    module = CollectionModule(
        argument_spec={
            "state": {"type": "str", "default": "maintenance", "choices": ["maintenance", "active"]},
            "reason": {"type": "str", "default": ""},
            "moved": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
