"""VMware-style inputs made from the lab guest: a BIOS-bootable disk (MBR + syslinux on a FAT partition holding
the guest's kernel and initramfs), converted to each VMDK subformat with qemu-img, snapshot deltas, and a .vmx
written the way ESXi writes one.

The disk's first 64 MiB are left to the guest's tick records (from 1 MiB on, see guest.py); the FAT partition
starts at 64 MiB.  A data region at PAYLOAD_OFFSET holds a known pattern, so a test can prove every byte of the
source disk survived the conversion and the migration after it.

A UEFI variant has an EFI system partition with a unified kernel image (systemd's EFI stub) as the removable
media boot file, which OVMF starts without a boot entry, as after an import that did not carry VMware's .nvram.

Standard library plus qemu-img, mkfs.vfat, syslinux, mtools, objcopy and systemd-boot-efi on the controller."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from .guest import GuestArtifacts

PARTITION_START_MIB = 64
DISK_MIB = 96
PAYLOAD_OFFSET = 40 * 1024 * 1024  # inside the record area's tail, far above any tick a test reaches
PAYLOAD_BYTES = 2 * 1024 * 1024
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
BOOT_MARK = "tb.boot=vmdk"
EFI_BOOT_MARK = "tb.boot=vmdk-efi"
EFI_STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")  # systemd-boot-efi
# OVMF (the controller's ovmf package) and the descriptors libvirt picks UEFI firmware by
OVMF_FILES = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd",
              "/usr/share/qemu/firmware/60-edk2-x86_64.json")
SUBFORMATS = ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized")


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def payload() -> bytes:
    """A deterministic pattern no guest writes by itself."""
    out = bytearray()
    block = 0
    while len(out) < PAYLOAD_BYTES:
        out += hashlib.sha256(b"kvmlab-vmdk-payload-%d" % block).digest()
        block += 1
    return bytes(out[:PAYLOAD_BYTES])


def bootable_disk(art: GuestArtifacts, out: Path, cmdline: str) -> Path:
    """A raw BIOS-bootable disk image of DISK_MIB MiB that boots the lab guest with `cmdline` (plus BOOT_MARK)."""
    with tempfile.TemporaryDirectory(prefix="kvmlab-vmdk-") as tmp:
        fat = _fat(Path(tmp) / "fat.img", "TBBOOT")
        cfg = Path(tmp) / "syslinux.cfg"
        cfg.write_text(f"SERIAL 0 115200\nDEFAULT tb\nPROMPT 0\nTIMEOUT 0\nLABEL tb\n  LINUX vmlinuz\n"
                       f"  INITRD initrd.img\n  APPEND {cmdline} {BOOT_MARK}\n")
        _run(["syslinux", "--install", fat])
        _run(["mcopy", "-i", fat, art.kernel, "::vmlinuz"])
        _run(["mcopy", "-i", fat, art.initrd, "::initrd.img"])
        _run(["mcopy", "-i", fat, cfg, "::syslinux.cfg"])
        # one active FAT16 (LBA) partition
        return _disk(out, fat, SYSLINUX_MBR.read_bytes()[:440], 0x0E, active=True)


def _fat(path: Path, label: str) -> Path:
    """The FAT16 file system of the partition (from PARTITION_START_MIB to the end of the disk)."""
    fat_sectors = (DISK_MIB - PARTITION_START_MIB) * 2048
    _run(["mkfs.vfat", "-F", "16", "-n", label, "-h", str(PARTITION_START_MIB * 2048), "-C", path,
          str(fat_sectors // 2)])
    return path


def _disk(out: Path, fat: Path, boot_code: bytes, partition_type: int, active: bool) -> Path:
    """The disk: an MBR with one partition holding fat, and the payload at PAYLOAD_OFFSET."""
    start = PARTITION_START_MIB * 2048
    fat_sectors = (DISK_MIB - PARTITION_START_MIB) * 2048
    with open(out, "wb") as disk:
        disk.truncate(DISK_MIB * 1024 * 1024)
        mbr = bytearray(512)
        mbr[:len(boot_code)] = boot_code
        # CHS fields say "use LBA"
        mbr[446:462] = struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", partition_type,
                                   b"\xfe\xff\xff", start, fat_sectors)
        mbr[510:512] = b"\x55\xaa"
        disk.write(mbr)
        disk.seek(PAYLOAD_OFFSET)
        disk.write(payload())
        disk.seek(start * 512)
        with open(fat, "rb") as src:
            shutil.copyfileobj(src, disk)
    return out


def unified_kernel(art: GuestArtifacts, cmdline: str, out: Path) -> Path:
    """One EFI binary (systemd's stub with the kernel, initramfs and command line as sections), which the
    firmware starts from the removable-media path \\EFI\\BOOT\\BOOTX64.EFI with no boot entry."""
    linux_at = 0x2000000
    initrd_at = (linux_at + art.kernel.stat().st_size + 0xFFFFF) & ~0xFFFFF
    with tempfile.TemporaryDirectory(prefix="kvmlab-uki-") as tmp:
        osrel = Path(tmp) / "os-release"
        osrel.write_text('ID=kvmlab\nPRETTY_NAME="kvm.migration lab guest"\n')
        cmd = Path(tmp) / "cmdline"
        cmd.write_text(cmdline)
        _run(["objcopy", "--add-section", f".osrel={osrel}", "--change-section-vma", ".osrel=0x20000",
              "--add-section", f".cmdline={cmd}", "--change-section-vma", ".cmdline=0x30000",
              "--add-section", f".linux={art.kernel}", "--change-section-vma", f".linux={linux_at:#x}",
              "--add-section", f".initrd={art.initrd}", "--change-section-vma", f".initrd={initrd_at:#x}",
              EFI_STUB, out])
    return out


def efi_bootable_disk(art: GuestArtifacts, out: Path, cmdline: str) -> Path:
    """As bootable_disk, for UEFI: the FAT partition is an EFI system partition holding only a unified kernel
    at \\EFI\\BOOT\\BOOTX64.EFI whose command line carries EFI_BOOT_MARK (syslinux is not on the disk at all)."""
    with tempfile.TemporaryDirectory(prefix="kvmlab-efi-") as tmp:
        uki = unified_kernel(art, f"{cmdline} {EFI_BOOT_MARK}", Path(tmp) / "BOOTX64.EFI")
        fat = _fat(Path(tmp) / "fat.img", "TBESP")
        _run(["mmd", "-i", fat, "::EFI", "::EFI/BOOT"])
        _run(["mcopy", "-i", fat, uki, "::EFI/BOOT/BOOTX64.EFI"])
        return _disk(out, fat, b"", 0xEF, active=False)


def to_vmdk(raw: Path, out: Path, subformat: str) -> list[Path]:
    """qemu-img convert -O vmdk with one subformat; returns every file it made (descriptor first)."""
    before = set(out.parent.iterdir())
    _run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}", raw, out])
    made = sorted(set(out.parent.iterdir()) - before)
    return [out] + [p for p in made if p != out]


def delta(parent: Path, out: Path, writes: list[tuple[int, bytes]]) -> Path:
    """A snapshot delta on `parent` (as ESXi makes NAME-000001.vmdk) holding `writes` (offset, data)."""
    _run(["qemu-img", "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", parent.name, out], cwd=out.parent)
    for offset, data in writes:
        pattern = out.parent / ".delta-write"
        pattern.write_bytes(data)
        _run(["qemu-io", "-f", "vmdk", "-c", f"write -s {pattern} {offset} {len(data)}", out])
        pattern.unlink()
    return out


def vmx_text(display_name: str, disk_file: str, *, memory_mib: int = 192, vcpus: int = 1, mac: str = "",
             network: str = "VM Network", guest_os: str = "other5xlinux-64", firmware: str = "bios",
             extra: dict | None = None) -> str:
    """A .vmx as ESXi 7 writes one for a VM with one pvscsi disk and one vmxnet3 adapter."""
    entries = {
        ".encoding": "UTF-8",
        "config.version": "8",
        "virtualHW.version": "19",
        "displayName": display_name,
        "guestOS": guest_os,
        "memSize": str(memory_mib),
        "numvcpus": str(vcpus),
        "cpuid.coresPerSocket": "1",
        "firmware": firmware,
        "pciBridge0.present": "TRUE",
        "svga.present": "TRUE",
        "scsi0.virtualDev": "pvscsi",
        "scsi0.present": "TRUE",
        "scsi0:0.deviceType": "scsi-hardDisk",
        "scsi0:0.fileName": disk_file,
        "scsi0:0.present": "TRUE",
        "ethernet0.virtualDev": "vmxnet3",
        "ethernet0.networkName": network,
        "ethernet0.addressType": "static" if mac else "generated",
        "ethernet0.address" if mac else "ethernet0.generatedAddress": mac or "00:0c:29:aa:bb:cc",
        "ethernet0.present": "TRUE",
        "usb.present": "TRUE",
        "ehci.present": "TRUE",
        "sound.present": "TRUE",
        "sata0.present": "TRUE",
        "sata0:0.deviceType": "cdrom-image",
        "sata0:0.fileName": "/vmfs/volumes/datastore1/iso/debian-12.iso",
        "sata0:0.present": "TRUE",
        "floppy0.present": "FALSE",
        "uuid.bios": "56 4d 3a 6b 21 9c 0e 41-8f 5a 1b 2c 3d 4e 5f 60",
        "tools.syncTime": "FALSE",
    }
    entries.update(extra or {})

    def escape(value: str) -> str:
        return "".join(f"|{ord(c):02X}" if c in '"|#' else c for c in value)
    return "".join(f'{key} = "{escape(value)}"\n' for key, value in entries.items())


def esxi_vmfs(raw: Path, out: Path) -> list[Path]:
    """The descriptor + -flat.vmdk pair ESXi keeps on a VMFS datastore (createType "vmfs", one VMFS extent)."""
    files = to_vmdk(raw, out, "monolithicFlat")
    text = out.read_text()
    text = text.replace('createType="monolithicFlat"', 'createType="vmfs"')
    text = "\n".join(line.replace(" FLAT ", " VMFS ").rsplit(" 0", 1)[0] if line.startswith("RW ") else line
                     for line in text.splitlines()) + "\n"
    text = text.replace('ddb.adapterType = "ide"', 'ddb.adapterType = "lsilogic"')
    out.write_text(text)
    return files
