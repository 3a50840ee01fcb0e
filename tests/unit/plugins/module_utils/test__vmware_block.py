"""vmware_import into a logical (LVM) pool: block volumes made through libvirt, written by the real qemu-img.

This kernel has no device-mapper, so no LVM and no logical pool can exist here (nor in the lab's containers).
Mocked, therefore: libvirt's test driver stands in for the LVM pool (it makes, lists and deletes the volumes and
names them /dev/VG/LV as LVM does), and each /dev/VG/LV name points at a real loop device, as LVM's names point
at /dev/dm-N.  What is real: the volume calls through libvirt, qemu-img writing and comparing the block device,
the definition libvirt parses, and the cleanup.  The host check is skipped: the test driver has no domain
capabilities (the lab tests run it for file pools)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET

import pytest
from ansible_collections.kvm.migration.plugins.module_utils import _vmware_import
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import LibvirtClient
from ansible_collections.kvm.migration.plugins.module_utils._qemu_img import QemuImg
from ansible_collections.kvm.migration.plugins.module_utils._vmware_import import (
    Importer,
    Pool,
    domain_name,
    pending_cleanup,
    read_import_record,
)

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("losetup") is None or
                                os.geteuid() != 0, reason="needs qemu-img, losetup and root")

MIB = 1024 * 1024
DISK_SIZE = 8 * MIB
VMX = """.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "db01"
guestOS = "debian12-64"
memSize = "128"
numvcpus = "1"
scsi0.present = "TRUE"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "db01.vmdk"
"""


def _run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def block_host(tmp_path, monkeypatch):
    """A test-driver host with a logical pool of VG <vg>, whose volume db01-disk0 is backed by a loop device
    holding old data (0xAA), and a VMware folder with db01.vmx and its disk."""
    vg = "kvmtest" + uuid.uuid4().hex[:8]
    node = tmp_path / "node.xml"
    node.write_text(f"""<node>
  <pool type='logical'>
    <name>guests</name>
    <uuid>{uuid.uuid4()}</uuid>
    <source><name>{vg}</name><format type='lvm2'/></source>
    <target><path>/dev/{vg}</path></target>
  </pool>
</node>
""")
    backing = tmp_path / "lv.img"
    backing.write_bytes(b"\xaa" * (DISK_SIZE + 4 * MIB))  # LVM rounds the volume up; the tail holds old data
    loop = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                          check=True).stdout.strip()
    vg_dir = "/dev/" + vg
    os.mkdir(vg_dir)
    os.symlink(loop, os.path.join(vg_dir, "db01-disk0"))
    monkeypatch.setattr(_vmware_import, "BLOCK_MARKER_DIR", str(tmp_path / "markers"))
    monkeypatch.setattr(_vmware_import, "check_host", lambda client, options, vm: None)

    datastore = tmp_path / "ds"
    datastore.mkdir()
    raw = tmp_path / "content.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(3 * MIB))
        f.truncate(DISK_SIZE)  # the rest reads as zeroes, as an unwritten VMware disk does
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(raw), str(datastore / "db01.vmdk")],
                   check=True)
    (datastore / "db01.vmx").write_text(VMX)
    client = LibvirtClient(f"test://{node}")
    client.open()
    try:
        yield {"client": client, "vg_dir": vg_dir, "loop": loop, "vmx": str(datastore / "db01.vmx"),
               "raw": str(raw), "markers": tmp_path / "markers"}
    finally:
        client.close()
        shutil.rmtree(vg_dir, ignore_errors=True)
        subprocess.run(["losetup", "-d", loop], check=False)


def _params(vmx, **over):
    params = {"vmx": vmx, "name": None, "pool": "guests", "format": "raw", "delta_chain": "consolidate",
              "networks": [], "device_profile": "auto", "domain_type": "test", "machine": "q35", "cpu_model": None,
              "converter": "qemu-img", "start": False, "timeout": 0}
    params.update(over)
    return params


def _importer(host, **over):
    return Importer(host["client"], QemuImg(_run), _params(host["vmx"], **over))


def _volumes(host):
    pool = host["client"].lookup_pool("guests")
    pool.refresh(0)
    return sorted(pool.listVolumes())


def _plan(host, importer):
    pool = Pool(host["client"], "guests")
    vm = importer.read()
    plan = importer.plan(vm, pool, domain_name(None, vm["display_name"]))
    return vm, pool, plan


def test_a_disk_is_imported_into_a_logical_volume_with_the_guests_bytes_and_the_tail_zeroed(block_host):
    importer = _importer(block_host)
    vm, pool, plan = _plan(block_host, importer)
    volume = block_host["vg_dir"] + "/db01-disk0"
    assert [d["volume"] for d in plan["disks"]] == [volume]
    assert plan["needed"] == DISK_SIZE  # a logical volume is allocated in full
    importer.check_room(plan, pool, [])

    dom, _files = importer.run(vm, plan, pool)

    assert _volumes(block_host) == ["db01-disk0"]
    with open(block_host["loop"], "rb") as device, open(block_host["raw"], "rb") as content:
        assert device.read(DISK_SIZE) == content.read()
        assert device.read() == b"\0" * 4 * MIB  # the old data past the disk is gone
    disk = ET.fromstring(dom.XMLDesc(0)).find("devices/disk")
    assert disk.get("type") == "block" and disk.find("source").get("dev") == volume
    assert disk.find("driver").get("type") == "raw"
    assert read_import_record(dom)["volumes"] == [volume]
    assert not block_host["markers"].exists() or not any(block_host["markers"].rglob("*"))


def test_a_logical_pool_refuses_qcow2_virt_v2v_and_a_volume_it_did_not_make_and_changes_nothing(block_host):
    with pytest.raises(InvalidRequest, match=r"format=qcow2 cannot be written there"):
        _plan(block_host, _importer(block_host, format="qcow2"))
    with pytest.raises(InvalidRequest, match=r"converter=virt-v2v writes image files"):
        _plan(block_host, _importer(block_host, converter="virt-v2v"))

    block_host["client"].lookup_pool("guests").createXML(
        "<volume><name>db01-disk0</name><capacity unit='bytes'>%d</capacity></volume>" % DISK_SIZE, 0)
    importer = _importer(block_host)
    _vm, pool, plan = _plan(block_host, importer)
    with pytest.raises(InvalidRequest, match=r"pool guests already has .*db01-disk0, which this import did not make"):
        importer.check_room(plan, pool, [])
    assert _volumes(block_host) == ["db01-disk0"]
    assert block_host["client"].lookup_domain("db01") is None


def test_a_failed_write_removes_the_volume_it_made_and_the_marker(block_host):
    # The device behind the volume is smaller than the disk: qemu-img fails writing it.
    backing = subprocess.run(["losetup", "-n", "-O", "BACK-FILE", block_host["loop"]], capture_output=True,
                             text=True, check=True).stdout.strip()
    os.truncate(backing, 2 * MIB)
    subprocess.run(["losetup", "-c", block_host["loop"]], check=True)
    importer = _importer(block_host)
    vm, pool, plan = _plan(block_host, importer)

    with pytest.raises(OperationFailed, match=r"converting .*db01.vmdk to .*db01-disk0 failed") as failure:
        importer.run(vm, plan, pool)

    assert "Nothing of the import was left on the host" in str(failure.value)
    assert _volumes(block_host) == []
    assert block_host["client"].lookup_domain("db01") is None
    assert not block_host["markers"].exists() or not any(block_host["markers"].rglob("*.json"))


def test_a_killed_runs_volume_is_found_from_its_marker_and_removed(block_host):
    pool = Pool(block_host["client"], "guests")
    volume = block_host["vg_dir"] + "/db01-disk0"
    pool.create_volume(volume, DISK_SIZE)
    pool.prepare_marker_dir()
    with open(pool.marker_path("db01"), "w") as f:  # what a run killed while writing left
        json.dump({"name": "db01", "files": [volume, "/etc/passwd", block_host["vg_dir"] + "/other"],
                   "pid": 2 ** 22 + 1, "boot_id": "not-this-boot"}, f)

    marker, leftovers = pending_cleanup(pool, "db01", domain_has_record=False)

    assert marker == pool.marker_path("db01") and leftovers == [volume]  # only what the run could have made
    assert pool.remove(leftovers) == [volume]
    pool.drop_marker(marker)
    assert _volumes(block_host) == [] and not os.path.exists(pool.marker_dir)
