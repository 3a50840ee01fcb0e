#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: evacuate
short_description: Run an evacuation plan - many migrations from one host, as many at once as the plan allows
version_added: 0.1.0
description:
  - Runs the moves of a plan made by M(kvm.migration.evacuation_plan) on the source host (the task's host),
    each as a M(kvm.migration.migrate) job - running guests live, shut-off ones offline.
  - A migration starts only when the plan's admission rule allows it - at most RV(kvm.migration.evacuation_plan#module:plan.max_outgoing)
    leaving the source, RV(kvm.migration.evacuation_plan#module:plan.max_incoming) arriving at one destination, and every
    running migration (and the new one) within the number of migrations at once at which it still converges.
    When the plan knows the link, its prediction stands for each live migration - C(strategy=manual) with
    auto-converge as the safety net, post-copy from the start for a guest the plan gave post-copy - so no
    migration measures the dirty rate again; otherwise each one gets its share of the link as
    O(kvm.migration.migrate#module:link_speed) for its own V(auto) strategy. A C(strategy) in O(migrate_options)
    overrides this.
  - A failed migration leaves its guest on the source (as M(kvm.migration.migrate) guarantees) and the others
    go on; the task fails at the end and names every guest that did not move and where it is.
  - Every O(poll_interval) seconds one line shows every running migration; at the end a table shows each guest,
    where it went, the strategy, the time, the downtime and the result.
  - When a running migration is cancelled on the source by someone else (M(kvm.migration.migration_job) with
    O(kvm.migration.migration_job#module:state=aborted), or C(virsh domjobabort)), no further migration starts -
    that is how an operator aborts an evacuation. The guests not started stay on the source.
  - This module runs on the controller through its action plugin, which starts the migrate jobs on the source.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration._attributes
options:
  plan:
    description: The RV(kvm.migration.evacuation_plan#module:plan) to run.
    type: dict
    required: true
  migrate_options:
    description:
      - Options for every M(kvm.migration.migrate) job (for example C(storage), C(max_downtime), C(postcopy),
        C(tls), C(bandwidth)). C(name), C(dest_uri), C(live) and C(persistent) come from the plan.
    type: dict
    default: {}
  poll_interval:
    description: Seconds between progress lines (between 1 and 60).
    type: float
    default: 5
attributes:
  check_mode:
    support: full
    details:
      - Reports the guests that would move; the plan itself shows where and in which order.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A guest already on its destination is reported as in place; a plan made after a finished evacuation has
        no moves.
  action:
    support: full
    description: Runs on the controller.
    details:
      - The migrations run on the source as async jobs of M(kvm.migration.migrate).
notes:
  - Aborting ansible-playbook does not stop the migrations already running on the source (they are jobs there);
    run the C(kvm.migration.abort_migrations) playbook, which cancels them, and each guest stays on the source.
seealso:
  - module: kvm.migration.evacuation_plan
  - module: kvm.migration.host_maintenance
  - module: kvm.migration.migration_job
"""

EXAMPLES = r"""
- name: Plan
  kvm.migration.evacuation_plan:
    candidates:
      - {name: hv2, uri: "qemu+ssh://hv2/system"}
      - {name: hv3, uri: "qemu+ssh://hv3/system"}
  register: evacuation

- name: Run it
  kvm.migration.evacuate:
    plan: "{{ evacuation.plan }}"
    migrate_options:
      max_downtime: 300
      postcopy: on_demand
"""

RETURN = r"""
moves:
  description:
    - One row per guest - C(name), C(from), C(to), C(strategy), C(seconds), C(downtime_ms), C(bytes) (sent),
      C(memory_bytes) (RAM sent), C(result) (V(moved), V(in place), V(failed), V(not started)),
      C(guest_location) and C(msg).
  returned: success or failure
  type: list
  elements: dict
  sample: [{name: web01, from: hv1, to: hv2, strategy: live (pre-copy), seconds: 12.3, downtime_ms: 41, result: moved}]
timeline:
  description: When each migration started and ended (seconds from the start) and how many ran at once.
  returned: success or failure
  type: list
  elements: dict
peak_concurrency:
  description: The most migrations that ran at once.
  returned: success or failure
  type: int
total_seconds:
  description: Seconds the whole evacuation took.
  returned: success or failure
  type: float
aborted:
  description: Whether an operator's cancel stopped the evacuation.
  returned: success or failure
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "plan": {"type": "dict", "required": True},
            "migrate_options": {"type": "dict", "default": {}},
            "poll_interval": {"type": "float", "default": 5},
        },
        supports_check_mode=True,
    )
    module.fail_json(msg="kvm.migration.evacuate runs on the controller through its action plugin; call it as a task")


if __name__ == "__main__":
    main()
