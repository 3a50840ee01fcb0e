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
  live:
    description:
      - V(true) - a live migration of a running domain. A shut-off domain is refused.
      - V(false) - an offline migration of a shut-off domain (a running one is refused; the module never shuts a guest
        down). Each local image is copied file by file through libvirt storage streams (holes stay holes), with its
        backing chain (a backing file the destination lacks is copied, one that is present is checked), and each copy
        is verified by sha256. Then the definition moves (C(VIR_MIGRATE_OFFLINE)) and the domain stays shut off on the
        destination. With O(storage=shared), only the definition moves.
      - The checks that only matter while the guest runs (memory, cache mode, migration ports) are skipped offline.
    type: bool
    default: true
  storage:
    description:
      - How the disks get to the destination. Network disks (NBD, Ceph RBD, iSCSI, ...) always stay where they are, and
        read-only or shareable images (ISOs) must already be on the destination.
      - V(shared) - the disks stay where they are, on storage both hosts see at the same path (NFS). The preflight
        proves it by writing a marker file in each disk's directory on the destination and finding it on the source;
        only then does the migration pass C(VIR_MIGRATE_UNSAFE), which libvirt needs for shared filesystems it does not
        recognise.
      - V(copy_all) - every local writable disk is copied (C(VIR_MIGRATE_NON_SHARED_DISK)) into a volume pre-created on
        the destination at the same path, with the same format and virtual size (a thin qcow2 stays thin).
      - V(copy_incremental) - only the top image of each disk is copied (C(VIR_MIGRATE_NON_SHARED_INC)), onto the same
        backing chain on the destination. A backing file (template) the destination lacks is copied first and its size
        and sha256 are verified; one that is present is checked (format, virtual size, first and last MiB) and not
        copied again.
      - V(auto) - V(shared) for disks whose directory is shared, V(copy_all) for the others.
    type: str
    choices: [auto, shared, copy_all, copy_incremental]
    default: auto
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
