"""Unit tests run against the installed collection (build/collections, see `make install`) and real libvirt:
libvirt-python's built-in test driver (test:///default) needs no daemon and runs libvirt's own code."""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip("libvirt")


@pytest.fixture
def test_uri(tmp_path):
    """A private test-driver host: one running domain 'vm1' with a qcow2 disk, and a dir pool."""
    node = tmp_path / "node.xml"
    node.write_text(f"""<node>
  <domain type='test'>
    <name>vm1</name>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
    <memory unit='MiB'>256</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64' machine='pc'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2' cache='none'/>
        <source file='{tmp_path}/images/vm1.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='cdrom'>
        <driver name='qemu' type='raw'/>
        <source file='{tmp_path}/iso/install.iso'/>
        <target dev='sda' bus='sata'/>
        <readonly/>
      </disk>
    </devices>
  </domain>
  <pool type='dir'>
    <name>images</name>
    <uuid>aaaaaaaa-2222-3333-4444-555555555555</uuid>
    <target><path>{tmp_path}/images</path></target>
  </pool>
</node>
""")
    return f"test://{node}"


class InstantClock:
    """Stands in for the time module: sleeping advances the clock at once."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def instant_clock(monkeypatch):
    """The clock of the live run and of post-copy recovery (_live, _postcopy), made instant."""
    from ansible_collections.kvm.migration.plugins.module_utils import _live, _postcopy

    clock = InstantClock()
    monkeypatch.setattr(_live, "time", clock)
    monkeypatch.setattr(_postcopy, "time", clock)
    return clock
