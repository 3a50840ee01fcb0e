"""Preflight pieces that do not need two real hosts: the report, name resolution and port probes on
loopback.  The checks themselves run against real hosts in tests/integration/test_preflight.py."""

from __future__ import annotations

import os
import socket

from ansible_collections.kvm.migration.plugins.module_utils._preflight import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    PreflightFailed,
    Report,
    probe_port,
    resolve,
)


def test_report_verdict_blockers_and_order():
    r = Report()
    r.add("network", FAIL, "port 49152 filtered", "open it")
    r.add("connection", PASS, "connected")
    r.add("cache", WARN, "unsafe allowed")
    r.add("cpu", FAIL, "incompatible", "use cpu_baseline")
    r.skip_rest("not needed")
    d = r.as_dict()
    assert d["verdict"] == "fail"
    assert d["blockers"] == ["network", "cpu"]
    assert d["warnings"] == ["cache"]
    assert [c["name"] for c in d["checks"]][:5] == ["connection", "host_uuid", "domain", "name", "cpu"]
    assert {c["status"] for c in d["checks"] if c["name"] in ("memory", "storage")} == {SKIP}
    err = PreflightFailed("vm1", "qemu+ssh://hv2/system", r)
    assert err.msg == ("Preflight found 2 blockers for migrating vm1 to qemu+ssh://hv2/system: "
                       "network: port 49152 filtered; cpu: incompatible")
    assert err.hint == "open it / use cpu_baseline"
    assert err.details["preflight"]["verdict"] == "fail"


def test_a_clean_report_passes():
    r = Report()
    r.add("connection", PASS, "ok")
    assert r.verdict == PASS and r.blockers == []


def test_resolve():
    assert resolve("localhost")[0] in ("127.0.0.1", "::1")
    address, error = resolve("no-such-host.invalid")
    assert address is None and error


def test_probe_port_tells_closed_from_open():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert probe_port("127.0.0.1", port) == (True, "open")
    finally:
        server.close()
    reachable, why = probe_port("127.0.0.1", port)
    assert reachable and why.startswith("closed")


def _interfaces_report(nics, offline=False):
    """The interfaces check against libvirt's test driver (it has the network 'default' and the interface 'eth1',
    both active); the other checks need two real hosts."""
    from types import SimpleNamespace

    from ansible_collections.kvm.migration.plugins.module_utils._libvirt import LibvirtClient
    from ansible_collections.kvm.migration.plugins.module_utils._preflight import Preflight

    dest = LibvirtClient("test:///default", role="destination")
    fake = SimpleNamespace(located=SimpleNamespace(spec=SimpleNamespace(interfaces=nics)), dest=dest,
                           offline=offline, report=Report())
    try:
        Preflight._interfaces(fake)
    finally:
        dest.close()
    return fake.report.as_dict()["checks"][0]


def test_interfaces_check_finds_a_missing_bridge_and_network():
    found = _interfaces_report([
        {"type": "network", "source": "default", "mac": "52:54:00:00:00:01"},
        {"type": "bridge", "source": "br-missing", "mac": "52:54:00:00:00:02"},
        {"type": "network", "source": "isolated", "mac": "52:54:00:00:00:03"},
    ])
    assert found["status"] == FAIL
    assert "host interface br-missing (NIC 52:54:00:00:00:02) is missing" in found["message"]
    assert "network isolated (NIC 52:54:00:00:00:03) is missing" in found["message"]
    assert "default" not in found["message"]
    assert "virsh net-start" in found["hint"]


def test_interfaces_check_passes_when_everything_is_up_and_only_warns_offline():
    assert _interfaces_report([{"type": "bridge", "source": "eth1", "mac": ""},
                               {"type": "network", "source": "default", "mac": ""}])["status"] == PASS
    assert _interfaces_report([{"type": "bridge", "source": "br0", "mac": ""}], offline=True)["status"] == WARN


def test_domain_spec_reads_what_each_nic_plugs_into():
    from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec

    spec = DomainSpec.from_xml(
        "<domain type='qemu'><name>v</name><uuid>00000000-0000-0000-0000-000000000009</uuid><memory>1024</memory>"
        "<os><type arch='x86_64'>hvm</type></os><devices>"
        "<interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='br0'/></interface>"
        "<interface type='network'><source network='default'/></interface>"
        "<interface type='direct'><source dev='eth0' mode='bridge'/></interface>"
        "<interface type='user'/></devices></domain>")
    assert spec.interfaces == [{"type": "bridge", "source": "br0", "mac": "52:54:00:aa:bb:cc"},
                               {"type": "network", "source": "default", "mac": ""},
                               {"type": "direct", "source": "eth0", "mac": ""}]


class _Stager:
    """A host's files as the firmware check sees them (a real pair needs two hosts; the lab tests the moves):
    `present` paths exist, `journals` directories hold this move's journal."""

    def __init__(self, present, journals=()):
        self.present = set(present)
        self.journals = set(journals)

    def existing(self, path):
        return path if path in self.present else None

    def kind(self, path):
        return "dir" if path in self.present else None

    def has_journal(self, directory, _uuid):
        return directory in self.journals


def _firmware_report(present, offline=False, tpm_models=("emulator",), on_source=(), journals=(), **spec):
    import xml.etree.ElementTree as ET
    from types import SimpleNamespace

    from ansible_collections.kvm.migration.plugins.module_utils._guest_checks import GuestFitChecks

    caps = ET.fromstring("<domainCapabilities><devices><tpm supported='yes'><enum name='backendModel'>%s</enum>"
                         "</tpm></devices></domainCapabilities>" % "".join("<value>%s</value>" % m for m in tpm_models))
    fields = dict(loader="", nvram="", nvram_template="", tpm_emulator=False, tpm_state="", uuid="u1",
                  arch="x86_64", machine="q35", domain_type="kvm")
    fields.update(spec)

    class Checks(GuestFitChecks):
        located = SimpleNamespace(spec=SimpleNamespace(**fields))
        report = Report()
        stager = _Stager(present, journals)
        source_stager = _Stager(on_source)
        dest = SimpleNamespace(domain_capabilities=lambda *_a: caps)

    Checks.offline = offline
    Checks()._firmware()
    return Checks.report.as_dict()["checks"][0]


def test_firmware_check_live_and_offline():
    code, vars_, template = "/usr/share/OVMF/CODE.fd", "/var/lib/libvirt/qemu/nvram/v_VARS.fd", "/usr/share/OVMF/VARS.fd"
    uefi = dict(loader=code, nvram=vars_, nvram_template=template)
    assert _firmware_report([])["status"] == PASS
    # Live: the firmware and the template are there; libvirt makes the store, QEMU fills it.
    ok = _firmware_report([code, template], **uefi)
    assert ok["status"] == PASS and "QEMU writes the guest's variables" in ok["message"]
    missing = _firmware_report([], **uefi)
    assert missing["status"] == FAIL and f"the firmware {code} is missing" in missing["message"]
    assert "its template %s is missing too" % template in missing["message"]
    # Offline: the store travels; a store already on the destination is not overwritten, unless this move's
    # interrupted run left it.
    assert _firmware_report([], offline=True, **uefi)["status"] == WARN
    taken = _firmware_report([code, vars_], offline=True, **uefi)
    assert taken["status"] == FAIL and "refusing to overwrite" in taken["message"]
    leftover = _firmware_report([code, vars_], offline=True, journals=[os.path.dirname(vars_)], **uefi)
    assert leftover["status"] == PASS and "is copied with the disks" in leftover["message"]
    # An emulated TPM needs swtpm on the destination for a live move.
    assert _firmware_report([], tpm_emulator=True, tpm_models=())["status"] == FAIL
    assert _firmware_report([], tpm_emulator=True)["status"] == PASS


def test_offline_tpm_state_travels_unless_the_destination_holds_another():
    state = "/var/lib/libvirt/swtpm/u1"
    tpm = dict(tpm_emulator=True, tpm_state=state)
    copied = _firmware_report([], offline=True, on_source=[state], **tpm)
    assert copied["status"] == PASS and "TPM's state %s is copied" % state in copied["message"]
    never_ran = _firmware_report([], offline=True, **tpm)
    assert never_ran["status"] == PASS and "no state on the source yet" in never_ran["message"]
    taken = _firmware_report([state], offline=True, on_source=[state], **tpm)
    assert taken["status"] == FAIL and "already holds TPM state at %s" % state in taken["message"]
    assert "source_cleanup" in taken["hint"]
    leftover = _firmware_report([state], offline=True, on_source=[state], journals=[os.path.dirname(state)], **tpm)
    assert leftover["status"] == PASS
    elsewhere = _firmware_report([], offline=True, tpm_emulator=True, tpm_state="")
    assert elsewhere["status"] == WARN and "new TPM" in elsewhere["message"]
    # libvirt refuses to define a guest with an emulated TPM where swtpm is missing: offline that is a blocker
    # too, before any disk is copied.
    no_swtpm = _firmware_report([], offline=True, on_source=[state], tpm_models=(), **tpm)
    assert no_swtpm["status"] == FAIL and "swtpm is not installed" in no_swtpm["message"]
    assert "hypervisor_prep_swtpm" in no_swtpm["hint"]


def test_the_tpm_state_path_is_the_domains_own_tree():
    from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec

    def spec(backend):
        return DomainSpec.from_xml("<domain type='qemu'><name>v</name><uuid>5ab0c8a2-0000-4000-8000-000000000001</uuid>"
                                   "<memory>1024</memory><os><type>hvm</type></os><devices><tpm model='tpm-crb'>%s"
                                   "</tpm></devices></domain>" % backend)
    default = spec("<backend type='emulator' version='2.0'/>")
    assert default.tpm_emulator and default.tpm_state == "/var/lib/libvirt/swtpm/5ab0c8a2-0000-4000-8000-000000000001"
    assert spec("<backend type='emulator'><source type='dir' path='/srv/tpm/v/'/></backend>").tpm_state == "/srv/tpm/v"
    # Never a tree that is not the domain's own: a top-level directory or the storage root itself.
    for path in ("/srv", "/", "relative/dir", "/var/lib/libvirt/swtpm"):
        assert spec("<backend type='emulator'><source type='dir' path='%s'/></backend>" % path).tpm_state == ""
    assert spec("<backend type='passthrough'><device path='/dev/tpm0'/></backend>").tpm_state == ""
    # A definition without a UUID would name the storage root itself (with a trailing slash).
    no_uuid = DomainSpec.from_xml("<domain type='qemu'><name>v</name><memory>1024</memory><os><type>hvm</type></os>"
                                  "<devices><tpm model='tpm-crb'><backend type='emulator'/></tpm></devices></domain>")
    assert no_uuid.tpm_emulator and no_uuid.tpm_state == ""


def test_a_running_domains_nic_on_a_network_is_read_as_the_network():
    from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec

    spec = DomainSpec.from_xml(
        "<domain type='qemu'><name>v</name><memory>1024</memory><os><type>hvm</type></os><devices>"
        "<interface type='bridge'><source network='kvmtest' portid='1' bridge='br-kvmtest'/></interface>"
        "</devices></domain>")
    assert spec.interfaces == [{"type": "network", "source": "kvmtest", "mac": ""}]
