"""VMware -> KVM: import VMs from .vmx and .vmdk files made from the lab guest, boot them, and move them on.

The source disk is the lab guest made BIOS-bootable (MBR + syslinux), with a known pattern at
vmware.PAYLOAD_OFFSET, converted by qemu-img into each VMDK subformat (and an ESXi-style vmfs descriptor with
its -flat extent, and snapshot deltas); the .vmx is written as ESXi writes one.  The guest's own console shows
what it booted from (the syslinux command line), its disk and network drivers and its MAC address.  Every
check of what the module made uses the host's own tools (virsh, qemu-img)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import host_snapshot
from kvmlab import guest as tbguest
from kvmlab import vmware
from kvmlab.guestops import IMAGES, LabGuest, install_guest

pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
POOL = "vmimport"
SMALL_POOL = "vmimport-small"
DATASTORE_IN_HOST = "/srv/shared/vmware"
DELTA_WRITES = [(70 * 1024 * 1024, b"\xa5" * 65536), (vmware.PAYLOAD_OFFSET + 4096, b"delta-layer-data" * 256)]
MAC = "00:50:56:9a:01:02"
MODULE = "kvm.migration.vmware_import"


@pytest.fixture(scope="module")
def datastore(lab):
    """VMware-style folders in the lab's shared directory (seen by every host at /srv/shared)."""
    art = install_guest(lab)
    root = lab.shared_dir / "vmware"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    raw = vmware.bootable_disk(art, root / "disk.raw", tbguest.kernel_cmdline())
    expected = bytearray(raw.read_bytes())
    for offset, data in DELTA_WRITES:
        expected[offset:offset + len(data)] = data
    (root / "disk-with-delta.raw").write_bytes(bytes(expected))

    def folder(name, display_name=None, disk="tb.vmdk", **vmx):
        d = root / name
        d.mkdir()
        (d / "tb.vmx").write_text(vmware.vmx_text(display_name or f"tb {name}", disk, **vmx))
        return d
    vmware.esxi_vmfs(raw, folder("esxi", display_name="TB web 01", mac=MAC) / "tb.vmdk")
    for subformat in vmware.SUBFORMATS:
        vmware.to_vmdk(raw, folder(subformat) / "tb.vmdk", subformat)
    efi = vmware.efi_bootable_disk(art, root / "disk-efi.raw", tbguest.kernel_cmdline())
    vmware.to_vmdk(efi, folder("efi", display_name="TB efi", firmware="efi") / "tb.vmdk", "monolithicSparse")
    d = folder("delta", disk="tb-000001.vmdk")
    vmware.to_vmdk(raw, d / "tb.vmdk", "monolithicSparse")
    vmware.delta(d / "tb.vmdk", d / "tb-000001.vmdk", DELTA_WRITES)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def import_hosts(lab):
    """A dir pool over the image directory on hv-a, and libvirt's default network on both hosts."""
    for host in (SRC, DST):
        lab.exec(host, "virsh -q net-start default >/dev/null 2>&1; virsh -q net-info default | grep -q 'Active: *yes'")
    lab.exec(SRC, f"virsh -q pool-define-as {POOL} dir --target {IMAGES} && virsh -q pool-start {POOL}")
    yield
    lab.exec(SRC, f"virsh -q pool-destroy {POOL}; virsh -q pool-undefine {POOL}; virsh -q pool-destroy {SMALL_POOL}; "
                  f"umount /srv/small; true", check=False)
    for host in (SRC, DST):
        lab.exec(host, "virsh -q net-destroy default", check=False)


@pytest.fixture
def ovmf_on_source(lab):
    """OVMF on hv-a, from the controller's ovmf package (the lab's hosts have none), with libvirtd restarted so
    its domain capabilities, which it caches, list UEFI; removed afterwards, as are the VARS files made."""
    root = lab.host(SRC).root
    for path in vmware.OVMF_FILES:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    lab.exec(SRC, "systemctl restart libvirtd && for i in $(seq 30); do virsh -q domcapabilities --virttype qemu "
                  "--machine q35 2>/dev/null | grep -q '<value>efi</value>' && exit 0; sleep 1; done; exit 1")
    yield
    lab.exec(SRC, "rm -f " + " ".join(vmware.OVMF_FILES) + " && systemctl restart libvirtd && "
                  "for i in $(seq 30); do virsh -q version >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1")


@pytest.fixture
def imported(lab):
    """The test guest as the import names it; removed from every host afterwards."""
    made = []

    def make(name):
        g = LabGuest(lab, name=name)
        g.disk_path = f"{IMAGES}/{name}-disk0.qcow2"
        made.append(g)
        return g
    yield make
    for g in made:
        g.remove_everywhere()
        for h in (SRC, DST):
            lab.exec(h, f"rm -f {IMAGES}/{g.name}-disk* {IMAGES}/.kvm-migration-import-{g.name}.json", check=False)


def import_args(folder, **extra):
    return {"vmx": f"{DATASTORE_IN_HOST}/{folder}/tb.vmx", "pool": POOL, "domain_type": "qemu",
            "networks": [{"vmware": "*", "network": "default"}], **extra}


def volume_bytes(lab, host, path, fmt="qcow2"):
    raw = f"/root/{path.rsplit('/', 1)[-1]}.raw"
    lab.exec(host, ["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", path, raw])
    data = (lab.host(host).root / raw.lstrip("/")).read_bytes()
    lab.exec(host, ["rm", "-f", raw])
    return data


def payload_intact(data):
    return data[vmware.PAYLOAD_OFFSET:vmware.PAYLOAD_OFFSET + vmware.PAYLOAD_BYTES] == vmware.payload()


def snapshot(lab):
    """The host's domains, pools and volumes, the image directory, and the progress files a run keeps."""
    return (host_snapshot(lab, SRC) + lab.exec(SRC, f"ls -1a {IMAGES}").stdout
            + lab.exec(SRC, "ls -1a /run/kvm-migration 2>/dev/null; true").stdout)


@pytest.mark.usefixtures("import_hosts")
def test_import_an_esxi_vm_boot_it_with_virtio_and_live_migrate_it(lab, ansible, datastore, imported,
                                                                   migrate_playbook):
    vm = imported("TB-web-01")  # made from displayName "TB web 01"
    before = snapshot(lab)

    # Check mode: the plan (disks, sizes, space, networks, the definition), and nothing written.
    run = ansible.module(SRC, MODULE, import_args("esxi"), check=True, diff=True)
    assert not run.failed, run.stdout[-3000:]
    plan = run.task("probe")
    assert plan["changed"] is True and plan["name"] == vm.name and plan["device_profile"] == "virtio"
    [disk] = plan["disks"]
    assert disk["create_type"] == "vmfs" and disk["virtual_size"] == vmware.DISK_MIB * 1024 * 1024
    assert [f.rsplit("/", 1)[-1] for f in disk["files"]] == ["tb.vmdk", "tb-flat.vmdk"]
    assert disk["volume"] == vm.disk_path and disk["target"] == "vda"
    assert 0 < plan["space"]["needed"] < plan["space"]["available"]
    assert plan["interfaces"] == [{"vmx_name": "ethernet0", "vmware_network": "VM Network", "type": "network",
                                   "source": "default", "mac": MAC, "vmware_model": "vmxnet3"}]
    unmapped = {u["vmx_key"] for u in plan["unmapped"]}
    assert unmapped == {"sata0:0.fileName", "usb.present", "ehci.present", "sound.present"}
    assert any(w.startswith("not imported: sound card") for w in plan["warnings"]), plan["warnings"]
    assert "<source network=\"default\" />" in plan["xml"] and plan["diff"]["after"] == plan["xml"]
    assert snapshot(lab) == before

    # The import, started: the guest boots from the converted disk with virtio-blk and virtio-net.
    run = ansible.module(SRC, MODULE, import_args("esxi", start=True))
    assert not run.failed, run.stdout[-3000:]
    done = run.task("probe")
    assert done["changed"] is True and done["state"] == "running"
    vm.wait_ticks(SRC, 2, timeout=120)
    console = vm.console(SRC)
    assert "TB-CMDLINE BOOT_IMAGE=vmlinuz" in console and vmware.BOOT_MARK in console, console[-2000:]
    assert "TB-DEV disk vda virtio_blk" in console, console[-2000:]
    assert f"TB-DEV net eth0 virtio_net {MAC}" in console, console[-2000:]
    definition = lab.exec(SRC, ["virsh", "dumpxml", "--inactive", vm.name]).stdout
    assert "<kernel>" not in definition and "564d3a6b-219c-0e41-8f5a-1b2c3d4e5f60" in definition
    assert "vmware-import/1" in definition  # the import record in the metadata
    info = vm.image_info(SRC)
    assert info["format"] == "qcow2" and info["actual-size"] < info["virtual-size"] / 2, info
    assert payload_intact(volume_bytes(lab, SRC, vm.disk_path))
    assert lab.exec(SRC, f"ls -a {IMAGES} | grep -c '\\.part$\\|kvm-migration-import'", check=False).stdout.strip() \
        == "0"

    # The same import again finds it done.
    run = ansible.module(SRC, MODULE, import_args("esxi", start=True))
    assert not run.failed and run.task("probe")["changed"] is False and run.changed == 0, run.stdout[-2000:]

    # Then it moves like any other guest: live, disks copied, the guest ticking on.
    run = ansible.playbook(migrate_playbook, {"live_migration_vm": vm.name, "live_migration_source": SRC,
                                              "live_migration_destination": DST})
    assert not run.failed, run.stdout[-3000:]
    assert vm.state(DST) == "running" and vm.state(SRC) == "absent"
    last_on_src = max(n for n, _b in vm.ticks(SRC))
    vm.wait_ticks(DST, 2, after=last_on_src)
    proof = vm.proof([SRC, DST])
    assert proof["problems"] == [] and len(proof["boot_ids"]) == 1, proof
    assert payload_intact(volume_bytes(lab, DST, vm.disk_path))


@pytest.mark.usefixtures("import_hosts", "ovmf_on_source")
def test_a_uefi_vm_gets_ovmf_and_boots_from_its_efi_system_partition(lab, ansible, datastore, imported):
    """firmware = "efi": the definition asks libvirt for UEFI, OVMF finds the removable-media boot file on the
    converted disk (no boot entry: VMware's .nvram is not carried over, as the warning says), and only that
    file carries EFI_BOOT_MARK on its command line."""
    vm = imported("tb-efi")
    before = snapshot(lab)
    run = ansible.module(SRC, MODULE, import_args("efi", name=vm.name, start=True))
    assert not run.failed, run.stdout[-3000:]
    done = run.task("probe")
    assert done["state"] == "running"
    assert any("boots with UEFI" in w and "BOOTX64.EFI" in w for w in done["warnings"]), done["warnings"]
    vm.wait_ticks(SRC, 2, timeout=300)
    console = vm.console(SRC)
    assert f"TB-CMDLINE {tbguest.kernel_cmdline()} {vmware.EFI_BOOT_MARK}" in console, console[-2000:]
    assert "TB-DEV disk vda virtio_blk" in console, console[-2000:]
    live = lab.exec(SRC, ["virsh", "dumpxml", vm.name]).stdout
    assert "OVMF_CODE_4M.fd" in live and "<nvram" in live, live
    assert payload_intact(volume_bytes(lab, SRC, vm.disk_path))

    lab.exec(SRC, ["virsh", "destroy", vm.name])
    run = ansible.module(SRC, MODULE, import_args("efi", name=vm.name, state="absent"))
    assert not run.failed and run.task("probe")["changed"] is True, run.stdout[-3000:]
    assert lab.exec(SRC, f"ls /var/lib/libvirt/qemu/nvram/ | grep -c {vm.name}", check=False).stdout.strip() == "0"
    assert snapshot(lab) == before


@pytest.mark.usefixtures("import_hosts")
def test_every_vmdk_variant_converts_to_the_same_bytes_and_state_absent_removes_it(lab, ansible, datastore,
                                                                                   imported):
    before = snapshot(lab)
    cases = [(sf, {}, "disk.raw") for sf in vmware.SUBFORMATS] + [
        ("monolithicSparse", {"format": "raw"}, "disk.raw"),
        ("delta", {}, "disk-with-delta.raw"),
        ("delta", {"delta_chain": "keep"}, "disk-with-delta.raw"),
    ]
    for folder, extra, reference in cases:
        name = f"tb-{folder}-{extra.get('format', 'qcow2')}-{extra.get('delta_chain', 'flat')}"
        vm = imported(name)
        fmt = extra.get("format", "qcow2")
        run = ansible.module(SRC, MODULE, import_args(folder, name=name, **extra))
        assert not run.failed, (folder, extra, run.stdout[-3000:])
        [disk] = run.task("probe")["disks"]
        volume = f"{IMAGES}/{name}-disk0.{fmt}"
        assert disk["volume"] == volume
        # Independently of the module's own comparison: the guest sees the source's bytes.
        same = lab.exec(SRC, ["qemu-img", "compare", "-U", "-f", "raw", "-F", fmt,
                              f"{DATASTORE_IN_HOST}/{reference}", volume], check=False)
        assert same.returncode == 0, (folder, extra, same.stdout, same.stderr)
        chain = json.loads(lab.exec(SRC, ["qemu-img", "info", "-U", "--backing-chain", "--output=json",
                                          volume]).stdout)
        if extra.get("delta_chain") == "keep":
            assert [c["filename"] for c in chain] == [volume, f"{IMAGES}/{name}-disk0-snap0.qcow2"], chain
            assert disk["volumes"] == [f"{IMAGES}/{name}-disk0-snap0.qcow2", volume]
        else:
            assert len(chain) == 1 and chain[0]["format"] == fmt
        assert vm.state(SRC) == "shut off"

        run = ansible.module(SRC, MODULE, import_args(folder, name=name, state="absent", **extra))
        assert not run.failed and run.task("probe")["changed"] is True, run.stdout[-2000:]
        assert sorted(run.task("probe")["removed"]) == sorted(disk["volumes"])
        assert vm.state(SRC) == "absent"
        assert snapshot(lab) == before, (folder, extra)


def _copy_folder(datastore, source, name):
    target = datastore / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(datastore / source, target)
    return target


@pytest.mark.usefixtures("import_hosts")
def test_bad_input_gets_a_clear_error_and_changes_nothing(lab, ansible, datastore, imported):
    missing_extent = _copy_folder(datastore, "twoGbMaxExtentSparse", "bad-missing-extent")
    (missing_extent / "tb-s001.vmdk").unlink()
    corrupt = _copy_folder(datastore, "monolithicSparse", "bad-corrupt")
    with open(corrupt / "tb.vmdk", "r+b") as f:  # cut short, as an interrupted copy leaves it
        f.truncate((corrupt / "tb.vmdk").stat().st_size * 6 // 10)
    not_vmx = datastore / "bad-not-vmx"
    not_vmx.mkdir(exist_ok=True)
    (not_vmx / "tb.vmx").write_text("#!/bin/sh\necho this is a shell script\n")
    escaping = _copy_folder(datastore, "monolithicFlat", "bad-escaping-extent")
    descriptor = (escaping / "tb.vmdk").read_text().replace('"tb-flat.vmdk"', '"../esxi/tb-flat.vmdk"')
    (escaping / "tb.vmdk").write_text(descriptor)
    orphan = _copy_folder(datastore, "delta", "bad-missing-parent")
    (orphan / "tb.vmdk").unlink()
    imported("tb-taken")
    lab.exec(SRC, f"virsh -q define /dev/stdin <<'EOF'\n{tbguest.domain_xml('tb-taken', IMAGES + '/none.qcow2')}EOF")
    lab.exec(SRC, f"mkdir -p /srv/small && mount -t tmpfs -o size=24m tmpfs /srv/small && "
                  f"virsh -q pool-create-as {SMALL_POOL} dir --target /srv/small")
    try:
        before = snapshot(lab)
        cases = [
            ("bad-missing-extent", {}, "lists the extent 'tb-s001.vmdk', which is missing"),
            ("bad-corrupt", {}, "bad-corrupt/tb.vmdk is corrupt (qemu-img check"),
            ("bad-not-vmx", {}, "is not a VMware .vmx file"),
            ("bad-escaping-extent", {}, "only a plain file name in the same directory"),
            ("bad-missing-parent", {}, "the parent disk"),
            ("esxi", {"name": "tb-taken"}, "a domain named tb-taken already exists"),
            ("esxi", {"name": "tb/../x"}, "name='tb/../x' is not usable"),
            ("esxi", {"name": "tb-small", "pool": SMALL_POOL}, "the import needs"),
            ("esxi", {"name": "tb-nonet", "networks": [{"vmware": "Other", "network": "default"}]},
             "no libvirt network or bridge for the VMware network(s) VM Network"),
            ("esxi", {"name": "tb-nonet", "networks": [{"vmware": "*", "network": "nosuchnet"}]},
             "network 'nosuchnet' (for VMware network 'VM Network') does not exist"),
            ("delta", {"name": "tb-rawkeep", "format": "raw", "delta_chain": "keep"}, "needs format=qcow2"),
            ("esxi", {"name": "tb-kvm", "domain_type": "kvm"}, "cannot run an x86_64 kvm guest"),
            ("esxi", {"name": "tb-timeout", "timeout": 172801}, "timeout=172801 is out of range"),
        ]
        for folder, extra, message in cases:
            extra = {"name": f"tb-{folder}", **extra}
            if "/" not in extra["name"]:
                imported(extra["name"])  # removed afterwards, should a case import after all
            run = ansible.module(SRC, MODULE, import_args(folder, **extra))
            assert run.failed, (folder, extra, run.stdout[-1500:])
            result = run.task("probe")
            assert message in result["msg"], (folder, extra, result["msg"])
            assert snapshot(lab) == before, (folder, extra)
        assert lab.exec(SRC, "ls -A /srv/small").stdout == ""
    finally:
        lab.exec(SRC, f"virsh -q pool-destroy {SMALL_POOL}; umount /srv/small; rmdir /srv/small", check=False)


@pytest.mark.usefixtures("import_hosts")
def test_a_killed_import_is_cleaned_up_and_a_changed_source_is_refused(lab, ansible, datastore, imported):
    folder = _copy_folder(datastore, "monolithicFlat", "changing")
    vm = imported("tb-changing")
    # What a run killed mid-copy leaves: its marker (naming a process that is gone) and a half-written volume.
    leftover = f"{vm.disk_path}.part"
    marker = f"{IMAGES}/.kvm-migration-import-{vm.name}.json"
    record = json.dumps({"name": vm.name, "files": [vm.disk_path, leftover], "pid": 999999, "boot_id": "x"})
    lab.exec(SRC, f"head -c 1048576 /dev/urandom > {leftover} && echo '{record}' > {marker}")
    run = ansible.module(SRC, MODULE, import_args("changing", name=vm.name))
    assert not run.failed, run.stdout[-3000:]
    assert run.task("probe")["cleaned_up"] == [leftover]
    assert lab.exec(SRC, ["test", "-e", marker], check=False).returncode != 0
    assert lab.exec(SRC, ["test", "-e", leftover], check=False).returncode != 0
    digest = lab.exec(SRC, ["sha256sum", vm.disk_path]).stdout.split()[0]

    # The VMware side changes afterwards: the re-run refuses and leaves the import as it was.
    with open(folder / "tb-flat.vmdk", "r+b") as f:
        f.seek(80 * 1024 * 1024)
        f.write(b"changed in VMware")
    run = ansible.module(SRC, MODULE, import_args("changing", name=vm.name))
    assert run.failed
    msg = run.task("probe")["msg"]
    assert "the source changed since" in msg and "tb-flat.vmdk has new content" in msg, msg
    assert lab.exec(SRC, ["sha256sum", vm.disk_path]).stdout.split()[0] == digest


@pytest.mark.usefixtures("import_hosts")
def test_the_import_vmware_playbook_with_survey_answers(lab, ansible, datastore, imported):
    """As an AWX job template runs it: every answer a string, the result handed on with set_stats."""
    vm = imported("tb-ova")
    answers = {"kvm_migration_progress_interval": "1",
               "vmware_import_host": SRC, "vmware_import_vmx": f"{DATASTORE_IN_HOST}/streamOptimized/tb.vmx",
               "vmware_import_name": vm.name, "vmware_import_pool": POOL, "vmware_import_network": "default",
               "vmware_import_device_profile": "auto", "vmware_import_start": "false",
               "vmware_import_domain_type": "qemu"}
    before = snapshot(lab)
    run = ansible.playbook("kvm.migration.import_vmware", answers, check=True)
    assert not run.failed, run.stdout[-3000:]
    assert "would be imported" in run.task("Report")["msg"] and snapshot(lab) == before

    run = ansible.playbook("kvm.migration.import_vmware", answers)
    assert not run.failed, run.stdout[-3000:]
    assert "tb-ova on hv-a: imported (shutoff, virtio devices; 1 disk(s)" in run.task("Report")["msg"]
    handed_on = run.data["global_custom_stats"]["kvm_migration_import"]
    assert handed_on["vm"] == vm.name and handed_on["volumes"] == [vm.disk_path] and handed_on["state"] == "shutoff"
    assert vm.state(SRC) == "shut off"

    run = ansible.playbook("kvm.migration.import_vmware", answers)
    assert not run.failed and run.changed == 0, run.stdout[-3000:]
    assert "already in place" in run.task("Report")["msg"]

    run = ansible.playbook("kvm.migration.import_vmware", dict(answers, vmware_import_vmx="relative.vmx"))
    assert run.failed and "absolute path of a .vmx" in run.task("Check the role's input")["msg"]

    run = ansible.playbook("kvm.migration.import_vmware", dict(answers, vmware_import_state="absent"))
    assert not run.failed, run.stdout[-3000:]
    assert "removed" in run.task("Report")["msg"] and vm.state(SRC) == "absent" and snapshot(lab) == before
