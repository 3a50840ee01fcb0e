#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: evacuation_plan
short_description: Decide where every guest of a host goes, how many move at once and in which order
version_added: 0.1.0
description:
  - Reads every domain on the source host (O(uri), normally the host the task runs on) and, for each, runs the
    read-only checks of M(kvm.migration.preflight) against every candidate in O(candidates) (CPU, memory,
    machine type, devices, networks and bridges, firmware, disk cache, storage room, migration ports). Then it
    places each guest, decides the concurrency, and returns one report before anything moves.
  - "Placement: the biggest guests first, each to the candidate that passed every check and keeps the most
    free memory after it; memory (the guest plus O(memory_margin), beyond O(reserved_memory)) and disk room are
    counted for all the guests placed on a candidate together. A candidate in maintenance (see
    M(kvm.migration.host_maintenance)) is never chosen."
  - "Concurrency is decided, not guessed: all the migrations leave the same source and share its link. For
    every running guest the plan finds, from its measured dirty rate and the link, the largest number of
    migrations at once (itself included) at which pre-copy still converges with its share of the link, at most
    O(max_outgoing). A migration starts only while it and every running one stay within their numbers, with at
    most O(max_outgoing) leaving the source and O(max_incoming) arriving at one destination. A guest that
    finishes only with post-copy or auto-converge (as O(postcopy) and O(auto_converge) allow) runs alone; one
    that cannot finish at all is reported in RV(plan.not_migratable)."
  - Shut-off guests move offline (their images and definition); running and paused ones live.
  - Nothing is changed on any host. Outside check mode, the link is measured (unless O(link_speed) is given)
    by writing a short scratch file into C(/var/lib/libvirt/images) on each candidate, deleted at once.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration._attributes
  - kvm.migration._attributes.info_module
  - kvm.migration._attributes.actiongroup_migration
options:
  candidates:
    description: The hosts the guests may go to.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The host's name in the plan (its inventory hostname).
        type: str
        required: true
      uri:
        description: The libvirt URI by which the source reaches it, for example V(qemu+ssh://hv2/system).
        type: str
        required: true
      maintenance:
        description: The host is in maintenance and takes no guest.
        type: bool
        default: false
  guests:
    description: The domains to move; all the domains on the source when empty.
    type: list
    elements: str
    default: []
  transient:
    description:
      - What to do with a transient (running, not defined) domain. V(transient) moves it and keeps it
        transient; V(persistent) defines it on the destination; V(skip) leaves it and reports it.
    type: str
    default: transient
    choices: [transient, persistent, skip]
  max_outgoing:
    description: At most this many migrations leave the source at once (oVirt and KubeVirt use 2).
    type: int
    default: 2
  max_incoming:
    description: At most this many migrations arrive at one destination at once.
    type: int
    default: 2
  reserved_memory:
    description: MiB of memory kept free on every candidate for the host itself, beyond O(memory_margin) per guest.
    type: int
    default: 0
  memory_margin:
    description: MiB of memory that must stay free on a candidate beyond each live guest's memory.
    type: int
    default: 256
  link_speed:
    description:
      - MiB/s the source's link carries. V(0) measures it to every candidate (not in check mode, where the
        concurrency then follows the caps alone).
    type: int
    default: 0
  measure_mib:
    description: MiB sent to each candidate to measure the link.
    type: int
    default: 32
  dirty_rates:
    description:
      - Dirty rates in MiB/s by guest name, for example from M(kvm.migration.dirtyrate); the others running
        are measured (two one-second samples each).
    type: dict
    default: {}
  max_downtime:
    description: The longest pause in ms a live guest may see; the predictions use it.
    type: int
    default: 250
  postcopy:
    description: Whether a guest that does not converge may finish with post-copy (anything but V(off)).
    type: str
    default: "off"
    choices: ["off", immediate, on_demand]
  auto_converge:
    description: Whether a guest that does not converge may be slowed down by QEMU's auto-converge.
    type: bool
    default: true
  storage:
    description: The storage mode of each move, as in M(kvm.migration.migrate).
    type: str
    default: auto
    choices: [auto, shared, copy_all, copy_incremental]
  tls:
    description: The migrations run over TLS (the preflight checks their ports accordingly).
    type: bool
    default: false
  allow_unsafe:
    description: Allow disks with caches that make a migration unsafe, as in M(kvm.migration.migrate).
    type: bool
    default: false
notes:
  - The prediction behind the concurrency is the one M(kvm.migration.dirtyrate) and the migrate auto
    strategy use (docs/user-guide.md); with the link measured over SSH it is a lower bound, so the plan errs
    towards fewer migrations at once.
seealso:
  - module: kvm.migration.host_maintenance
  - module: kvm.migration.evacuate
  - module: kvm.migration.preflight
"""

EXAMPLES = r"""
- name: Plan the evacuation of hv1 to hv2 and hv3
  kvm.migration.evacuation_plan:
    candidates:
      - {name: hv2, uri: "qemu+ssh://hv2/system"}
      - {name: hv3, uri: "qemu+ssh://hv3/system"}
    max_outgoing: 2
  register: evacuation

- name: Show where each guest goes
  ansible.builtin.debug:
    msg: "{{ evacuation.plan.moves | map(attribute='name') | zip(evacuation.plan.moves | map(attribute='destination')) }}"
"""

RETURN = r"""
plan:
  description: The evacuation plan; M(kvm.migration.evacuate) runs it.
  returned: success
  type: dict
  contains:
    moves:
      description:
        - One entry per guest that moves, in the order they start. Each has C(name), C(destination),
          C(destination_uri), C(strategy) (V(live) or V(offline)), C(why) (why that destination),
          C(memory_bytes), C(disk_bytes) (to copy), C(dirty_rate_mib_s), C(max_parallel) (migrations at once at
          which it still converges), C(converge_with) (V(precopy), V(auto_converge) or V(postcopy)),
          C(start_s) and C(predicted_seconds) (the simulated schedule), C(predicted_downtime_ms) and
          C(prediction).
      type: list
      elements: dict
    order:
      description: The guests' names in the order they start.
      type: list
      elements: str
    unplaceable:
      description: Guests that fit on no candidate, each with C(name), C(state) and C(reasons) by candidate.
      type: list
      elements: dict
    not_migratable:
      description: Guests that cannot move whatever the destination (host devices, unsafe caches, a dirty rate
        no strategy allowed can follow), each with C(name), C(state) and C(reasons).
      type: list
      elements: dict
    skipped:
      description: Guests left alone (transient with O(transient=skip), crashed, suspended), with C(reason).
      type: list
      elements: dict
    already_moved:
      description: Guests already running on a candidate (a re-run after an interrupted evacuation).
      type: list
      elements: str
    unreachable:
      description: Candidates the source could not connect to, with libvirt's error.
      type: dict
    link:
      description: The link's rate, C(mib_per_s) and C(source) (V(stated) or V(measured), with C(per_destination)).
      type: dict
    expected_seconds:
      description: The simulated schedule's total, or null without a link rate.
      type: float
    lower_bound_seconds:
      description: All the bytes to move (touched RAM of the live guests and disks to copy) over the link rate.
      type: float
    max_outgoing:
      description: The cap per source used.
      type: int
    max_incoming:
      description: The cap per destination used.
      type: int
    candidates:
      description: Each candidate's C(name), C(uri), C(maintenance), C(free_memory_bytes), C(reserved_memory_bytes),
        C(link_mib_s).
      type: list
      elements: dict
    notes:
      description: What the plan could not decide and why.
      type: list
      elements: str
  sample:
    moves:
      - {name: web01, destination: hv2, strategy: live, max_parallel: 2, converge_with: precopy, start_s: 0,
         predicted_seconds: 12.5, why: "passes every check; of hv2, hv3, it keeps the most memory free after this guest (30712 MiB)"}
    unplaceable: []
    not_migratable: []
    expected_seconds: 12.5
"""

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._evacuation_survey import EvacuationSurvey
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._options import (
    DIRTY_RATE_BOUND,
    EVACUATION_BOUNDS,
    check_bounds,
    check_domain_name,
    check_libvirt_uri,
)


def validate(params):
    """Every check that needs no host, before anything is read."""
    check_bounds(params, EVACUATION_BOUNDS)
    names = [c["name"] for c in params["candidates"]]
    if not names:
        raise InvalidRequest("candidates is empty; give at least one host the guests may go to")
    if len(set(names)) != len(names):
        raise InvalidRequest("candidates names a host twice: %s" % ", ".join(sorted({n for n in names if names.count(n) > 1})))
    for index, cand in enumerate(params["candidates"]):
        if not cand["name"].strip() or any(ch in cand["name"] for ch in "/\n\r\t"):
            raise InvalidRequest("candidates[%d].name=%r is not a host name" % (index, cand["name"]))
        check_libvirt_uri("candidates[%d].uri" % index, cand["uri"])
    for index, name in enumerate(params["guests"]):
        check_domain_name("guests[%d]" % index, name)
    for name, rate in list(params["dirty_rates"].items()):
        try:
            rate = float(rate)  # AWX surveys send strings
        except (TypeError, ValueError):
            raise InvalidRequest("dirty_rates[%s]=%r is not a number of MiB/s" % (name, rate))
        DIRTY_RATE_BOUND.check("dirty_rates[%s]" % name, rate)
        params["dirty_rates"][name] = rate


def run_module(module):
    validate(module.params)
    plan = EvacuationSurvey(module, module.params, module.check_mode).plan()
    module.exit_json(changed=False, plan=plan)


def main():
    module = LibvirtModule(
        argument_spec={
            "candidates": {"type": "list", "elements": "dict", "required": True, "options": {
                "name": {"type": "str", "required": True},
                "uri": {"type": "str", "required": True},
                "maintenance": {"type": "bool", "default": False},
            }},
            "guests": {"type": "list", "elements": "str", "default": []},
            "transient": {"type": "str", "default": "transient", "choices": ["transient", "persistent", "skip"]},
            "max_outgoing": {"type": "int", "default": 2},
            "max_incoming": {"type": "int", "default": 2},
            "reserved_memory": {"type": "int", "default": 0},
            "memory_margin": {"type": "int", "default": 256},
            "link_speed": {"type": "int", "default": 0},
            "measure_mib": {"type": "int", "default": 32},
            "dirty_rates": {"type": "dict", "default": {}},
            "max_downtime": {"type": "int", "default": 250},
            "postcopy": {"type": "str", "default": "off", "choices": ["off", "immediate", "on_demand"]},
            "auto_converge": {"type": "bool", "default": True},
            "storage": {"type": "str", "default": "auto", "choices": ["auto", "shared", "copy_all", "copy_incremental"]},
            "tls": {"type": "bool", "default": False},
            "allow_unsafe": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
