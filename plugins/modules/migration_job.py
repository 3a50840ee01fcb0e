#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_job
short_description: Abort running outgoing migrations on a host, leaving each guest on it
version_added: 0.1.0
description:
  - Cancels the outgoing migration job of the named domains (or of every domain) on the host of O(uri), as
    C(virsh domjobabort) does. Each M(kvm.migration.migrate) run whose job is cancelled then recovers - the
    guest keeps running on the source and the destination loses what the run made there - and reports an
    abort by someone else.
  - It also leaves an abort request on the host (C(/var/lib/kvm-migration/abort-requested.json)), so an evacuation
    by M(kvm.migration.evacuate) running from this host then starts no further migration, so this module aborts
    a whole evacuation, even between two migrations.
  - A migration in its post-copy phase cannot be cancelled (the guest already runs on the destination); it is
    reported in RV(not_abortable) and left to finish.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration._attributes
  - kvm.migration._attributes.actiongroup_migration
options:
  name:
    description: The domains whose migrations to abort; every domain with an outgoing migration when empty.
    type: list
    elements: str
    default: []
  state:
    description: V(aborted) cancels the jobs; without a running migration there is nothing to do.
    type: str
    default: aborted
    choices: [aborted]
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run finds no migration running and changes nothing.
seealso:
  - module: kvm.migration.migrate
  - module: kvm.migration.evacuate
"""

EXAMPLES = r"""
- name: Stop every migration leaving hv1 (and so the evacuation running there)
  kvm.migration.migration_job:
    state: aborted
  delegate_to: hv1
"""

RETURN = r"""
abort_requested:
  description: Whether the abort request for an evacuation is on the host after the task.
  returned: always
  type: bool
aborted:
  description: The domains whose migration job was cancelled (or would be, in check mode).
  returned: always
  type: list
  elements: str
not_abortable:
  description: Domains in post-copy, which finish on the destination.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.kvm.migration.plugins.module_utils._domain import outgoing_migration
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._maintenance import ABORT_REQUEST_PATH, read_mark, write_mark
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._options import check_domain_name

# virDomainState PAUSED with reason POSTCOPY, or RUNNING with reason POSTCOPY: the switch has happened.
POSTCOPY_REASONS = {1: (10,), 3: (12, 13)}


def in_postcopy(domain):
    state, reason = domain.state()
    return reason in POSTCOPY_REASONS.get(state, ())


def run_module(module):
    names = module.params["name"]
    for index, name in enumerate(names):
        check_domain_name("name[%d]" % index, name)
    client = module.client()
    if names:
        domains = []
        for name in names:
            dom = client.lookup_domain(name)
            if dom is None:
                raise InvalidRequest("Domain %s does not exist on %s" % (name, client.uri))
            domains.append(dom)
    else:
        domains = client.list_domains()
    aborted, not_abortable = [], []
    for dom in domains:
        if outgoing_migration(dom) is None:
            continue
        if in_postcopy(dom):
            not_abortable.append(dom.name())
            continue
        if not module.check_mode:
            with libvirt_errors("abort the migration of %s on %s" % (dom.name(), client.uri)):
                dom.abortJob()
        aborted.append(dom.name())
    requested = read_mark(ABORT_REQUEST_PATH) is not None
    if not requested and not module.check_mode:
        write_mark(module.module, {"aborted": aborted, "by": "kvm.migration.migration_job"}, ABORT_REQUEST_PATH)
    module.exit_json(changed=bool(aborted) or not requested, aborted=aborted, not_abortable=not_abortable,
                     abort_requested=True)


def main():
    module = LibvirtModule(
        argument_spec={
            "name": {"type": "list", "elements": "str", "default": []},
            "state": {"type": "str", "default": "aborted", "choices": ["aborted"]},
        },
        supports_check_mode=True,
        needs_lxml=False,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
