"""The VMware side of vmware_import without a host: .vmx parsing, VMDK descriptors and chains (files made by the
real qemu-img where it can make them), and the generated definition (parsed back by libvirt's test driver)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _vmdk, _vmx
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._vmware_definition import (
    bios_uuid,
    disk_targets,
    domain_xml,
    import_record_xml,
    parse_import_record,
)
from ansible_collections.kvm.migration.plugins.module_utils._vmware_import import (
    domain_name,
    resolve_disk_path,
    resolve_profile,
    source_changes,
    fingerprint,
)
from ansible_collections.kvm.migration.plugins.module_utils._vmware_v2v import virt_v2v_argv

ESXI_VMX = """.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web |22prod|22 01"
guestOS = "windows2019srvNext-64"
memSize = "4096"
numvcpus = "4"
cpuid.coresPerSocket = "2"
firmware = "efi"
uefi.secureBoot.enabled = "TRUE"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsisas1068"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "web_1.vmdk"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web.vmdk"
nvme0.present = "TRUE"
nvme0:0.present = "TRUE"
nvme0:0.fileName = "/vmfs/volumes/ds2/web/web_2.vmdk"
ide0:0.present = "FALSE"
ide0:0.fileName = "old.vmdk"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "/vmfs/volumes/iso/win.iso"
ethernet1.present = "TRUE"
ethernet1.virtualDev = "e1000e"
ethernet1.networkName = "Backup"
ethernet1.addressType = "static"
ethernet1.address = "00:50:56:01:02:03"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "vpx"
ethernet0.generatedAddress = "00:50:56:AA:BB:CC"
usb_xhci.present = "TRUE"
pciPassthru0.present = "TRUE"
sound.present = "FALSE"
svga.present = "TRUE"
vmci0.present = "TRUE"
uuid.bios = "42 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8"
"""


def test_an_esxi_vmx_is_read_with_topology_firmware_disk_order_macs_and_what_cannot_be_mapped():
    vm = _vmx.read_vmx(ESXI_VMX)
    assert vm["display_name"] == 'web "prod" 01'
    assert (vm["memory_mib"], vm["vcpus"], vm["sockets"], vm["cores_per_socket"]) == (4096, 4, 2, 2)
    assert (vm["firmware"], vm["secure_boot"]) == ("efi", True)
    assert (vm["os_family"], vm["osinfo"]) == ("windows", "http://microsoft.com/win/2k22")
    # VMware's BIOS order without bios.hddOrder: SCSI before NVMe, then by unit; the absent IDE disk is ignored
    assert [d["unit"] for d in vm["disks"]] == ["scsi0:0", "scsi0:1", "nvme0:0"]
    assert [(n["vmx_name"], n["network"], n["mac"], n["model"]) for n in vm["nics"]] == [
        ("ethernet0", "VM Network", "00:50:56:aa:bb:cc", "vmxnet3"),
        ("ethernet1", "Backup", "00:50:56:01:02:03", "e1000e")]
    unmapped = {u["vmx_key"] for u in vm["unmapped"]}
    assert unmapped == {"sata0:0.fileName", "usb_xhci.present", "pcipassthru0.present", "vmci0.present"}
    assert bios_uuid(vm["uuid_bios"]) == "421a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"


def test_bios_hdd_order_decides_the_boot_disk():
    vm = _vmx.read_vmx(ESXI_VMX + 'bios.hddOrder = "nvme0:0,scsi0:1"\n')
    assert [d["unit"] for d in vm["disks"]] == ["nvme0:0", "scsi0:1", "scsi0:0"]


@pytest.mark.parametrize("text, message", [
    ("#!/bin/sh\necho hi\n", "line 2 is not key"),
    ('displayName = "x"\n', "no config.version and virtualHW.version"),
    ('config.version = "8"\nvirtualHW.version = "19"\n', "has no virtual disk"),
    ('config.version = "8"\nvirtualHW.version = "19"\nmemSize = "lots"\n', "memsize = 'lots' is not a whole number"),
    ('config.version = "8"\nvirtualHW.version = "19"\nnumvcpus = "100000"\n', "numvcpus = 100000 is outside 1-768"),
    (ESXI_VMX.replace("00:50:56:01:02:03", "00:50:56:zz"), "which is not six hex pairs"),
])
def test_what_is_not_a_usable_vmx_is_refused_with_the_reason(text, message):
    with pytest.raises(InvalidRequest, match=message):
        _vmx.read_vmx(text, "x.vmx")


def test_vcpus_that_do_not_divide_into_sockets_fall_back_with_a_warning():
    vm = _vmx.read_vmx(ESXI_VMX.replace('numvcpus = "4"', 'numvcpus = "3"'))
    assert (vm["sockets"], vm["cores_per_socket"]) == (3, 1) and "not a multiple" in vm["warnings"][0]


@pytest.mark.parametrize("requested, display, expected", [
    (None, "web prod 01", "web-prod-01"), (None, "  Ünïcode VM ", "n-code-VM"), ("db1", "whatever", "db1")])
def test_domain_names(requested, display, expected):
    assert domain_name(requested, display) == expected


@pytest.mark.parametrize("requested", ["../x", "a b", "x/y", "-x", "a" * 64, "x\ny"])
def test_unusable_names_are_refused(requested):
    with pytest.raises(InvalidRequest, match="is not usable"):
        domain_name(requested, "")


@pytest.mark.parametrize("file_name", ["../other/x.vmdk", "sub\\x.vmdk", "x\n.vmdk", "/vmfs/volumes/ds/.."])
def test_disk_names_never_leave_the_vmx_directory(file_name):
    with pytest.raises(InvalidRequest, match="plain file names next to the .vmx"):
        resolve_disk_path("/srv/ds/vm", file_name, "scsi0:0.fileName")


def test_a_disk_on_another_datastore_is_looked_for_next_to_the_vmx():
    assert resolve_disk_path("/srv/ds/vm", "/vmfs/volumes/ds2/vm/vm_1.vmdk", "k") == ("/srv/ds/vm/vm_1.vmdk", True)


def test_profile_auto_picks_virtio_for_linux_and_compat_with_a_warning_for_windows():
    linux = _vmx.read_vmx(ESXI_VMX.replace("windows2019srvNext-64", "rhel9-64"))
    assert resolve_profile("auto", linux) == ("virtio", [])
    profile, warnings = resolve_profile("auto", _vmx.read_vmx(ESXI_VMX))
    assert profile == "compat" and "virt-v2v" in warnings[0]
    assert resolve_profile("virtio", _vmx.read_vmx(ESXI_VMX)) == ("virtio", [])


def _definition(profile="virtio", machine="q35", domain_type="kvm", record=None):
    vm = _vmx.read_vmx(ESXI_VMX)
    disks = [{"volume": "/images/web-disk%d.qcow2" % i, "format": "qcow2", "target": t}
             for i, t in enumerate(disk_targets(profile, 3))]
    nics = [{"type": "bridge", "source": "br0", "mac": "00:50:56:aa:bb:cc"},
            {"type": "network", "source": "backup", "mac": None}]
    return ET.fromstring(domain_xml("web", vm, disks, nics, {"domain_type": domain_type, "machine": machine,
                                                             "device_profile": profile, "cpu_model": None},
                                    record_xml=record))


def test_the_virtio_definition_has_the_vms_shape_and_virtio_devices():
    root = _definition()
    assert root.findtext("memory") == "4096" and root.findtext("vcpu") == "4"
    assert root.find("cpu").get("mode") == "host-model"
    assert root.find("cpu/topology").attrib == {"sockets": "2", "dies": "1", "cores": "2", "threads": "1"}
    assert root.find("os").get("firmware") == "efi" and root.find("os/loader").get("secure") == "yes"
    assert root.find("features/smm").get("state") == "on" and root.find("features/hyperv") is not None
    assert root.find("clock").get("offset") == "localtime"  # Windows keeps its RTC in local time
    assert [(t.get("dev"), t.get("bus")) for t in root.findall("devices/disk/target")] == [
        ("vda", "virtio"), ("vdb", "virtio"), ("vdc", "virtio")]
    assert root.find("devices/disk/boot").get("order") == "1"
    assert [m.get("type") for m in root.findall("devices/interface/model")] == ["virtio", "virtio"]
    assert [m.get("address") for m in root.findall("devices/interface/mac")] == ["00:50:56:aa:bb:cc"]
    assert root.find("devices/serial/log").get("file") == "/var/log/libvirt/qemu/web-console.log"
    assert root.find("uuid").text == "421a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"


def test_the_compat_definition_has_sata_and_e1000e_or_e1000():
    root = _definition(profile="compat")
    assert [(t.get("dev"), t.get("bus")) for t in root.findall("devices/disk/target")] == [
        ("sda", "sata"), ("sdb", "sata"), ("sdc", "sata")]
    assert {m.get("type") for m in root.findall("devices/interface/model")} == {"e1000e"}
    assert root.find("devices/channel") is None and root.find("devices/memballoon").get("model") == "none"
    assert {m.get("type") for m in _definition(profile="compat", machine="pc").findall(
        "devices/interface/model")} == {"e1000"}
    assert _definition(domain_type="qemu").find("features/hyperv") is None


def test_the_definition_is_one_libvirt_accepts(test_uri):
    libvirt = pytest.importorskip("libvirt")
    record = import_record_xml("/srv/ds/web/web.vmx", [{"path": "/srv/ds/web/web.vmdk", "size": 1, "mtime_ns": 2,
                                                        "sha256": "ab"}], ["/images/web-disk0.qcow2"])
    xml = ET.tostring(_definition(domain_type="qemu", record=record), encoding="unicode").replace(
        "type=\"qemu\"", "type=\"test\"", 1)
    conn = libvirt.open(test_uri)
    try:
        dom = conn.defineXML(xml)
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                            "https://github.com/kvm-migration/kvm.migration/vmware-import/1",
                            libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        assert parse_import_record(text)["volumes"] == ["/images/web-disk0.qcow2"]
        assert parse_import_record(text)["files"][0]["sha256"] == "ab"
    finally:
        conn.close()


def test_disk_targets_go_past_z():
    assert disk_targets("virtio", 28)[-3:] == ["vdz", "vdaa", "vdab"]


def test_virt_v2v_gets_the_pool_format_name_and_network_mapping():
    argv = virt_v2v_argv("/usr/bin/virt-v2v", "/srv/ds/w/w.vmx", "images", "qcow2", "w",
                         [{"type": "network", "vmware_network": "VM Network", "source": "default"},
                          {"type": "bridge", "vmware_network": "Backup", "source": "br1"}])
    assert argv == ["/usr/bin/virt-v2v", "-i", "vmx", "/srv/ds/w/w.vmx", "-o", "libvirt", "-os", "images",
                    "-of", "qcow2", "-on", "w", "--network", "VM Network:default", "--bridge", "Backup:br1"]


# ---------------------------------------------------------------- VMDK files (made by qemu-img)

qemu_img = shutil.which("qemu-img")
needs_qemu_img = pytest.mark.skipif(qemu_img is None, reason="qemu-img is not installed")


def _make(tmp_path, subformat):
    raw = tmp_path / "src.raw"
    raw.write_bytes(b"\x11" * 1024 * 1024)
    subprocess.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=" + subformat, str(raw),
                    str(tmp_path / "d.vmdk")], check=True)
    return tmp_path / "d.vmdk"


@needs_qemu_img
@pytest.mark.parametrize("subformat, files", [
    ("monolithicSparse", ["d.vmdk"]), ("monolithicFlat", ["d.vmdk", "d-flat.vmdk"]),
    ("twoGbMaxExtentSparse", ["d.vmdk", "d-s001.vmdk"]), ("twoGbMaxExtentFlat", ["d.vmdk", "d-f001.vmdk"]),
    ("streamOptimized", ["d.vmdk"])])
def test_every_subformat_lists_its_files(tmp_path, subformat, files):
    [layer] = _vmdk.read_chain(str(_make(tmp_path, subformat)))
    assert layer["create_type"] == subformat and layer["size"] == 1024 * 1024
    assert [p.rsplit("/", 1)[-1] for p in layer["files"]] == files


@needs_qemu_img
def test_a_delta_chain_is_followed_and_checked(tmp_path):
    base = _make(tmp_path, "monolithicSparse")
    subprocess.run([qemu_img, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", "d.vmdk", str(tmp_path / "d-1.vmdk")],
                   check=True, cwd=tmp_path)
    chain = _vmdk.read_chain(str(tmp_path / "d-1.vmdk"))
    assert [c["path"] for c in chain] == [str(tmp_path / "d-1.vmdk"), str(base)]
    base.unlink()
    with pytest.raises(InvalidRequest, match="the parent disk .* is missing"):
        _vmdk.read_chain(str(tmp_path / "d-1.vmdk"))


@needs_qemu_img
def test_bad_vmdks_are_refused_with_the_reason(tmp_path):
    flat = _make(tmp_path, "monolithicFlat")
    with pytest.raises(InvalidRequest, match="give the small .vmdk, not the -flat.vmdk"):
        _vmdk.read_chain(str(tmp_path / "d-flat.vmdk"))
    text = flat.read_text().replace('"d-flat.vmdk"', '"../d-flat.vmdk"')
    flat.write_text(text)
    with pytest.raises(InvalidRequest, match="only a plain file name"):
        _vmdk.read_chain(str(flat))
    flat.write_text(text.replace('"../d-flat.vmdk"', '"d-flat.vmdk"'))
    with open(tmp_path / "d-flat.vmdk", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(InvalidRequest, match="copied incompletely"):
        _vmdk.read_chain(str(flat))
    flat.write_text(text.replace("monolithicFlat", "vmfsRawDeviceMap"))
    with pytest.raises(InvalidRequest, match="raw device mapping"):
        _vmdk.read_chain(str(flat))


def test_source_changes_ignore_a_new_mtime_with_the_same_content(tmp_path):
    path = tmp_path / "x.vmdk"
    path.write_bytes(b"data")
    recorded = [fingerprint(str(path))]
    path.write_bytes(b"data")  # rewritten: new mtime, same bytes
    assert source_changes(recorded) == []
    path.write_bytes(b"DATA")
    assert source_changes(recorded) == ["%s has new content (sha256 differs)" % path]
    path.write_bytes(b"longer")
    assert "has 6 bytes, 4 when imported" in source_changes(recorded)[0]
