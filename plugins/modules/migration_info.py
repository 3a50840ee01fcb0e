#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_info
short_description: Read a domain's state and its running migration job on one libvirt host
version_added: 0.1.0
description:
  - Reports whether the domain O(name) exists on the host at O(uri), its state, whether it is persistent, and the
    progress of the job running on it (for example a migration), without changing anything.
  - Use it to verify where a guest runs after a migration, or to poll a migration that runs asynchronously
    (AWX/Automation Controller jobs with C(async)).
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
      - Name of the domain. Without it, only the host is reported (for example its libvirt host UUID).
    type: str
"""

EXAMPLES = r"""
- name: Where does web01 run now?
  kvm.migration.migration_info:
    name: web01
  register: web01

- name: Read this host's libvirt host UUID
  kvm.migration.migration_info:
  register: hv

- name: Poll the migration job on the source while it runs
  kvm.migration.migration_info:
    name: web01
  register: info
  until: info.job.type == 'none'
  retries: 120
  delay: 5
"""

RETURN = r"""
exists:
  description: Whether a domain of that name is defined or running on the host.
  returned: when O(name) is given
  type: bool
  sample: true
domain:
  description: The domain's C(state) (V(absent), V(running), V(paused), V(shutoff), ...), C(active),
    C(persistent) and C(uuid).
  returned: when O(name) is given
  type: dict
  sample: {state: running, active: true, persistent: true, uuid: 0b7d6c3e-1f4a-4c55-9a43-6a1f3c2e9d10}
host:
  description: The host's libvirt host UUID, hostname and versions.
  returned: always
  type: dict
  sample: {host_uuid: 94098632-2f9d-4b07-bbb5-6a925eef4cc9, hostname: hv1, libvirt: 11.3.0, hypervisor: 10.0.13}
maintenance:
  description:
    - The host's maintenance mark (C(reason), C(since), C(by); see M(kvm.migration.host_maintenance)), or null
      when the host is active. Read from the machine the module runs on, so only when O(uri) is a local URI.
  returned: when O(uri) is local
  type: dict
job:
  description:
    - The job running on the domain. C(type) is V(none) when there is none. C(percent) is the share of the
      data processed so far; C(stats) holds libvirt's raw job statistics.
  returned: when O(name) is given
  type: dict
  sample: {type: unbounded, percent: 42.5, stats: {time_elapsed: 5020, data_processed: 120586240, data_remaining: 163053568}}
"""

from urllib.parse import urlparse

from ansible_collections.kvm.migration.plugins.module_utils._domain import describe, job_report
from ansible_collections.kvm.migration.plugins.module_utils._maintenance import read_mark
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._options import check_domain_name


def run_module(module):
    name = module.params["name"]
    if name is not None:
        check_domain_name("name", name)
    client = module.client()
    host = {"host_uuid": client.host_uuid(), "hostname": client.hostname()}
    host.update(client.versions())
    local = {} if urlparse(client.uri).hostname else {"maintenance": read_mark()}
    if name is None:
        module.exit_json(changed=False, host=host, **local)
    domain = client.lookup_domain(name)
    module.exit_json(changed=False, exists=domain is not None, domain=describe(domain), host=host,
                     job=job_report(domain), **local)


def main():
    module = LibvirtModule(
        argument_spec={"name": {"type": "str"}},
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
