"""The hypervisor_prep role's per-distribution choices, run through Ansible with the distribution given as
facts.  This machine runs Debian only; these tests are how the RHEL/Fedora paths (modular daemons) are
covered.  What the choices do on a real host is tested on Debian hosts in tests/integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOK = Path(__file__).with_name("choices.yml")

DEBIAN_12 = {"os_family": "Debian", "distribution": "Debian", "distribution_major_version": "12"}
UBUNTU_24 = {"os_family": "Debian", "distribution": "Ubuntu", "distribution_major_version": "24"}
RHEL_9 = {"os_family": "RedHat", "distribution": "RedHat", "distribution_major_version": "9"}
FEDORA_41 = {"os_family": "RedHat", "distribution": "Fedora", "distribution_major_version": "41"}
RHEL_8 = {"os_family": "RedHat", "distribution": "RedHat", "distribution_major_version": "8"}
MODULAR = ["virtqemud.socket", "virtqemud-ro.socket", "virtqemud-admin.socket", "virtstoraged.socket",
           "virtstoraged-ro.socket", "virtstoraged-admin.socket", "virtproxyd.socket", "virtproxyd-ro.socket",
           "virtproxyd-admin.socket"]
MONOLITHIC = ["libvirtd.socket", "libvirtd-ro.socket", "libvirtd-admin.socket"]


def choices(facts, **extra):
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    env.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="0")
    facts = {"architecture": "x86_64", "hostname": "h1", **facts}
    extra_vars = {"fake_facts": facts, "hypervisor_prep_peers": ["localhost"], **extra}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(PLAYBOOK),
                           "-e", json.dumps(extra_vars)], env=env, capture_output=True, text=True, check=False)
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tasks = data["plays"][0]["tasks"]
    last = tasks[-1]["hosts"]["localhost"]
    return proc.returncode, last


@pytest.mark.parametrize("facts, units, conf, driver_conf, daemons", [
    (DEBIAN_12, MONOLITHIC, "/etc/libvirt/libvirtd.conf", "/etc/libvirt/libvirtd.conf", ["libvirtd.service"]),
    (UBUNTU_24, MONOLITHIC, "/etc/libvirt/libvirtd.conf", "/etc/libvirt/libvirtd.conf", ["libvirtd.service"]),
    (RHEL_9, MODULAR, "/etc/libvirt/virtproxyd.conf", "/etc/libvirt/virtqemud.conf",
     ["virtqemud.service", "virtproxyd.service", "virtstoraged.service"]),
    (FEDORA_41, MODULAR, "/etc/libvirt/virtproxyd.conf", "/etc/libvirt/virtqemud.conf",
     ["virtqemud.service", "virtproxyd.service", "virtstoraged.service"]),
    (RHEL_8, MONOLITHIC, "/etc/libvirt/libvirtd.conf", "/etc/libvirt/libvirtd.conf", ["libvirtd.service"]),
])
def test_daemons_per_distribution(facts, units, conf, driver_conf, daemons):
    rc, got = choices(facts)
    assert rc == 0, got
    msg = got["msg"]
    assert msg["units"] == units
    assert (msg["proxy_conf"], msg["driver_conf"], msg["daemons"]) == (conf, driver_conf, daemons)


@pytest.mark.parametrize("facts, listener", [
    (DEBIAN_12, {"tcp": "libvirtd-tcp.socket", "tls": "libvirtd-tls.socket"}),
    (RHEL_9, {"tcp": "virtproxyd-tcp.socket", "tls": "virtproxyd-tls.socket"}),
])
@pytest.mark.parametrize("transport, port", [("ssh", "22/tcp"), ("tcp", "16509/tcp"), ("tls", "16514/tcp")])
def test_transport_picks_its_listener_and_only_its_port(facts, listener, transport, port):
    rc, got = choices(facts, hypervisor_prep_transport=transport, hypervisor_prep_sasl_password="12345678")
    assert rc == 0, got
    msg = got["msg"]
    assert msg["ports"] == [port, "49152-49215/tcp"]
    extra_units = [u for u in msg["units"] if u not in MONOLITHIC + MODULAR]
    assert extra_units == ([listener[transport]] if transport in listener else [])


def test_packages_per_family():
    _rc, deb = choices(DEBIAN_12, hypervisor_prep_transport="tcp", hypervisor_prep_sasl_password="12345678")
    assert {"libvirt-daemon-system", "qemu-system-x86", "python3-libvirt", "python3-lxml", "sasl2-bin"} <= set(deb["msg"]["packages"])
    assert deb["msg"]["qemu_group"] == "libvirt-qemu"
    _rc, rhel = choices(RHEL_9, hypervisor_prep_firewall_install=True)
    assert {"qemu-kvm", "libvirt-daemon-kvm", "python3-libvirt", "python3-lxml", "firewalld"} <= set(rhel["msg"]["packages"])
    assert "sasl2-bin" not in rhel["msg"]["packages"] and rhel["msg"]["qemu_group"] == "qemu"
    # The SASL plugin of the mechanism chosen, on each family (RHEL once installed SCRAM for DIGEST-MD5).
    for facts, plugin in ((RHEL_9, {"digest-md5": "cyrus-sasl-md5", "gssapi": "cyrus-sasl-gssapi"}),
                          (RHEL_8, {"digest-md5": "cyrus-sasl-md5", "gssapi": "cyrus-sasl-gssapi"}),
                          (DEBIAN_12, {"digest-md5": "libsasl2-modules", "gssapi": "libsasl2-modules-gssapi-mit"})):
        for mechanism, package in plugin.items():
            rc, got = choices(facts, hypervisor_prep_transport="tcp", hypervisor_prep_sasl_mechanism=mechanism,
                              hypervisor_prep_sasl_password="12345678")
            assert rc == 0, got
            assert package in got["msg"]["packages"], (facts["distribution"], mechanism, got["msg"]["packages"])
            assert not [p for p in got["msg"]["packages"] if "scram" in p]
    _rc, arm = choices({**DEBIAN_12, "architecture": "aarch64"})
    assert "qemu-system-arm" in arm["msg"]["packages"]
    # swtpm for emulated TPMs on every family, unless turned off.
    for facts in (DEBIAN_12, RHEL_9, RHEL_8):
        _rc, got = choices(facts)
        assert {"swtpm", "swtpm-tools"} <= set(got["msg"]["packages"]), (facts["distribution"], got["msg"]["packages"])
        _rc, got = choices(facts, hypervisor_prep_swtpm=False)
        assert not [p for p in got["msg"]["packages"] if p.startswith("swtpm")], got["msg"]["packages"]


@pytest.mark.parametrize("extra, accepted", [
    ({"hypervisor_prep_transport": "tcp", "hypervisor_prep_tcp_auth": "none"}, False),
    ({"hypervisor_prep_transport": "tcp", "hypervisor_prep_tcp_auth": "none",
      "hypervisor_prep_tcp_allow_unauthenticated": True}, True),
    ({"hypervisor_prep_transport": "tcp"}, False),  # sasl without a password
    ({"hypervisor_prep_transport": "vnc"}, False),
    ({"hypervisor_prep_host_uuid": "not-a-uuid"}, False),
    ({"hypervisor_prep_host_uuid": "6a1f0c4e-3d2b-4c1a-9e8f-7b6a5d4c3b2a"}, True),
])
def test_unsafe_or_invalid_input_is_refused(extra, accepted):
    rc, _got = choices(DEBIAN_12, **extra)
    assert (rc == 0) is accepted
