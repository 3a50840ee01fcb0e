#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: dirtyrate
short_description: Measure a guest's dirty page rate and predict whether its live migration will converge
version_added: 0.1.0
description:
  - Measures the rate at which the running domain O(name) rewrites its memory (C(virDomainStartDirtyRateCalc)) and
    the RAM it has touched.
  - Given a bandwidth - stated in O(link_speed), or measured towards O(dest_uri) by a short transfer - it predicts the
    migration before it starts - whether plain pre-copy converges, the estimated total time and downtime, and the
    strategy to use (V(precopy), V(auto_converge), V(postcopy) or V(offline)), with the reasons.
  - The model, with rho = dirty rate / bandwidth - pre-copy converges when rho < 1 (or when the rewritten memory fits
    in the downtime), taking about (RAM / bandwidth) / (1 - rho) after the disk copy. Otherwise post-copy (when
    allowed) finishes in about the time to send the RAM once more, and auto-converge throttles the guest until the
    rounds shrink. See docs/performance.md for how it compares with measured migrations.
  - Changes nothing (the bandwidth measurement writes a scratch volume on the destination and deletes it).
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration._attributes
  - kvm.migration._attributes.info_module
  - kvm.migration._attributes.actiongroup_migration
options:
  name:
    description:
      - Name of the running domain.
    type: str
    required: true
  period:
    description:
      - Seconds over which QEMU measures. Short periods suit guests that rewrite a small area fast; page sampling
        counts each page once per period, so it cannot report more than the rewritten area divided by the period.
    type: int
    default: 1
  samples:
    description:
      - How many measurements of O(period) seconds to take, one after the other; the result is their mean.
        A single short sample is noisy (QEMU hashes 512 pages per GiB); a longer period instead undercounts a
        guest that rewrites its working set more than once per period.
    type: int
    default: 3
  mode:
    description:
      - V(page-sampling) (what V(auto) uses) compares page contents and works everywhere, QEMU TCG included.
        V(dirty-bitmap) and V(dirty-ring) need a KVM guest (dirty-bitmap crashes QEMU 7.2 under TCG).
    type: str
    choices: [auto, page-sampling, dirty-bitmap, dirty-ring]
    default: auto
  link_speed:
    description:
      - The speed of the migration link in MiB/s (or the cap the migration will use), as in
        M(kvm.migration.migrate). V(0) - measure it (with O(dest_uri)).
    type: int
    default: 0
    aliases: [bandwidth]
  dest_uri:
    description:
      - libvirt URI of the destination, as the source reaches it, to measure the bandwidth.
    type: str
  measure_mib:
    description:
      - MiB sent to measure the bandwidth.
    type: int
    default: 32
  scratch_dir:
    description:
      - Directory on the destination for the bandwidth measurement's scratch volume.
    type: path
    default: /var/lib/libvirt/images
  include_disks:
    description:
      - Count the domain's local disks (their allocation) as data to copy before the RAM.
    type: bool
    default: true
  max_downtime:
    description:
      - The downtime allowed at the switch-over, in milliseconds.
    type: int
    default: 250
  postcopy:
    description:
      - The O(kvm.migration.migrate#module:postcopy) setting the migration will have; any value but V(off) lets the
        prediction choose post-copy (it needs C(vm.unprivileged_userfaultfd=1) on the destination).
    type: str
    choices: ["off", immediate, on_demand]
    default: "off"
  auto_converge:
    description:
      - Whether auto-converge (throttling the guest's vCPUs) may be used, as O(kvm.migration.migrate#module:auto_converge).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Will db01 converge at 1 Gbit/s?
  kvm.migration.dirtyrate:
    name: db01
    link_speed: 110
  register: rate

- name: Measure the link to hv2 too, and allow post-copy
  kvm.migration.dirtyrate:
    name: db01
    dest_uri: qemu+ssh://hv2/system
    postcopy: on_demand
  register: rate

- name: Say what will happen
  ansible.builtin.debug:
    msg: "{{ rate.prediction.strategy }}: {{ rate.prediction.reasons | join('; ') }}"
"""

RETURN = r"""
dirty_rate:
  description: The measured dirty rate.
  returned: always
  type: dict
  sample: {mib_per_s: 46.0, period_s: 1, mode: page-sampling, samples_mib_per_s: [44.0, 47.0, 47.0]}
memory:
  description: The domain's memory and the part of it the guest has touched (QEMU's resident memory), in bytes.
  returned: always
  type: dict
  sample: {total_bytes: 268435456, touched_bytes: 201326592}
disk_bytes:
  description: Disk data counted for copying (allocation of the local writable disks).
  returned: always
  type: int
  sample: 2097152
bandwidth:
  description: The bandwidth used for the prediction and where it came from.
  returned: when O(link_speed) or O(dest_uri) is given
  type: dict
  sample: {mib_per_s: 110.0, source: measured, mib: 32, seconds: 0.29}
prediction:
  description:
    - Whether plain pre-copy converges, the recommended strategy, estimates and reasons.
    - C(certain) is false when the dirty rate is within the measurement's error (about 20 %) of the bandwidth;
      whether plain pre-copy converges is then a guess, and the recommended strategy is the one that copes either
      way.
    - The estimated total time assumes the guest rewrites all the RAM it has touched, so it is an upper bound
      for a guest that rewrites only part of it.
  returned: when O(link_speed) or O(dest_uri) is given
  type: dict
  sample: {converges: false, strategy: auto_converge, rho: 1.5, estimated_total_s: 41.0, estimated_downtime_ms: 300,
           rounds: 3, certain: true, reasons: ["dirty rate 36.0 MiB/s over bandwidth 24.0 MiB/s: rho = 1.50"]}
"""

from ansible_collections.kvm.migration.plugins.module_utils import _measure
from ansible_collections.kvm.migration.plugins.module_utils._convergence import predict
from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._options import (
    DIRTYRATE_BOUNDS,
    MAX_DIRTYRATE_SECONDS,
    check_bounds,
    check_directory,
    check_domain_name,
    check_libvirt_uri,
)
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeGateway


def run_module(module):
    p = module.params
    check_domain_name("name", p["name"])
    check_bounds(p, DIRTYRATE_BOUNDS)
    if p["period"] * p["samples"] > MAX_DIRTYRATE_SECONDS:
        raise InvalidRequest("samples=%d x period=%d s would measure for %d s; at most %d s are allowed"
                             % (p["samples"], p["period"], p["samples"] * p["period"], MAX_DIRTYRATE_SECONDS))
    if p["dest_uri"] is not None:
        check_libvirt_uri("dest_uri", p["dest_uri"])
        check_directory("scratch_dir", p["scratch_dir"])
    client = module.client()
    domain = client.lookup_domain(p["name"])
    if domain is None or not domain.isActive():
        raise InvalidRequest("Domain %s is not running on %s; only a running guest has a dirty rate"
                             % (p["name"], client.uri))
    with libvirt_errors("read the definition of %s" % p["name"]):
        spec = DomainSpec.from_xml(domain.XMLDesc(0))
    rate = _measure.dirty_rate(client, domain, p["period"], p["mode"], p["samples"])
    memory = spec.memory_kib * 1024
    result = {
        "changed": False,
        "dirty_rate": rate,
        "memory": {"total_bytes": memory, "touched_bytes": _measure.touched_ram(domain, memory)},
        "disk_bytes": 0,
    }
    if p["include_disks"]:
        for disk in spec.disks:
            if disk.is_local_image:
                with libvirt_errors("read the size of disk %s" % disk.target):
                    result["disk_bytes"] += domain.blockInfo(disk.target)[1]
    if p["link_speed"]:
        result["bandwidth"] = {"mib_per_s": float(p["link_speed"]), "source": "stated"}
    elif p["dest_uri"]:
        stager = VolumeGateway(module.client(p["dest_uri"], role="destination"))
        try:
            try:
                result["bandwidth"] = dict(_measure.bandwidth(stager, p["scratch_dir"], p["measure_mib"]),
                                           source="measured")
            except _measure.NoRoomToMeasure as exc:
                raise InvalidRequest("Cannot measure the bandwidth: %s" % exc,
                                     hint="lower measure_mib, give scratch_dir with room, or state link_speed")
        finally:
            stager.close()
    if "bandwidth" in result:
        workload = _measure.guest_workload(
            result["memory"]["touched_bytes"], rate["mib_per_s"], result["bandwidth"]["mib_per_s"],
            result["disk_bytes"], p["max_downtime"], p["postcopy"], p["auto_converge"])
        result["prediction"] = predict(workload).as_dict()
    module.exit_json(**result)


def main():
    module = LibvirtModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "period": {"type": "int", "default": 1},
            "samples": {"type": "int", "default": 3},
            "mode": {"type": "str", "default": "auto", "choices": ["auto", "page-sampling", "dirty-bitmap", "dirty-ring"]},
            "link_speed": {"type": "int", "default": 0, "aliases": ["bandwidth"]},
            "dest_uri": {"type": "str"},
            "measure_mib": {"type": "int", "default": 32},
            "scratch_dir": {"type": "path", "default": "/var/lib/libvirt/images"},
            "include_disks": {"type": "bool", "default": True},
            "max_downtime": {"type": "int", "default": 250},
            "postcopy": {"type": "str", "default": "off", "choices": ["off", "immediate", "on_demand"]},
            "auto_converge": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
