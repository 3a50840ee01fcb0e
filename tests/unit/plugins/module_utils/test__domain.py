from __future__ import annotations

from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec

DOMAIN = """<domain type='kvm'>
  <name>web01</name>
  <uuid>0b7d6c3e-1f4a-4c55-9a43-6a1f3c2e9d10</uuid>
  <memory unit='GiB'>2</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-9.0'>hvm</type></os>
  <cpu mode='host-model'/>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback'/>
      <source file='/var/lib/libvirt/images/web01.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
        <backingStore type='file'>
          <format type='raw'/>
          <source file='/var/lib/libvirt/images/golden.raw'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='nbd' name='shared'><host name='10.0.0.3' port='10809'/></source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/isos/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/shared/quorum.img'/>
      <target dev='vdd' bus='virtio'/>
      <shareable/>
    </disk>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source>
    </hostdev>
  </devices>
</domain>"""


def test_domain_facts():
    spec = DomainSpec.from_xml(DOMAIN)
    assert (spec.name, spec.uuid, spec.domain_type) == ("web01", "0b7d6c3e-1f4a-4c55-9a43-6a1f3c2e9d10", "kvm")
    assert spec.memory_kib == 2 * 1024 * 1024
    assert spec.vcpus == 2
    assert (spec.arch, spec.machine, spec.cpu_mode) == ("x86_64", "pc-q35-9.0", "host-model")
    assert spec.hostdevs == [{"mode": "subsystem", "type": "pci", "model": None,
                              "address": {"domain": "0x0000", "bus": "0x03", "slot": "0x00", "function": "0x0"}}]


def test_disks_and_backing_chain():
    spec = DomainSpec.from_xml(DOMAIN)
    vda = spec.disk("vda")
    assert (vda.type, vda.format, vda.cache, vda.source) == ("file", "qcow2", "writeback",
                                                             "/var/lib/libvirt/images/web01.qcow2")
    assert [(b.path, b.format) for b in vda.backing] == [
        ("/var/lib/libvirt/images/base.qcow2", "qcow2"),
        ("/var/lib/libvirt/images/golden.raw", "raw"),
    ]
    assert spec.disk("vdb").source == "/dev/vg0/data"
    assert spec.disk("vdc").source == "nbd://10.0.0.3:10809/shared"
    assert spec.disk("nosuch") is None


def test_only_local_writable_images_are_copied():
    spec = DomainSpec.from_xml(DOMAIN)
    assert [d.target for d in spec.disks if d.is_local_image] == ["vda", "vdb"]


def test_memory_units():
    for unit, value, kib in (("KiB", 1024, 1024), ("MiB", 256, 262144), ("b", 1048576, 1024), ("G", 1, 1048576)):
        xml = "<domain><name>x</name><memory unit='%s'>%d</memory></domain>" % (unit, value)
        assert DomainSpec.from_xml(xml).memory_kib == kib
    assert DomainSpec.from_xml("<domain><name>x</name><memory>4096</memory></domain>").memory_kib == 4096


def test_firmware_variable_store_and_emulated_tpm_are_read():
    spec = DomainSpec.from_xml(
        "<domain type='kvm'><name>v</name><uuid>00000000-0000-0000-0000-00000000000a</uuid><memory>1024</memory>"
        "<os><type arch='x86_64' machine='q35'>hvm</type>"
        "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>"
        "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/libvirt/qemu/nvram/v_VARS.fd</nvram></os>"
        "<devices><tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm></devices></domain>")
    assert spec.loader == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    assert spec.nvram == "/var/lib/libvirt/qemu/nvram/v_VARS.fd"
    assert spec.nvram_template == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    assert spec.tpm_emulator is True and spec.unmigratable_devices == []
    bios = DomainSpec.from_xml("<domain type='qemu'><name>b</name><memory>1024</memory><os><type>hvm</type></os>"
                               "<devices/></domain>")
    assert (bios.loader, bios.nvram, bios.tpm_emulator) == ("", "", False)


def test_job_report_gives_type_and_percent_done():
    from types import SimpleNamespace

    from ansible_collections.kvm.migration.plugins.module_utils._domain import job_report

    # A stand-in domain: the test driver has no job statistics (real jobs are read in tests/integration).
    running = SimpleNamespace(isActive=lambda: True, name=lambda: "vm1",
                              jobStats=lambda _f: {"type": 2, "data_total": 400, "data_remaining": 100,
                                                   "time_elapsed": 5, "disk_bps": 1.5, "note": "x"})
    assert job_report(running) == {"type": "unbounded", "percent": 75.0,
                                   "stats": {"data_total": 400, "data_remaining": 100, "time_elapsed": 5,
                                             "disk_bps": 1.5}}
    assert job_report(None) == {"type": "none", "stats": {}}
    assert job_report(SimpleNamespace(isActive=lambda: False)) == {"type": "none", "stats": {}}
