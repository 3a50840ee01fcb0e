# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # What to migrate and where: shared by migrate and preflight (module_utils/_module.py MIGRATION_ARGUMENT_SPEC).
    DOCUMENTATION = r"""
options:
  name:
    description:
      - Name of the domain.
    type: str
    required: true
  dest_uri:
    description:
      - libvirt URI of the destination, as the source host reaches it, for example V(qemu+ssh://hv2/system) or
        V(qemu+tcp://hv2/system).
      - With qemu+ssh, root on the source host needs key-based SSH access to the destination and a known host key.
    type: str
    required: true
  storage:
    description:
      - How the disks get to the destination.
      - V(copy_all) copies every local writable disk (libvirt C(VIR_MIGRATE_NON_SHARED_DISK)) into volumes that are
        pre-created on the destination at the same paths.
    type: str
    choices: [copy_all]
    default: copy_all
  migrate_uri:
    description:
      - Address of the destination for the migration data stream, for example V(tcp://10.0.0.2). Without it, the
        destination offers its own hostname, which the source must be able to resolve.
    type: str
  disks_uri:
    description:
      - Address of the destination's NBD server for the disk copy, for example V(tcp://10.0.0.2). Needs libvirt
        6.8 or later.
    type: str
  allow_unsafe:
    description:
      - Accept disks whose cache mode is not V(none) or V(directsync) (the preflight then warns instead of
        failing), and pass C(VIR_MIGRATE_UNSAFE) to libvirt.
    type: bool
    default: false
  memory_margin:
    description:
      - MiB of free memory the destination must have beyond the domain's memory.
    type: int
    default: 256
"""
