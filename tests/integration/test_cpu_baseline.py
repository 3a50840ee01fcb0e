"""kvm.migration.cpu_baseline on real hosts: host-model CPUs read from both lab hypervisors, the RHEL 9
example (recorded XML) against the hosts' real libvirt CPU code, and applying a baseline to a domain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kvmlab.guestops import LabGuest

# Every test here runs against two ready lab hypervisors.
pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
HOSTS = [f"qemu+ssh://{SRC}/system", f"qemu+ssh://{DST}/system"]
DATA = Path(__file__).resolve().parents[1] / "unit" / "plugins" / "module_utils" / "data"


def recorded(name):
    return re.sub(r"<!--.*?-->", "", (DATA / name).read_text(), flags=re.S).strip()


def baseline(ansible, check=False, **args):
    run = ansible.module(SRC, "kvm.migration.cpu_baseline", args, check=check, diff=True)
    return run.task("probe")


def test_hypervisor_baseline_of_the_lab_hosts(ansible):
    result = baseline(ansible, hosts=HOSTS)
    assert not result.get("failed"), result
    assert result["changed"] is False
    assert result["kind"] == {"baseline": "hypervisor", "uri": "qemu:///system", "arch": "x86_64",
                              "virttype": "qemu", "migratable": True}
    assert result["baseline"]["model"]
    assert [h["uri"] for h in result["hosts"]] == HOSTS
    # Identical hosts: both report the same host-model CPU, the baseline keeps that model, and both give the
    # same verdict on it.  (Under TCG, libvirt 11 reports even the host-model CPU "incompatible" with the
    # hypervisor, because QEMU cannot emulate every feature of this machine's EPYC; see docs/design.md.)
    assert len({h["cpu"] for h in result["hosts"]}) == 1
    assert result["baseline"]["model"] == result["hosts"][0]["cpu"]
    assert len({h["baseline_runs"] for h in result["hosts"]}) == 1


def test_rhel9_example_host_baseline_on_real_libvirt(ansible):
    result = baseline(ansible, baseline="host", cpus=[recorded("rhel9-source-host-cpu.xml"),
                                                      recorded("rhel9-destination-host-model.xml")])
    assert not result.get("failed"), result
    expected = [f["name"] for f in _features(recorded("rhel9-expected-baseline.xml"))]
    got = [f["name"] for f in result["baseline"]["features"]]
    assert result["baseline"]["model"] == "IvyBridge-IBRS"
    # The same 19 features as the RHEL text; this libvirt lists them in another order.
    assert sorted(got) == sorted(expected) and len(got) == 19, got
    assert result["kind"]["migratable"] is False


def test_rhel9_example_hypervisor_baseline_is_what_tcg_can_run(ansible):
    result = baseline(ansible, cpus=[recorded("rhel9-source-host-cpu.xml"), recorded("rhel9-destination-host-model.xml")])
    assert not result.get("failed"), result
    # QEMU's TCG cannot provide every IvyBridge-IBRS feature; the hypervisor baseline says what it can.
    assert result["baseline"]["model"].startswith("IvyBridge"), result["baseline"]
    disabled = {f["name"] for f in result["baseline"]["features"] if f["policy"] == "disable"}
    assert disabled, result["baseline"]


@pytest.mark.parametrize("cpu, verdict", [
    (recorded("rhel9-source-host-cpu.xml").replace("<cpu>", "<cpu mode='custom' match='exact'>", 1), "incompatible"),
    ("<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>", "superset"),
])
def test_a_domain_cpu_is_compared_with_every_host(lab, ansible, cpu, verdict):
    vm = LabGuest(lab, name="cmpvm")
    vm.remove_everywhere()
    vm.define(SRC, start=False)
    try:
        xml = lab.exec(SRC, ["virsh", "dumpxml", "--inactive", vm.name]).stdout.replace("</os>", "</os>\n  " + cpu, 1)
        lab.exec(SRC, ["sh", "-c", f"cat > /root/{vm.name}.xml && virsh -q define /root/{vm.name}.xml"], input=xml)
        result = baseline(ansible, hosts=HOSTS, domain=vm.name)
        assert [h["domain_runs"] for h in result["hosts"]] == [verdict, verdict], result["hosts"]
    finally:
        vm.remove_everywhere()


def test_apply_the_baseline_to_a_domain(lab, ansible):
    vm = LabGuest(lab, name="cpuvm")
    vm.remove_everywhere()
    vm.define(SRC, start=False)
    try:
        before = lab.exec(SRC, ["virsh", "dumpxml", "--inactive", vm.name]).stdout
        planned = baseline(ansible, check=True, hosts=HOSTS, domain=vm.name, apply=True)
        assert planned["changed"] is True and planned["restart_required"] is False
        assert planned["diff"]["after"].startswith('<cpu mode="custom" match="exact">')
        assert "<model fallback=\"forbid\">qemu64</model>" in planned["diff"]["before"]  # libvirt's default
        assert lab.exec(SRC, ["virsh", "dumpxml", "--inactive", vm.name]).stdout == before

        applied = baseline(ansible, hosts=HOSTS, domain=vm.name, apply=True)
        assert applied["changed"] is True
        after = lab.exec(SRC, ["virsh", "dumpxml", "--inactive", vm.name]).stdout
        assert f"<model fallback='forbid'>{applied['baseline']['model']}</model>" in after \
            or f">{applied['baseline']['model']}</model>" in after

        again = baseline(ansible, hosts=HOSTS, domain=vm.name, apply=True)
        assert again["changed"] is False

        # A running domain keeps its CPU until restarted.
        lab.exec(SRC, ["virsh", "-q", "start", vm.name])
        vm.wait_ticks(SRC, 1)
        lab.exec(SRC, ["sh", "-c", f"virsh dumpxml --inactive {vm.name} | sed '/<cpu/,/<\\/cpu>/d' > /root/nocpu.xml"
                       f" && virsh -q define /root/nocpu.xml"])
        running = baseline(ansible, hosts=HOSTS, domain=vm.name, apply=True)
        assert running["changed"] is True and running["restart_required"] is True
    finally:
        vm.remove_everywhere()


@pytest.mark.parametrize("args, message", [
    ({}, "one of the following is required: hosts, cpus"),
    ({"cpus": ["<cpu><model>x</model></cpu>"], "apply": True}, "apply is True but all of the following are missing: domain"),
    ({"cpus": ["<domain/>"]}, "expected <cpu> or <mode name='host-model'>, got <domain>"),
    ({"hosts": HOSTS, "domain": "no-such-vm"}, "Domain no-such-vm does not exist on qemu:///system"),
])
def test_bad_input_is_refused(ansible, args, message):
    result = baseline(ansible, **args)
    assert result["failed"] is True
    assert message in result["msg"], result["msg"]


def _features(xml):
    return [{"name": m.group(2), "policy": m.group(1)} for m in
            re.finditer(r"<feature policy=['\"](\w+)['\"] name=['\"]([\w.-]+)['\"]", xml)]
