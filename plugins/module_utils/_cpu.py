# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""CPU models: a host's host-model CPU, baselines of several CPUs, and whether a CPU runs on a host.

Two baselines answer two questions:
- the *hypervisor* baseline (virConnectBaselineHypervisorCPU) answers "what CPU can the hypervisor
  on this host run for every one of these hosts" - it knows what QEMU (or KVM) really provides;
- the *host* baseline (virConnectBaselineCPU) answers "what is the common CPU of these hosts",
  from the CPU definitions alone, whatever hypervisor runs them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, libvirt, libvirt_errors

# virCPUCompareResult
COMPARE_RESULTS = {-1: "error", 0: "incompatible", 1: "identical", 2: "superset"}


def normalize_cpu_xml(text, default_arch=None):
    """Accept a <cpu> element, or a domain capabilities <mode name='host-model'> element (as in the RHEL
    procedure, where <mode> is swapped for <cpu>), and return <cpu> XML that libvirt's CPU APIs take.
    `default_arch` fills a missing <arch> (the host-independent baseline needs one)."""
    try:
        node = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise InvalidRequest("Not a CPU definition (invalid XML: %s): %s" % (exc, text.strip()[:80])) from exc
    if node.tag == "mode":
        node.tag = "cpu"
        node.attrib.clear()
    if node.tag != "cpu":
        raise InvalidRequest("Not a CPU definition: expected <cpu> or <mode name='host-model'>, got <%s>" % node.tag)
    if node.find("model") is None and node.get("mode") not in ("host-passthrough", "maximum", "host-model"):
        raise InvalidRequest("CPU definition without a <model>: %s" % text.strip()[:80])
    if default_arch and node.find("arch") is None:
        arch = ET.Element("arch")
        arch.text = default_arch
        node.insert(0, arch)
    return ET.tostring(node, encoding="unicode")


def describe_cpu(xml):
    """{'model', 'vendor', 'features': [{'name', 'policy'}]} of a <cpu> element."""
    node = ET.fromstring(xml)
    return {
        "mode": node.get("mode", "custom"),
        "arch": node.findtext("arch"),
        "model": node.findtext("model"),
        "vendor": node.findtext("vendor"),
        "features": [{"name": f.get("name"), "policy": f.get("policy", "require")} for f in node.findall("feature")],
    }


def domain_capabilities(client, arch=None, virttype=None, machine=None):
    return client.domain_capabilities(arch, machine, virttype)


def default_virttype(client, arch=None):
    """'kvm' when the host offers KVM for `arch`, else 'qemu' (TCG)."""
    caps = client.capabilities()
    for guest in caps.findall("guest"):
        arch_node = guest.find("arch")
        if arch_node is None or (arch and arch_node.get("name") != arch):
            continue
        if any(d.get("type") == "kvm" for d in arch_node.findall("domain")):
            return "kvm"
    return "qemu"


def host_arch(client):
    return client.capabilities().findtext("host/cpu/arch")


def host_model_cpu(client, arch=None, virttype=None):
    """The host-model CPU of a host (from its domain capabilities) as <cpu> XML, with <arch>."""
    arch = arch or host_arch(client)
    virttype = virttype or default_virttype(client, arch)
    caps = domain_capabilities(client, arch, virttype)
    mode = caps.find("cpu/mode[@name='host-model']")
    if mode is None or mode.get("supported") != "yes" or mode.find("model") is None:
        raise InvalidRequest("Host %s offers no host-model CPU for %s/%s" % (client.uri, arch, virttype),
                             hint="check that QEMU for this architecture is installed on the host")
    cpu = ET.Element("cpu")
    arch_node = ET.SubElement(cpu, "arch")
    arch_node.text = arch
    for child in mode:
        cpu.append(child)
    return ET.tostring(cpu, encoding="unicode")


def hypervisor_baseline(client, cpu_xmls, arch=None, virttype=None, migratable=True):
    """What the hypervisor on `client` can run on all of the given CPUs (migratable features only)."""
    arch = arch or host_arch(client)
    virttype = virttype or default_virttype(client, arch)
    flags = libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE if migratable else 0
    with libvirt_errors("compute the hypervisor CPU baseline on %s (%s/%s)" % (client.uri, arch, virttype)):
        return client.baseline_hypervisor_cpu(arch, virttype, cpu_xmls, flags)


def host_baseline(client, cpu_xmls, migratable=True):
    """The common CPU of the given CPU definitions, independent of any hypervisor."""
    flags = libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE if migratable else 0
    with libvirt_errors("compute the CPU baseline on %s" % client.uri):
        return client.baseline_cpu(cpu_xmls, flags)


def compare_on_hypervisor(client, cpu_xml, arch=None, virttype=None):
    """'identical', 'superset' or 'incompatible': can the hypervisor on `client` run `cpu_xml`?"""
    arch = arch or host_arch(client)
    virttype = virttype or default_virttype(client, arch)
    with libvirt_errors("compare a CPU with the hypervisor of %s" % client.uri):
        result = client.compare_hypervisor_cpu(arch, virttype, cpu_xml)
    return COMPARE_RESULTS.get(result, "error")


def domain_cpu_xml(domain_xml):
    """The <cpu> of a domain definition, or None when it has none (the hypervisor's default model)."""
    node = ET.fromstring(domain_xml).find("cpu")
    return ET.tostring(node, encoding="unicode") if node is not None else None


def same_cpu(a_xml, b_xml):
    """Whether two <cpu> definitions ask for the same CPU (mode, model, vendor, features and policies)."""
    if a_xml is None or b_xml is None:
        return a_xml is b_xml
    return _cpu_key(describe_cpu(a_xml)) == _cpu_key(describe_cpu(b_xml))


def _cpu_key(cpu):
    return cpu["mode"], cpu["model"], cpu["vendor"], sorted((f["name"], f["policy"]) for f in cpu["features"])


def apply_to_domain(domain, cpu_xml, check_mode):
    """Write `cpu_xml` into the domain's persistent definition.  Returns (changed, before, after, restart_required)
    where before/after are the <cpu> elements as text (before is None when the domain had none)."""
    from lxml import etree  # the domain definition is rewritten with lxml to keep its namespaces intact

    with libvirt_errors("read the persistent definition of %s" % domain.name()):
        xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    root = etree.fromstring(xml.encode())
    old = root.find("cpu")
    before = etree.tostring(old, encoding="unicode").strip() if old is not None else None
    if same_cpu(before, cpu_xml):
        return False, before, before, False
    new = etree.fromstring(cpu_xml.encode())
    new.tail = old.tail if old is not None else None
    if old is not None:
        root.replace(old, new)
    else:
        anchor = root.find("features")
        if anchor is None:
            anchor = root.find("os")
        anchor.addnext(new)
    after = etree.tostring(new, encoding="unicode").strip()
    if not check_mode:
        with libvirt_errors("define %s with the baseline CPU" % domain.name()):
            domain.connect().defineXML(etree.tostring(root, encoding="unicode"))
    return True, before, after, bool(domain.isActive())


def check_one_arch(archs, arch):
    """`archs` maps each architecture found to where it was found (host URIs, cpus[i]): a baseline needs exactly
    one, and it must be the one asked for."""
    if len(archs) > 1:
        raise InvalidRequest("A baseline needs CPUs of one architecture; these differ: %s"
                             % "; ".join("%s: %s" % (a, ", ".join(w)) for a, w in sorted(archs.items())),
                             hint="compute one baseline per architecture; a guest cannot migrate between them")
    if archs and arch not in archs:
        raise InvalidRequest("The CPUs are %s, but the baseline is asked for %s" % (next(iter(archs)), arch),
                             hint="set arch to the CPUs' architecture, or leave it out")


def host_report(hosts, baseline_xml, arch, virttype, with_domain=False, domain_cpu=None):
    """For each host ({uri, client, cpu_xml}): its CPU model, whether the baseline runs there, and with a domain
    whether the domain's CPU does (a domain without a <cpu> gets the hypervisor's default model)."""
    report = []
    for host in hosts:
        entry = {
            "uri": host["uri"],
            "cpu": describe_cpu(host["cpu_xml"])["model"],
            "baseline_runs": compare_on_hypervisor(host["client"], baseline_xml, arch, virttype),
        }
        if with_domain:
            entry["domain_runs"] = (compare_on_hypervisor(host["client"], domain_cpu, arch, virttype)
                                    if domain_cpu else "default model")
        report.append(entry)
    return report
