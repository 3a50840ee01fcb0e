"""The test guest inside the lab hosts: install its kernel, define and start it, read its proof of life.

Everything here goes through the hosts' own tools (virsh, qemu-img) via nsenter, never through
the collection, so the tests check the collection against an independent view."""

from __future__ import annotations

import re
import shlex
import time

from . import guest
from .lab import Lab, LabError

IMAGES = "/var/lib/libvirt/images"


def install_guest(lab: Lab) -> guest.GuestArtifacts:
    """Build (or reuse) the guest's kernel and initramfs and put them at the same path in every host."""
    art = guest.build(lab.cache)
    for h in lab.hosts:
        if h.profile != "ready" and not (h.root / "usr/bin/qemu-img").exists():
            continue
        target = h.root / guest.GUEST_DIR_IN_HOST.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for src, name in ((art.kernel, "vmlinuz"), (art.initrd, "initrd.img")):
            (target / name).write_bytes(src.read_bytes())
            (target / name).chmod(0o644)
    return art


class LabGuest:
    """One test guest (a busybox Linux that ticks, writes a disk record per tick and dirties RAM)."""

    def __init__(self, lab: Lab, name: str = "tbvm", memory_mib: int = 192, disk_mib: int = 64,
                 dirty_mb: int = 0, dirty_rate: int = 0, disk_cache: str = "none", disk_dir: str = IMAGES,
                 prefill_mib: int = 0, template: str = "", nbd: tuple | None = None):
        self.lab = lab
        self.name = name
        self.memory_mib = memory_mib
        self.disk_mib = disk_mib
        self.dirty_mb = dirty_mb
        self.dirty_rate = dirty_rate
        self.disk_cache = disk_cache
        # MiB of pattern data written at 8 MiB into the image before boot (away from the tick records at
        # 1 MiB), so that the image really allocates that much.
        self.prefill_mib = prefill_mib
        # A base image (created with the pattern if missing) that the disk is a qcow2 overlay on.
        self.template = template
        # (address, port, export): the disk is a network disk served by qemu-nbd instead of a file.
        self.nbd = nbd
        self.disk_path = f"{disk_dir}/{name}.qcow2"
        self.console_path = f"/var/log/libvirt/qemu/{name}-console.log"
        self.ctl_path = f"/var/lib/libvirt/qemu/{name}.ctl"

    # ------------------------------------------------------------ lifecycle
    def xml(self) -> str:
        xml = guest.domain_xml(self.name, self.disk_path, memory_mib=self.memory_mib, dirty_mb=self.dirty_mb,
                               dirty_rate=self.dirty_rate, disk_cache=self.disk_cache)
        if self.nbd:
            address, port, export = self.nbd
            start = xml.index("    <disk type='file'")
            end = xml.index("</disk>", start) + len("</disk>")
            xml = xml[:start] + (
                "    <disk type='network' device='disk'>\n"
                f"      <driver name='qemu' type='raw' cache='{self.disk_cache}'/>\n"
                f"      <source protocol='nbd' name='{export}'><host name='{address}' port='{port}'/></source>\n"
                "      <target dev='vda' bus='virtio'/>\n    </disk>") + xml[end:]
        return xml

    @property
    def disk_uri(self) -> str:
        """What qemu-img reads the guest's disk from, on the host it runs on."""
        if self.nbd:
            address, port, export = self.nbd
            return f"nbd://{address}:{port}/{export}"
        return self.disk_path

    def define(self, host: str, start: bool = True) -> None:
        install_guest(self.lab)
        xml_file = f"/root/{self.name}.xml"
        self.lab.exec(host, ["sh", "-c", f"cat > {xml_file}"], input=self.xml())
        disk = shlex.quote(self.disk_path)
        if self.nbd:
            make_disk = "true"
        elif self.template:
            base = shlex.quote(self.template)
            make_disk = (f"mkdir -p $(dirname {base}) && {{ test -e {base} || {{ qemu-img create -q -f qcow2 {base} "
                         f"{self.disk_mib}M && qemu-io -f qcow2 -c 'write -P 0x5a 8M 4M' {base} >/dev/null; }}; }} && "
                         f"qemu-img create -q -f qcow2 -F qcow2 -b {base} {disk}")
        else:
            make_disk = f"qemu-img create -q -f qcow2 {disk} {self.disk_mib}M"
        self.lab.exec(host, f"mkdir -p {shlex.quote(self.disk_path.rsplit('/', 1)[0])} && {make_disk} && "
                            f"rm -f {self.console_path} && virsh -q define {xml_file}")
        if self.prefill_mib:
            self.lab.exec(host, ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 8M {self.prefill_mib}M",
                                 self.disk_path])
        if start:
            self.lab.exec(host, ["virsh", "-q", "start", self.name])

    def start_and_wait(self, host: str, ticks: int = 2, timeout: float = 90) -> None:
        self.define(host)
        self.wait_ticks(host, ticks, timeout)

    def remove_everywhere(self) -> None:
        """Destroy and undefine the guest and delete its files (and its template) on every host."""
        files = " ".join(shlex.quote(f) for f in (self.disk_path, self.template) if f)
        for h in self.lab.hosts:
            self.lab.exec(h.name, f"virsh -q destroy {self.name} >/dev/null 2>&1; "
                                  f"virsh -q undefine --nvram {self.name} >/dev/null 2>&1; "
                                  f"rm -f {files} {self.console_path} /root/{self.name}.xml", check=False)

    # ------------------------------------------------------------ observation
    def state(self, host: str) -> str:
        """'running', 'shut off', ... or 'absent'."""
        proc = self.lab.exec(host, ["virsh", "domstate", self.name], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else "absent"

    def persistent(self, host: str) -> bool:
        out = self.lab.exec(host, ["virsh", "dominfo", self.name], check=False).stdout
        return bool(re.search(r"^Persistent:\s+yes", out, re.M))

    def console(self, host: str) -> str:
        return self.lab.exec(host, ["cat", self.console_path], check=False).stdout

    def ticks(self, host: str) -> list[tuple[int, str]]:
        return guest.parse_ticks(self.console(host))

    def wait_ticks(self, host: str, count: int, timeout: float = 60, after: int = 0) -> list[tuple[int, str]]:
        """Wait until the console on `host` shows `count` ticks numbered above `after`."""
        deadline = time.monotonic() + timeout
        ticks = []
        while time.monotonic() < deadline:
            ticks = [t for t in self.ticks(host) if t[0] > after]
            if len(ticks) >= count:
                return ticks
            if self.state(host) not in ("running", "paused"):
                break
            time.sleep(0.5)
        raise LabError(f"{self.name} on {host}: {len(ticks)} of {count} ticks after {after} within {timeout:.0f} s "
                       f"(state {self.state(host)}); console tail:\n{self.console(host)[-1500:]}")

    def records(self, host: str) -> dict[int, str]:
        """The tick records on the guest's disk image on `host`, read with qemu-img (force-share)."""
        raw = f"/root/{self.name}-records.raw"
        self.lab.exec(host, f"qemu-img convert -U -O raw {shlex.quote(self.disk_uri)} {raw}")
        data = (self.lab.host(host).root / raw.lstrip("/")).read_bytes()
        self.lab.exec(host, ["rm", "-f", raw])
        return guest.parse_records(data)

    def image_info(self, host: str, backing_chain: bool = False) -> dict | list:
        import json
        cmd = ["qemu-img", "info", "-U", "--output=json", self.disk_path]
        if backing_chain:
            cmd.insert(3, "--backing-chain")
        return json.loads(self.lab.exec(host, cmd).stdout)

    def pattern_intact(self, host: str) -> bool:
        """Whether the 4 MiB pattern at 8 MiB (written into the template, or by prefill) reads back through
        the disk image and its backing chain on `host`."""
        proc = self.lab.exec(host, ["qemu-io", "-U", "-r", "-f", "qcow2", "-c", "read -P 0x5a 8M 4M", self.disk_path],
                             check=False)
        return proc.returncode == 0 and "Pattern verification failed" not in proc.stdout + proc.stderr

    def control(self, host: str, command: str, timeout: float = 10) -> str:
        """Send one command on the guest's control channel and return its reply line."""
        script = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX); s.settimeout(%r); s.connect(%r)\n"
            "s.sendall((%r+'\\n').encode()); buf=b''\n"
            "while not buf.endswith(b'\\n'):\n"
            "    c=s.recv(256)\n"
            "    if not c: break\n"
            "    buf+=c\n"
            "print(buf.decode().strip())\n" % (timeout, self.ctl_path, command)
        )
        return self.lab.exec(host, ["python3", "-c", script], timeout=timeout + 5).stdout.strip()

    def proof(self, hosts: list[str]) -> dict:
        """Check that the guest never rebooted and lost no disk write, across the console logs of every
        host it ran on and the disk image on the one host it runs on now.

        A host's log holds each of its stints in turn (A -> B -> A appends to A's log), so ticks are
        merged by number.  A tick line cut in two by the switch-over is found in neither log; it is
        accepted only if the ticks around it come from different hosts and its disk record exists."""
        running = [h for h in hosts if self.state(h) == "running"]
        if len(running) != 1:
            return {"problems": [f"the guest runs on {running or 'no host'}, not on exactly one"]}
        per_host = {h: guest.parse_ticks(self.console(h)) for h in hosts}
        records = self.records(running[0])
        seen: dict[int, set] = {}
        where: dict[int, str] = {}
        problems = []
        for h, ticks in per_host.items():
            for n, boot in ticks:
                if n in where and where[n] != h:
                    problems.append(f"tick {n} printed on both {where[n]} and {h}: the guest ran in two places")
                seen.setdefault(n, set()).add(boot)
                where[n] = h
        merged = [(n, sorted(seen[n])[0]) for n in sorted(seen)]
        if merged:
            for n in range(merged[0][0], merged[-1][0]):
                if n in seen or n not in records:
                    continue
                if n - 1 in where and n + 1 in where and where[n - 1] != where[n + 1]:
                    seen[n] = {records[n]}
            merged = [(n, sorted(seen[n])[0]) for n in sorted(seen)]
        problems += guest.check_continuity(merged, records)
        return {
            "ticks": len(merged),
            "first_tick": merged[0][0] if merged else None,
            "last_tick": merged[-1][0] if merged else None,
            "boot_ids": sorted({b for bs in seen.values() for b in bs}),
            "records": len(records),
            "ticks_per_host": {h: (min(n for n, _b in t), max(n for n, _b in t)) if t else None
                               for h, t in per_host.items()},
            "problems": problems,
        }
