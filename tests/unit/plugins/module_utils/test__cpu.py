"""CPU baselines against libvirt's real CPU code (the cpu_map and x86 driver linked into libvirt-python,
reached through the test driver).  The RHEL 9 example is recorded XML from seeds/002 section 12.9."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _cpu
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, LibvirtClient

DATA = Path(__file__).parent / "data"


def recorded(name):
    return re.sub(r"<!--.*?-->", "", (DATA / name).read_text(), flags=re.S).strip()


@pytest.fixture
def client():
    with LibvirtClient("test:///default") as c:
        yield c


def test_rhel9_example_host_baseline_is_ivybridge_ibrs_with_the_documented_features(client):
    source = _cpu.normalize_cpu_xml(recorded("rhel9-source-host-cpu.xml"), default_arch="x86_64")
    destination = _cpu.normalize_cpu_xml(recorded("rhel9-destination-host-model.xml"), default_arch="x86_64")
    baseline = _cpu.describe_cpu(_cpu.host_baseline(client, [source, destination], migratable=False))
    expected = _cpu.describe_cpu(recorded("rhel9-expected-baseline.xml"))
    assert baseline["model"] == expected["model"] == "IvyBridge-IBRS"
    assert baseline["vendor"] == "Intel"
    assert baseline["features"] == expected["features"]
    assert len(baseline["features"]) == 19


def test_the_baseline_of_one_cpu_with_itself_keeps_its_model(client):
    source = _cpu.normalize_cpu_xml(recorded("rhel9-source-host-cpu.xml"), default_arch="x86_64")
    assert _cpu.describe_cpu(_cpu.host_baseline(client, [source, source], migratable=False))["model"] == \
        "Skylake-Client-IBRS"


def test_normalize_accepts_the_domcapabilities_mode_element_and_adds_arch():
    xml = _cpu.normalize_cpu_xml(recorded("rhel9-destination-host-model.xml"), default_arch="x86_64")
    assert xml.startswith("<cpu>") and "<arch>x86_64</arch>" in xml
    assert "supported" not in xml and "host-model" not in xml
    assert _cpu.describe_cpu(xml)["model"] == "IvyBridge-IBRS"


@pytest.mark.parametrize("text, error", [
    ("<cpu><model>x", "invalid XML"),
    ("<domain/>", "expected <cpu> or <mode name='host-model'>, got <domain>"),
    ("<cpu><vendor>Intel</vendor></cpu>", "CPU definition without a <model>"),
])
def test_normalize_rejects_what_is_not_a_cpu(text, error):
    with pytest.raises(InvalidRequest, match=re.escape(error)):
        _cpu.normalize_cpu_xml(text)


def test_same_cpu_ignores_order_and_formatting():
    a = "<cpu mode='custom'><model>EPYC</model><feature policy='require' name='a'/><feature name='b'/></cpu>"
    b = "<cpu>\n <model>EPYC</model>\n <feature name='b' policy='require'/>\n <feature name='a'/>\n</cpu>"
    c = "<cpu><model>EPYC</model><feature policy='disable' name='a'/><feature name='b'/></cpu>"
    assert _cpu.same_cpu(a, b)
    assert not _cpu.same_cpu(a, c)
    assert not _cpu.same_cpu(a, None) and _cpu.same_cpu(None, None)


def test_domain_cpu_xml():
    assert _cpu.domain_cpu_xml("<domain><name>x</name></domain>") is None
    xml = _cpu.domain_cpu_xml("<domain><cpu mode='host-model'/></domain>")
    assert _cpu.describe_cpu(xml)["mode"] == "host-model"


def test_a_baseline_takes_cpus_of_the_one_architecture_asked_for():
    from ansible_collections.kvm.migration.plugins.module_utils._cpu import check_one_arch
    from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest

    check_one_arch({"x86_64": ["qemu+ssh://hv1/system", "cpus[0]"]}, "x86_64")
    check_one_arch({}, "x86_64")
    with pytest.raises(InvalidRequest, match=r"these differ: aarch64: cpus\[1\]; x86_64: qemu\+ssh://hv1/system"):
        check_one_arch({"x86_64": ["qemu+ssh://hv1/system"], "aarch64": ["cpus[1]"]}, "x86_64")
    with pytest.raises(InvalidRequest, match="The CPUs are aarch64, but the baseline is asked for x86_64"):
        check_one_arch({"aarch64": ["cpus[0]"]}, "x86_64")
