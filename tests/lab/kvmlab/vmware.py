"""VMware-style inputs made from the lab guest: a BIOS-bootable disk (MBR + syslinux on a FAT partition holding
the guest's kernel and initramfs), converted to each VMDK subformat with qemu-img, snapshot deltas, and a .vmx
written the way ESXi writes one.

The disk's first 64 MiB are left to the guest's tick records (from 1 MiB on, see guest.py); the FAT partition
starts at 64 MiB.  A data region at PAYLOAD_OFFSET holds a known pattern, so a test can prove every byte of the
source disk survived the conversion and the migration after it.

Standard library plus qemu-img, mkfs.vfat, syslinux and mtools on the controller."""

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
    fat_sectors = (DISK_MIB - PARTITION_START_MIB) * 2048
    start = PARTITION_START_MIB * 2048
    with tempfile.TemporaryDirectory(prefix="kvmlab-vmdk-") as tmp:
        fat = Path(tmp) / "fat.img"
        _run(["mkfs.vfat", "-F", "16", "-n", "TBBOOT", "-h", str(start), "-C", fat, str(fat_sectors // 2)])
        cfg = Path(tmp) / "syslinux.cfg"
        cfg.write_text(f"SERIAL 0 115200\nDEFAULT tb\nPROMPT 0\nTIMEOUT 0\nLABEL tb\n  LINUX vmlinuz\n"
                       f"  INITRD initrd.img\n  APPEND {cmdline} {BOOT_MARK}\n")
        _run(["syslinux", "--install", fat])
        _run(["mcopy", "-i", fat, art.kernel, "::vmlinuz"])
        _run(["mcopy", "-i", fat, art.initrd, "::initrd.img"])
        _run(["mcopy", "-i", fat, cfg, "::syslinux.cfg"])
        with open(out, "wb") as disk:
            disk.truncate(DISK_MIB * 1024 * 1024)
            mbr = bytearray(512)
            code = SYSLINUX_MBR.read_bytes()[:440]
            mbr[:len(code)] = code
            # one active FAT16 (LBA) partition; CHS fields say "use LBA"
            mbr[446:462] = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x0E, b"\xfe\xff\xff", start, fat_sectors)
            mbr[510:512] = b"\x55\xaa"
            disk.write(mbr)
            disk.seek(PAYLOAD_OFFSET)
            disk.write(payload())
            disk.seek(start * 512)
            with open(fat, "rb") as src:
                shutil.copyfileobj(src, disk)
    return out


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
