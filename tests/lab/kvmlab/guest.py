"""The lab's test guest: build it, describe it to libvirt, and judge what it left behind.

The guest is a Debian cloud kernel plus a tiny initramfs (busybox /init and the static
``tbguest`` workload from ``tests/lab/guest/``).  Once a second ``tbguest`` writes record
``REC <n> boot=<id> up=<ms>`` to sector ``RECORD_BASE_SECTOR + n`` of its virtio disk
(O_DIRECT|O_SYNC) and only then prints ``TICK <n> boot=<id> up=<s.mmm>`` on its serial
console.  After a migration the console log(s) and the disk together show whether the guest
kept running (consecutive ticks, one boot id) and lost no acknowledged write (a record for
every tick).  A second serial port (a unix socket on the host) takes line commands:
``status``, ``dirty <MB> <RATE>``, ``sync``, ``poweroff``.

Standard library only; no Ansible imports.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

# Where the kernel and initrd live inside every lab host.  Direct-kernel-boot guests
# reference these paths, so they must be the same on the migration destination.
GUEST_DIR_IN_HOST = "/var/lib/libvirt/kvmlab"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
HOST_KERNEL_PATH = f"{GUEST_DIR_IN_HOST}/{KERNEL_NAME}"
HOST_INITRD_PATH = f"{GUEST_DIR_IN_HOST}/{INITRD_NAME}"

# Tick n's record is at sector RECORD_BASE_SECTOR + n (512-byte sectors), i.e. from 1 MiB on.
RECORD_BASE_SECTOR = 2048
SECTOR_SIZE = 512
EMPTY_RUN_STOP = 64  # parse_records stops after this many consecutive empty sectors

SOURCE_DIR = Path(__file__).resolve().parent.parent / "guest"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
MODULE_ROOTS = ("virtio_pci", "virtio_blk", "virtio_net")  # plus whatever they depend on
CFLAGS = ("-static", "-O2", "-pthread", "-s", "-Wall", "-Wextra")
REQUIRED_KERNEL_CONFIG = ("CONFIG_SERIAL_8250_CONSOLE=y", "CONFIG_DEVTMPFS=y",
                          "CONFIG_BLK_DEV_INITRD=y", "CONFIG_RD_GZIP=y")

# Everything about how the artifacts are made; part of the cache key.  Bump the
# version when the recipe in build() changes in a way these fields do not show.
BUILD_RECIPE = (
    "kvmlab-guest-recipe-v2;"
    f"meta={KERNEL_META_PACKAGE};modules={','.join(MODULE_ROOTS)};"
    f"cc=gcc {' '.join(CFLAGS)};"
    "initramfs=cpio-newc-R0:0+gzip-1;busybox-links=/bin"
)

Log = Callable[[str], None]


@dataclass
class GuestArtifacts:
    kernel: Path
    initrd: Path
    kernel_version: str


# --------------------------------------------------------------------------------------
# build


def _run(cmd: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None,
         what: str | None = None) -> bytes:
    """Run a command, return its stdout; RuntimeError with its stderr if it fails."""
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, input=stdin, capture_output=True,
                              check=False)
    except FileNotFoundError as exc:
        raise RuntimeError(f"{what or 'guest build'}: command not found: {cmd[0]}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(
            f"{what or 'guest build'}: command failed (exit {proc.returncode}): "
            f"{' '.join(cmd)}\n{err[-3000:]}")
    return proc.stdout


def resolve_kernel_package() -> tuple[str, str]:
    """(package name, package version) of the kernel that linux-image-cloud-amd64 pulls in."""
    what = f"resolving {KERNEL_META_PACKAGE}"
    show = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE],
                what=what).decode()
    m = re.search(r"^Depends:.*?\b(linux-image-\d[^\s,(]*)\s*(?:\(=\s*([^\s)]+)\))?",
                  show, re.M)
    if not m:
        raise RuntimeError(f"{what}: no linux-image-<version> dependency in "
                           f"'apt-cache show {KERNEL_META_PACKAGE}' (run apt-get update?):"
                           f"\n{show}")
    name, version = m.group(1), m.group(2)
    if not version:
        show = _run(["apt-cache", "show", "--no-all-versions", name], what=what).decode()
        v = re.search(r"^Version:\s*(\S+)", show, re.M)
        if not v:
            raise RuntimeError(f"{what}: no Version in 'apt-cache show {name}'")
        version = v.group(1)
    return name, version


def _find_static_busybox() -> Path:
    candidates = [Path("/bin/busybox"), Path("/usr/bin/busybox")]
    which = shutil.which("busybox")
    if which:
        candidates.append(Path(which))
    for cand in candidates:
        if cand.is_file() and _elf_is_static(cand.read_bytes()):
            return cand.resolve()
    raise RuntimeError("guest build: no statically linked busybox found "
                       "(apt-get install busybox-static)")


def _elf_is_static(data: bytes) -> bool:
    """True for an ELF64 little-endian executable without a PT_INTERP program header."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _elf_section(data: bytes, wanted: str) -> bytes | None:
    """Contents of a named section of an ELF64 little-endian file (kernel modules)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _name, str_off, str_size = header(shstrndx)
    strtab = data[str_off:str_off + str_size]
    for i in range(shnum):
        name_off, offset, size = header(i)
        name = strtab[name_off:strtab.index(b"\0", name_off)].decode()
        if name == wanted:
            return data[offset:offset + size]
    return None


def _module_depends(ko: bytes) -> list[str]:
    modinfo = _elf_section(ko, ".modinfo") or b""
    for entry in modinfo.split(b"\0"):
        if entry.startswith(b"depends="):
            return [d.replace("-", "_") for d in entry[8:].decode().split(",") if d]
    return []


def _module_name(path: Path) -> str:
    name = path.name
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("-", "_")
    raise ValueError(path)


def _read_module(path: Path) -> bytes:
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".ko.zst"):
        return _run(["zstd", "-dc", str(path)], what=f"decompressing {name}")
    return path.read_bytes()


def _resolve_modules(moddir: Path, roots: Iterable[str]) -> list[tuple[str, bytes]]:
    """Loadable modules needed for roots, dependencies first; built-in ones left out."""
    builtin: set[str] = set()
    builtin_list = moddir / "modules.builtin"
    if builtin_list.is_file():
        for line in builtin_list.read_text().splitlines():
            if line.strip():
                builtin.add(_module_name(Path(line.strip())))
    files: dict[str, Path] = {}
    for path in (moddir / "kernel").rglob("*.ko*"):
        try:
            files.setdefault(_module_name(path), path)
        except ValueError:
            pass

    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done or name in builtin:
            return
        if name in chain:
            raise RuntimeError(f"guest build: module dependency loop: {' -> '.join(chain)}")
        if name not in files:
            raise RuntimeError(f"guest build: kernel module {name} is neither built in "
                               f"nor present under {moddir}")
        data = _read_module(files[name])
        for dep in _module_depends(data):
            visit(dep, chain + (name,))
        done.add(name)
        order.append((name, data))

    for root in roots:
        visit(root, ())
    return order


def _sources_hash(kernel_pkg: str, kernel_pkg_version: str, busybox: Path) -> str:
    h = hashlib.sha256()
    for label, data in (
        ("tbguest.c", (SOURCE_DIR / "tbguest.c").read_bytes()),
        ("init", (SOURCE_DIR / "init").read_bytes()),
        ("recipe", BUILD_RECIPE.encode()),
        ("kernel", f"{kernel_pkg}={kernel_pkg_version}".encode()),
        ("busybox", hashlib.sha256(busybox.read_bytes()).hexdigest().encode()),
    ):
        h.update(label.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()[:16]


def _cached(final: Path) -> GuestArtifacts | None:
    try:
        meta = json.loads((final / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = final / KERNEL_NAME, final / INITRD_NAME
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return GuestArtifacts(kernel=kernel, initrd=initrd, kernel_version=meta["kernel_version"])


def build(cache_dir: Path, log: Log = print) -> GuestArtifacts:
    """Build (or reuse from cache_dir/guest/<hash>/) the guest kernel and initramfs."""
    t_start = time.monotonic()
    cache_dir = Path(cache_dir)
    for src in ("tbguest.c", "init"):
        if not (SOURCE_DIR / src).is_file():
            raise RuntimeError(f"guest build: missing source {SOURCE_DIR / src}")
    busybox = _find_static_busybox()
    pkg, pkg_version = resolve_kernel_package()
    key = _sources_hash(pkg, pkg_version, busybox)
    guest_cache = cache_dir / "guest"
    final = guest_cache / key
    found = _cached(final)
    if found:
        log(f"guest: cached build {final} (kernel {found.kernel_version})")
        return found

    log(f"guest: building {final} (kernel package {pkg} {pkg_version})")
    guest_cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=guest_cache))
    try:
        out = tmp / "out"
        out.mkdir()
        kernel_version = _build_into(out, tmp, pkg, busybox, log)
        meta = {
            "kernel_version": kernel_version,
            "kernel_package": pkg,
            "kernel_package_version": pkg_version,
            "busybox": str(busybox),
            "recipe": BUILD_RECIPE,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - t_start, 1),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(out, final)
        except OSError:
            # another build finished first (or a stale incomplete directory is in the way)
            found = _cached(final)
            if found:
                return found
            shutil.rmtree(final, ignore_errors=True)
            os.rename(out, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _cached(final)
    if not found:
        raise RuntimeError(f"guest build: {final} is incomplete after the build")
    log(f"guest: built in {time.monotonic() - t_start:.1f} s: "
        f"kernel {found.kernel_version}, initrd {found.initrd.stat().st_size // 1024} KiB")
    return found


def _build_into(out: Path, tmp: Path, pkg: str, busybox: Path, log: Log) -> str:
    """Make out/vmlinuz and out/initrd.img; return the kernel version (uname -r)."""
    # 1. kernel package
    debdir = tmp / "deb"
    debdir.mkdir()
    log(f"guest: apt-get download {pkg}")
    _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg], cwd=debdir,
         what="downloading the guest kernel")
    debs = sorted(debdir.glob("*.deb"))
    if len(debs) != 1:
        raise RuntimeError(f"guest build: expected one .deb in {debdir}, found {debs}")
    extract = tmp / "kernel"
    _run(["dpkg-deb", "-x", str(debs[0]), str(extract)], what="extracting the guest kernel")
    vmlinuz = sorted((extract / "boot").glob("vmlinuz-*"))
    if len(vmlinuz) != 1:
        raise RuntimeError(f"guest build: expected one boot/vmlinuz-* in {debs[0].name}, "
                           f"found {[p.name for p in vmlinuz]}")
    kernel_version = vmlinuz[0].name[len("vmlinuz-"):]
    config = extract / "boot" / f"config-{kernel_version}"
    if config.is_file():
        lines = set(config.read_text().splitlines())
        missing = [opt for opt in REQUIRED_KERNEL_CONFIG if opt not in lines]
        if missing:
            raise RuntimeError(f"guest build: kernel {kernel_version} lacks {missing}")
    moddir = next((d for d in (extract / "lib/modules" / kernel_version,
                               extract / "usr/lib/modules" / kernel_version) if d.is_dir()),
                  None)
    if moddir is None:
        raise RuntimeError(f"guest build: no modules directory for {kernel_version}")
    modules = _resolve_modules(moddir, MODULE_ROOTS)
    log(f"guest: kernel {kernel_version}, modules: {' '.join(n for n, _data in modules) or '-'}")

    # 2. workload
    tbguest = tmp / "tbguest"
    _run(["gcc", *CFLAGS, "-o", str(tbguest), str(SOURCE_DIR / "tbguest.c")],
         what="compiling tbguest")
    if not _elf_is_static(tbguest.read_bytes()):
        raise RuntimeError("guest build: tbguest came out dynamically linked")

    # 3. initramfs tree
    root = tmp / "root"
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, root / "bin/busybox")
    shutil.copyfile(tbguest, root / "bin/tbguest")
    shutil.copyfile(SOURCE_DIR / "init", root / "init")
    for exe in ("bin/busybox", "bin/tbguest", "init"):
        os.chmod(root / exe, 0o755)
    applets = _run([str(busybox), "--list"], what="listing busybox applets").decode().split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", root / "bin" / applet)
    for name, data in modules:
        (root / "lib/modules" / f"{name}.ko").write_bytes(data)
    (root / "etc/tb-modules").write_text("".join(f"{name}\n" for name, _data in modules))

    # 4. find . | cpio -o -H newc | gzip -1
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        names.append(rel)
        names.extend(os.path.join(rel, f) for f in sorted(filenames + [
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]))
    archive = _run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--reproducible", "--quiet"],
                   cwd=root, stdin="".join(n + "\n" for n in names).encode(),
                   what="packing the initramfs")
    (out / INITRD_NAME).write_bytes(gzip.compress(archive, compresslevel=1, mtime=0))
    shutil.copyfile(vmlinuz[0], out / KERNEL_NAME)
    return kernel_version


# --------------------------------------------------------------------------------------
# libvirt domain

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DISK_CACHES = {"none", "writeback", "writethrough", "directsync", "unsafe", "default"}
_DISK_FORMATS = {"qcow2", "raw"}


def kernel_cmdline(dirty_mb: int = 0, dirty_rate: int = 0, extra_cmdline: str = "") -> str:
    """The guest kernel command line (also usable with plain qemu -append)."""
    for label, value in (("dirty_mb", dirty_mb), ("dirty_rate", dirty_rate)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{label} must be a non-negative int, not {value!r}")
    cmdline = (f"console=ttyS0 loglevel=3 panic=-1 "
               f"tb.dirty_mb={dirty_mb} tb.dirty_rate={dirty_rate}")
    extra = " ".join(extra_cmdline.split())
    return f"{cmdline} {extra}" if extra else cmdline


def domain_xml(name: str, disk_path: str, *, memory_mib: int = 192, dirty_mb: int = 0,
               dirty_rate: int = 0, disk_cache: str = "none", disk_format: str = "qcow2",
               extra_cmdline: str = "") -> str:
    """libvirt domain XML for the test guest (TCG, 1 vCPU, direct kernel boot)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"bad domain name {name!r} (letters, digits, '_', '.', '-'; ≤64)")
    if not disk_path.startswith("/"):
        raise ValueError(f"disk_path must be absolute, not {disk_path!r}")
    if disk_cache not in _DISK_CACHES:
        raise ValueError(f"disk_cache must be one of {sorted(_DISK_CACHES)}, not {disk_cache!r}")
    if disk_format not in _DISK_FORMATS:
        raise ValueError(f"disk_format must be one of {sorted(_DISK_FORMATS)}, "
                         f"not {disk_format!r}")
    if not isinstance(memory_mib, int) or memory_mib < 64:
        raise ValueError(f"memory_mib must be an int >= 64, not {memory_mib!r}")
    cmdline = kernel_cmdline(dirty_mb, dirty_rate, extra_cmdline)
    console_log = f"/var/log/libvirt/qemu/{name}-console.log"
    ctl_socket = f"/var/lib/libvirt/qemu/{name}.ctl"
    xml = f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(HOST_KERNEL_PATH)}</kernel>
    <initrd>{escape(HOST_INITRD_PATH)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type={quoteattr(disk_format)} cache={quoteattr(disk_cache)}/>
      <source file={quoteattr(disk_path)}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <serial type='pty'>
      <log file={quoteattr(console_log)} append='on'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path={quoteattr(ctl_socket)}/>
      <target port='1'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
"""
    try:
        ET.fromstring(xml)
    except ET.ParseError as exc:  # pragma: no cover - the template is fixed
        raise RuntimeError(f"domain_xml produced malformed XML: {exc}\n{xml}") from exc
    return xml


# --------------------------------------------------------------------------------------
# judging a run

# A complete tick line: the whole "TICK <n> boot=<8 hex> up=<s.mmm>" followed by a newline.
_TICK_RE = re.compile(r"(?<![\w-])TICK (\d+) boot=([0-9a-f]{8}) up=\d+\.\d{3}[ \t]*(?=\n)")
_REC_RE = re.compile(rb"REC (\d+) boot=([0-9a-f]{8}) up=(\d+)\n")


def parse_ticks(console_text: str) -> list[tuple[int, str]]:
    """Every complete TICK line, in order, as (n, boot_id).

    Carriage returns are dropped first, so CRLF endings, stray CRs, and a line split
    across two console logs that the caller concatenated all parse; a truncated last
    line (no newline yet) is not complete and is left out.
    """
    text = console_text.replace("\r", "")
    return [(int(m.group(1)), m.group(2)) for m in _TICK_RE.finditer(text)]


def parse_records(raw: bytes) -> dict[int, str]:
    """{n: boot_id} of every valid record in a RAW disk image.

    Scans from sector RECORD_BASE_SECTOR on and stops after EMPTY_RUN_STOP consecutive
    all-zero sectors (or at the end of the image).  A record is valid when the sector
    holds exactly ``REC <n> boot=<id> up=<ms>\\n`` followed by zeros and n matches the
    sector it is in.
    """
    view = memoryview(raw)
    zero = bytes(SECTOR_SIZE)
    records: dict[int, str] = {}
    empty_run = 0
    sector = RECORD_BASE_SECTOR
    while empty_run < EMPTY_RUN_STOP:
        start = sector * SECTOR_SIZE
        chunk = bytes(view[start:start + SECTOR_SIZE])
        if len(chunk) < SECTOR_SIZE:
            break
        if chunk == zero:
            empty_run += 1
        else:
            empty_run = 0
            m = _REC_RE.match(chunk)
            if (m and not chunk[m.end():].strip(b"\0")
                    and int(m.group(1)) == sector - RECORD_BASE_SECTOR):
                records[int(m.group(1))] = m.group(2).decode()
        sector += 1
    return records


def _ranges(numbers: Sequence[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'"""
    parts: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def check_continuity(ticks: Sequence[tuple[int, str]], records: dict[int, str],
                     *, max_problems: int = 50) -> list[str]:
    """Human-readable problems with a run (an empty list means it is good).

    Ticks must be consecutive (no gaps, repeats, or restarts), all from one boot, and
    every tick n must have disk record n from the same boot.
    """
    if not ticks:
        return ["no complete TICK line on the console"]
    problems: list[str] = []
    for (pn, pb), (n, b) in zip(ticks, ticks[1:]):
        if b != pb:
            problems.append(f"boot id changed from {pb} to {b} between tick {pn} and tick {n}:"
                            f" the guest rebooted")
        elif n == pn + 1:
            continue
        elif n == 1:
            problems.append(f"tick counter restarted at 1 after tick {pn}: "
                            f"the guest (or its workload) restarted")
        elif n > pn + 1:
            missing = n - pn - 1
            problems.append(f"gap: tick {pn} is followed by tick {n} "
                            f"({missing} tick{'s' if missing > 1 else ''} missing)")
        elif n == pn:
            problems.append(f"tick {n} repeated")
        else:
            problems.append(f"ticks went backwards: tick {pn} is followed by tick {n}")
    boots = list(dict.fromkeys(b for _n, b in ticks))
    if len(boots) > 1:
        problems.append(f"ticks come from {len(boots)} boots ({', '.join(boots)}): "
                        f"the guest rebooted")

    no_record = [n for n, _b in ticks if n not in records]
    if no_record:
        problems.append(f"{len(no_record)} tick(s) without a disk record: {_ranges(no_record)}")
    wrong: dict[tuple[str, str], list[int]] = {}
    for n, b in ticks:
        if n in records and records[n] != b:
            wrong.setdefault((b, records[n]), []).append(n)
    for (console_boot, disk_boot), ns in wrong.items():
        problems.append(f"{len(ns)} tick(s) printed by boot {console_boot} but their disk "
                        f"records are from boot {disk_boot}: {_ranges(ns)}")
    if len(problems) > max_problems:
        extra = len(problems) - max_problems
        problems = problems[:max_problems] + [f"... and {extra} more problems"]
    return problems


# --------------------------------------------------------------------------------------
# CLI (run from tests/lab:  python3 -m kvmlab.guest build --cache DIR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m kvmlab.guest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_build = sub.add_parser("build", help="build (or reuse) the guest kernel and initramfs")
    p_build.add_argument("--cache", required=True, type=Path, help="cache directory")
    p_xml = sub.add_parser("xml", help="print the libvirt domain XML")
    p_xml.add_argument("name")
    p_xml.add_argument("disk")
    p_xml.add_argument("--dirty-mb", type=int, default=0)
    p_xml.add_argument("--dirty-rate", type=int, default=0)
    p_check = sub.add_parser("check", help="check console log(s) against a RAW disk image")
    p_check.add_argument("--disk", required=True, type=Path, help="RAW disk image")
    p_check.add_argument("console", nargs="+", type=Path,
                         help="console log file(s), concatenated in this order")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        try:
            art = build(args.cache, log=lambda msg: print(msg, file=sys.stderr))
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"kernel={art.kernel}")
        print(f"initrd={art.initrd}")
        print(f"kernel_version={art.kernel_version}")
        return 0
    if args.cmd == "xml":
        print(domain_xml(args.name, args.disk, dirty_mb=args.dirty_mb,
                         dirty_rate=args.dirty_rate), end="")
        return 0
    text = "".join(p.read_text(errors="replace") for p in args.console)
    ticks = parse_ticks(text)
    records = parse_records(args.disk.read_bytes())
    problems = check_continuity(ticks, records)
    first = f"{ticks[0][0]}" if ticks else "-"
    last = f"{ticks[-1][0]}" if ticks else "-"
    print(f"ticks: {len(ticks)} ({first}..{last}), records: {len(records)}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
