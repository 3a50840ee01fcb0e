#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cpu_baseline
short_description: Compute a CPU model that every given host can run, check domains against it, apply it
version_added: 0.1.0
description:
  - Reads the host-model CPU of each host in O(hosts) from its domain capabilities, adds the CPU definitions given
    in O(cpus), and computes their baseline.
  - O(baseline=hypervisor) (the default) answers "what CPU can the hypervisor run on every one of these hosts". It
    uses C(virConnectBaselineHypervisorCPU) on the host at O(uri), which knows what its QEMU (or KVM) really
    provides, and keeps only migratable features.
  - O(baseline=host) answers "what is the common CPU of these hosts", from the CPU definitions alone
    (C(virConnectBaselineCPU), as C(virsh cpu-baseline)), whatever hypervisor runs them. It reproduces the RHEL 9
    procedure "Verifying host CPU compatibility for virtual machine migration".
  - For each host in O(hosts) it reports whether the baseline runs there and, with O(domain), whether the domain's
    current CPU runs there (C(virConnectCompareHypervisorCPU)).
  - With O(apply=true) it writes the baseline into the persistent definition of O(domain) on O(uri). A running
    domain keeps its current CPU until it is restarted; the module then returns RV(restart_required=true).
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration._attributes
  - kvm.migration._attributes.actiongroup_migration
attributes:
  check_mode:
    support: full
    details:
      - With O(apply=true), check mode reports the change and its diff without defining the domain.
  diff_mode:
    support: full
    details:
      - The diff shows the domain's C(<cpu>) element before and after O(apply).
  idempotent:
    support: full
    details:
      - Without O(apply) nothing changes. With O(apply), a second run finds the baseline in place and reports no
        change.
options:
  hosts:
    description:
      - libvirt URIs of the hosts whose host-model CPUs enter the baseline, as seen from where the module runs.
    type: list
    elements: str
  cpus:
    description:
      - CPU definitions that enter the baseline, as XML. Each is a C(<cpu>) element, or the C(<mode
        name='host-model'>) element of C(virsh domcapabilities) as the RHEL procedure collects it.
      - A definition without C(<arch>) is taken as O(arch), or the architecture of the host at O(uri).
      - At least one of O(hosts) and O(cpus) is required.
    type: list
    elements: str
  baseline:
    description:
      - V(hypervisor) - what the hypervisor on O(uri) can run on every input CPU.
      - V(host) - the common CPU of the input definitions, independent of any hypervisor.
    type: str
    choices: [hypervisor, host]
    default: hypervisor
  arch:
    description:
      - CPU architecture. Defaults to the architecture of the host at O(uri).
    type: str
  virttype:
    description:
      - Virtualization type for the hypervisor baseline and the comparisons, V(kvm) or V(qemu) (TCG).
      - Defaults to V(kvm) where the host offers KVM, else V(qemu).
    type: str
  migratable:
    description:
      - Keep only features that can be migrated (C(VIR_CONNECT_BASELINE_CPU_MIGRATABLE)); for example C(invtsc) is
        dropped.
      - Defaults to V(true) for O(baseline=hypervisor) and to V(false) for O(baseline=host), which is what
        C(virsh cpu-baseline) and the RHEL procedure do. Apply a migratable baseline to domains that must migrate.
    type: bool
  domain:
    description:
      - A domain on O(uri) to check against every host in O(hosts), and to change with O(apply).
    type: str
  apply:
    description:
      - Write the baseline into the persistent definition of O(domain).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: A CPU model that runs on all hypervisors of the cluster
  kvm.migration.cpu_baseline:
    hosts:
      - qemu+ssh://hv1/system
      - qemu+ssh://hv2/system
      - qemu+ssh://hv3/system
    domain: web01
  register: cpu

- name: Apply it to web01 (takes effect at its next start)
  kvm.migration.cpu_baseline:
    hosts: "{{ groups['hypervisors'] | map('regex_replace', '^(.*)$', 'qemu+ssh://\\1/system') | list }}"
    domain: web01
    apply: true
  diff: true

- name: The RHEL procedure with recorded host CPUs, independent of any hypervisor
  kvm.migration.cpu_baseline:
    baseline: host
    cpus:
      - "{{ lookup('file', 'source-host-cpu.xml') }}"
      - "{{ lookup('file', 'destination-host-cpu.xml') }}"
"""

RETURN = r"""
baseline_xml:
  description: The baseline CPU as libvirt returns it, ready for a domain's C(<cpu>).
  returned: always
  type: str
  sample: "<cpu mode='custom' match='exact'><model fallback='forbid'>IvyBridge-IBRS</model>...</cpu>"
baseline:
  description: The baseline's model, vendor and features.
  returned: always
  type: dict
  sample: {mode: custom, model: IvyBridge-IBRS, vendor: Intel, features: [{name: ss, policy: require}]}
kind:
  description: Which baseline was computed (O(baseline)), and on which host.
  returned: always
  type: dict
  sample: {baseline: hypervisor, uri: "qemu:///system", arch: x86_64, virttype: kvm, migratable: true}
hosts:
  description:
    - One entry per host in O(hosts) - its C(uri), its host-model C(cpu) (model name), C(baseline_runs) (the
      baseline compared with its hypervisor - V(identical), V(superset) or V(incompatible)) and, with O(domain),
      C(domain_runs) (the domain's current CPU compared likewise).
  returned: always
  type: list
  elements: dict
  sample: [{uri: "qemu+ssh://hv2/system", cpu: EPYC, baseline_runs: superset, domain_runs: identical}]
restart_required:
  description: The domain runs and its new CPU takes effect only after it is shut down and started again.
  returned: always
  type: bool
  sample: false
"""

from ansible_collections.kvm.migration.plugins.module_utils import _cpu
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._module import LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._options import check_libvirt_uri


def run_module(module):
    p = module.params
    local = module.client()
    arch = p["arch"] or _cpu.host_arch(local)
    virttype = p["virttype"] or _cpu.default_virttype(local, arch)
    domain = None
    if p["domain"] is not None and not p["domain"].strip():
        raise InvalidRequest("domain is empty; give the name of a libvirt domain, or leave the option out")
    if p["apply"] and not p["domain"]:
        raise InvalidRequest("apply=true writes the baseline into a domain's definition; name the domain (domain)")
    if p["domain"]:
        domain = local.lookup_domain(p["domain"])
        if domain is None:
            raise InvalidRequest("Domain %s does not exist on %s" % (p["domain"], local.uri))

    hosts = []
    inputs = []
    archs = {}
    for index, uri in enumerate(p["hosts"] or []):
        check_libvirt_uri("hosts[%d]" % index, uri)
    for uri in p["hosts"] or []:
        client = module.client(uri, role="host")
        archs.setdefault(_cpu.host_arch(client), []).append(uri)
        hosts.append({"uri": uri, "client": client})
    for index, text in enumerate(p["cpus"] or []):
        cpu_xml = _cpu.normalize_cpu_xml(text, default_arch=arch)
        archs.setdefault(_cpu.describe_cpu(cpu_xml)["arch"], []).append("cpus[%d]" % index)
        inputs.append(cpu_xml)
    if not hosts and not inputs:
        raise InvalidRequest("There is no CPU to compute a baseline of: hosts and cpus are both empty",
                             hint="list the hypervisors' URIs in hosts, or CPU definitions in cpus")
    _cpu.check_one_arch(archs, arch)
    for host in hosts:
        host["cpu_xml"] = _cpu.host_model_cpu(host["client"], arch, virttype)
    inputs = [h["cpu_xml"] for h in hosts] + inputs

    if p["baseline"] == "hypervisor":
        migratable = True if p["migratable"] is None else p["migratable"]
        baseline_xml = _cpu.hypervisor_baseline(local, inputs, arch, virttype, migratable)
    else:
        migratable = False if p["migratable"] is None else p["migratable"]
        baseline_xml = _cpu.host_baseline(local, inputs, migratable)

    domain_cpu = None
    if domain is not None:
        with libvirt_errors("read the definition of %s" % p["domain"]):
            domain_cpu = _cpu.domain_cpu_xml(domain.XMLDesc(0))
    report = _cpu.host_report(hosts, baseline_xml, arch, virttype, domain is not None, domain_cpu)

    result = {
        "changed": False,
        "baseline_xml": baseline_xml,
        "baseline": _cpu.describe_cpu(baseline_xml),
        "kind": {"baseline": p["baseline"], "uri": local.uri, "arch": arch, "virttype": virttype,
                 "migratable": migratable},
        "hosts": report,
        "restart_required": False,
    }
    if p["apply"]:
        changed, before, after, restart = _cpu.apply_to_domain(domain, baseline_xml, module.check_mode)
        result.update(changed=changed, restart_required=restart)
        if changed and module.diff_mode:
            result["diff"] = {"before": (before or "") + "\n", "after": after + "\n",
                              "before_header": "%s <cpu>" % p["domain"], "after_header": "%s <cpu>" % p["domain"]}
    module.exit_json(**result)


def main():
    module = LibvirtModule(
        argument_spec={
            "hosts": {"type": "list", "elements": "str"},
            "cpus": {"type": "list", "elements": "str"},
            "baseline": {"type": "str", "choices": ["hypervisor", "host"], "default": "hypervisor"},
            "arch": {"type": "str"},
            "virttype": {"type": "str"},
            "migratable": {"type": "bool"},
            "domain": {"type": "str"},
            "apply": {"type": "bool", "default": False},
        },
        required_one_of=[("hosts", "cpus")],
        required_if=[("apply", True, ["domain"])],
        supports_check_mode=True,
    )
    module.run(run_module)


if __name__ == "__main__":
    main()
