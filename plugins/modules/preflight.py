#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Report every blocker to a live migration before anything changes
version_added: 0.1.0
description:
  - Checks, for the domain O(name) on the source (O(uri), normally the host the task runs on) and the destination
    O(dest_uri), everything a live migration needs, and reports every check with its status (V(pass), V(warn),
    V(fail), V(skip)), a message, a hint on how to fix it, and an overall verdict. It leaves nothing behind on
    either host - to tell shared storage apart, it writes a 512-byte marker file (C(.kvm-migration-shared-*))
    into a disk's directory on the destination and removes it again at once; its temporary storage pools go too.
  - M(kvm.migration.migrate) runs the same checks first and refuses to start while any of them fails.
  - "The checks: C(connection) (the destination answers over the chosen transport; libvirt and QEMU versions of
    both hosts), C(host_uuid) (the hosts have distinct libvirt host UUIDs), C(domain) (it runs on the source, or
    already on the destination), C(name) (no domain of that name is defined on the destination), C(cpu) (the
    domain's CPU runs on the destination's hypervisor, by C(virConnectCompareHypervisorCPU)), C(memory) (free
    memory on the destination covers the domain plus O(memory_margin)), C(machine) (the destination's QEMU
    supports the machine type), C(devices) (no host PCI/USB/mdev passthrough, SR-IOV interface, virtiofs or TPM
    passthrough), C(interfaces) (every libvirt network, bridge or macvtap device the domain's NICs use exists and
    is active on the destination; a warning when its libvirt has no interface driver to ask), C(firmware) (a
    live move needs the UEFI firmware and the variable store's template on the destination, and swtpm for an
    emulated TPM (an offline move too: libvirt does not define such a guest without it); an offline move
    copies the variable store and the emulated TPM's state, and refuses to
    overwrite either when the destination already holds one that an interrupted run of the same move did not
    leave), C(cache) (every writable disk uses cache V(none) or V(directsync), unless O(allow_unsafe)),
    C(storage) (the destination directories exist, hold no file at the disks' paths, and have room for the
    disks' allocation), and C(network) (the destination's hostname, or the host in O(migrate_uri) and
    O(disks_uri), resolves on the source to a non-loopback address whose migration ports 49152 and 49153 are
    not filtered)."
  - The C(network) check probes from the machine the module runs on; it is skipped when O(uri) is a remote URI.
  - With O(live=false) (an offline move of a shut-off domain) C(memory), C(cache) and C(network) are skipped, C(devices)
    and C(interfaces) only warn (and C(firmware) for missing firmware, or an emulated TPM whose state the
    definition keeps at a custom top-level path, which is not copied), and C(storage) also checks that every
    image is visible to libvirt on the source (it is copied through libvirt) and stages its backing chain.
  - C(name) also refuses a domain with the same UUID under another name, and C(machine) an emulator path (the
    domain's C(<emulator>)) that the destination lacks.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration.migration
  - kvm.migration._attributes
  - kvm.migration._attributes.info_module
  - kvm.migration._attributes.actiongroup_migration
options:
  fail_on_blockers:
    description:
      - Fail the task when the verdict is V(fail); the report is then under the C(preflight) key of the failure
        result. With V(false) the task succeeds and the caller reads RV(verdict).
    type: bool
    default: true
notes:
  - To check whether the storage directories on the destination have room, the module may open a transient
    libvirt storage pool for a directory that no pool covers; it is destroyed (never the files) before the
    module returns.
seealso:
  - module: kvm.migration.migrate
  - module: kvm.migration.cpu_baseline
"""

EXAMPLES = r"""
- name: What would stop web01 from moving to hv2?
  kvm.migration.preflight:
    name: web01
    dest_uri: qemu+ssh://hv2/system
  register: preflight

- name: Collect the report without failing, to decide later
  kvm.migration.preflight:
    name: web01
    dest_uri: qemu+tcp://hv2/system
    migrate_uri: tcp://192.168.50.12
    fail_on_blockers: false
  register: preflight

- name: Show the blockers
  ansible.builtin.debug:
    msg: "{{ preflight.checks | selectattr('status', '==', 'fail') | map(attribute='message') | list }}"
"""

RETURN = r"""
verdict:
  description: V(fail) when any check failed, else V(pass).
  returned: always
  type: str
  choices: [pass, fail]
  sample: fail
nothing_to_do:
  description: The domain already runs on the destination (with O(live=false), is defined there).
  returned: always
  type: bool
  sample: false
attach:
  description: A migration of the domain to the destination is already running; M(kvm.migration.migrate) would wait
    for it rather than start another.
  returned: always
  type: bool
  sample: false
blockers:
  description: Names of the failed checks.
  returned: always
  type: list
  elements: str
  sample: [network, cache]
warnings:
  description: Names of the checks that passed with a warning.
  returned: always
  type: list
  elements: str
  sample: []
checks:
  description: Every check, in a fixed order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The check.
      type: str
    status:
      description: V(pass), V(warn), V(fail) or V(skip).
      type: str
    message:
      description: What was found.
      type: str
    hint:
      description: How to fix it (failed and warned checks).
      type: str
    details:
      description: Figures behind the result, where there are any.
      type: dict
  sample: [{name: network, status: fail, message: "port 49152 on hv2 (10.0.0.2) is not reachable from the source:
            No route to host (rejected by a firewall)", hint: "open 49152-49215/tcp on the destination's firewall"}]
hosts:
  description: The libvirt and QEMU versions, hostname and host UUID of the source and the destination.
  returned: always
  type: dict
  sample: {source: {uri: "qemu:///system", hostname: hv1, libvirt: 11.3.0, hypervisor: 10.0.13,
                    host_uuid: 94098632-2f9d-4b07-bbb5-6a925eef4cc9}}
"""

from ansible_collections.kvm.migration.plugins.module_utils._migration import Migration, MigrationRequest
from ansible_collections.kvm.migration.plugins.module_utils._module import MIGRATION_ARGUMENT_SPEC, LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._preflight import PreflightFailed


def run_module(module):
    request = MigrationRequest.from_params(module.params)
    request.validate()  # before any connection: bad input changes nothing anywhere
    source = module.client(role="source")
    dest = module.client(request.dest_uri, role="destination", connect=False)
    report = Migration(source, dest, request).check()
    if report.verdict == "fail" and module.params["fail_on_blockers"]:
        raise PreflightFailed(request.name, request.dest_uri, report)
    module.exit_json(changed=False, **report.as_dict())


def main():
    argument_spec = dict(MIGRATION_ARGUMENT_SPEC)
    argument_spec["fail_on_blockers"] = {"type": "bool", "default": True}
    module = LibvirtModule(argument_spec=argument_spec, supports_check_mode=True)
    module.run(run_module)


if __name__ == "__main__":
    main()
