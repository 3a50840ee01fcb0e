# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The connection option every module shares (plugins/module_utils/_module.py COMMON_ARGUMENT_SPEC).
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - libvirt connection URI of the host the module manages, as seen from where the module runs.
      - The default is the local system instance, which is what a task running on the hypervisor wants.
      - Remote URIs such as V(qemu+ssh://root@hv1/system) work too; the module then needs libvirt-python where it runs.
    type: str
    default: qemu:///system
requirements:
  - libvirt-python (C(python3-libvirt) on Debian/Ubuntu and RHEL/Fedora)
  - lxml (C(python3-lxml))
notes:
  - On the hypervisors the modules run under the system Python. If libvirt-python is missing from the
    interpreter Ansible chose, the module re-runs itself under C(/usr/bin/python3) or C(/usr/libexec/platform-python)
    when libvirt-python is importable there.
"""
