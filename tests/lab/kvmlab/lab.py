"""Throwaway hypervisor hosts on this machine: systemd-nspawn containers with real systemd.

Every host boots a Debian root filesystem (an overlay over a cached template) with systemd as
PID 1, sshd, libvirtd and firewalld, on a private bridge.  The controller reaches the hosts over
SSH with pinned host keys.  Nothing here imports the collection: the lab is a test fixture of its
own, so a bug in the plugins cannot hide behind a shortcut in the lab.

The facts this is built on (and the pitfalls it avoids) are in docs/lab.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

LAB_ROOT = Path(os.environ.get("KVMLAB_ROOT", "/var/tmp/kvm-migration-lab"))
BRIDGE = os.environ.get("KVMLAB_BRIDGE", "kvmlab0")
NETWORK = ipaddress.ip_network(os.environ.get("KVMLAB_NETWORK", "10.88.0.0/24"))
GATEWAY = str(NETWORK.network_address + 1)
FIRST_HOST_OCTET = 11
HOST_NAMES = ["hv-a", "hv-b", "hv-c", "hv-d"]
CGROUP_SLICE = "kvmlab"
CGROUP_ROOTS = [Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd")]
MIRROR = "http://deb.debian.org/debian"
PROXY_PORT = 3142
DEFAULT_SUITE = os.environ.get("KVMLAB_SUITE", "trixie")

# What every host has, even a bare one: enough for systemd, sshd and Ansible.
BASE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "python3", "sudo",
    "ca-certificates", "procps", "less", "netbase",
]
# The collection whose hypervisor_prep role makes a bare host "ready": this lab lives in its repository.
REPO = Path(__file__).resolve().parents[3]
PREPARE_PLAYBOOK = REPO / "playbooks" / "prepare_hosts.yml"
PREPARE_ROLE = REPO / "roles" / "hypervisor_prep"
# How the role prepares the ready template.  The lab's bridge is a trusted private network: plain tcp without
# authentication (the role allows it only when told so).  Host UUIDs and root SSH trust are per host, so the lab
# gives them to each host at start instead; the hosts' /proc/sys is read-only, so the lab sets the post-copy
# sysctl from outside.
READY_ROLE_VARS = {
    "hypervisor_prep_transport": "tcp",
    "hypervisor_prep_tcp_auth": "none",
    "hypervisor_prep_tcp_allow_unauthenticated": True,
    "hypervisor_prep_firewall_install": True,
    "hypervisor_prep_host_uuid": "keep",
    "hypervisor_prep_ssh_trust": False,
    "hypervisor_prep_postcopy": False,
    "hypervisor_prep_packages_extra": ["rsync"],
}
# Bump when the template recipe changes, so cached templates are rebuilt.
TEMPLATE_RECIPE = "9"
PROFILES = ("bare", "ready")
# Where the shared directory appears in every host.
SHARED_IN_HOST = "/srv/shared"


class LabError(RuntimeError):
    """A lab operation failed; the message says which step and why."""


def log(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def run(cmd, *, check=True, capture=False, input=None, timeout=None, env=None, quiet=False):
    """Run a command; on failure raise LabError with the command and its stderr."""
    proc = subprocess.run(
        cmd, input=input, text=True, timeout=timeout, env=env, check=False,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE,
    )
    if check and proc.returncode != 0:
        raise LabError(f"command failed (rc={proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr.strip()}")
    return proc


@dataclasses.dataclass
class Host:
    name: str
    ip: str
    profile: str
    nspawn_pid: int = 0
    pid1: int = 0

    @property
    def dir(self) -> Path:
        return LAB_ROOT / "run" / "hosts" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"


class Lab:
    """The lab's state lives under LAB_ROOT: cache/ (templates, guest) survives teardown, run/ does not."""

    def __init__(self, root: Path = LAB_ROOT):
        self.root = root
        self.cache = root / "cache"
        self.rundir = root / "run"
        self.state_file = self.rundir / "state.json"
        self.ssh_dir = self.rundir / "ssh"
        self.hosts: list[Host] = []
        self.suite = DEFAULT_SUITE
        if self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            self.suite = data.get("suite", DEFAULT_SUITE)
            self.hosts = [Host(**h) for h in data["hosts"]]

    # ------------------------------------------------------------------ public API
    @property
    def inventory_path(self) -> Path:
        return self.rundir / "inventory.yml"

    @property
    def shared_dir(self) -> Path:
        return self.rundir / "shared"

    @property
    def key_path(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.ssh_dir / "known_hosts"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no lab host named {name!r} (hosts: {', '.join(h.name for h in self.hosts) or 'none'})")

    def is_up(self) -> bool:
        return bool(self.hosts) and all(_alive(h.pid1) for h in self.hosts)

    def up(self, count: int = 2, suite: str = DEFAULT_SUITE, profile: str = "ready", extra_bind: dict | None = None) -> None:
        """Start `count` hosts of one profile.  Any leftover of an earlier lab is removed first."""
        if profile not in PROFILES:
            raise LabError(f"unknown profile {profile!r}; choose one of {PROFILES}")
        if not 1 <= count <= len(HOST_NAMES):
            raise LabError(f"host count must be 1..{len(HOST_NAMES)}, got {count}")
        _require_tools()
        started = time.monotonic()
        self.down(quiet=True)
        template = self.template(suite, profile)
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.suite = suite
        self.hosts = [
            Host(name=HOST_NAMES[i], ip=str(NETWORK.network_address + FIRST_HOST_OCTET + i), profile=profile)
            for i in range(count)
        ]
        self._save()
        self._make_bridge()
        self._start_proxy()
        self._make_ssh_keys()
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        for h in self.hosts:
            self._prepare_host(h, template)
        self._write_known_hosts()
        for h in self.hosts:
            self._boot(h)
        self._save()
        for h in self.hosts:
            self._wait_ready(h)
        self._write_inventory()
        log(f"{count} {profile} {suite} host(s) up in {time.monotonic() - started:.1f} s; inventory: {self.inventory_path}")

    def down(self, quiet: bool = False) -> None:
        """Remove everything a lab made, whether or not state.json still describes it."""
        started = time.monotonic()
        names = {h.name for h in self.hosts} | set(HOST_NAMES)
        for h in self.hosts:
            if h.nspawn_pid and _alive(h.nspawn_pid):
                try:
                    os.kill(h.nspawn_pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(h.nspawn_pid) for h in self.hosts if h.nspawn_pid):
            time.sleep(0.2)
        for cg_root in CGROUP_ROOTS:
            _kill_cgroup_tree(cg_root / CGROUP_SLICE)
        self._kill_controller_ssh()
        self._stop_proxy()
        for pid in _pids_matching("qemu-nbd"):
            if str(self.rundir) in _cmdline(pid):
                _terminate(pid)
        _umount_below(self.rundir)
        for cg_root in CGROUP_ROOTS:
            _remove_cgroup_tree(cg_root / CGROUP_SLICE)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run(["ip", "link", "del", BRIDGE], check=False)
        for name in names:
            shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)
        if self.rundir.exists():
            shutil.rmtree(self.rundir)
        self.hosts = []
        if not quiet:
            log(f"lab down in {time.monotonic() - started:.1f} s")

    def exec(self, name: str, cmd: list[str] | str, *, check=True, input=None, timeout=120) -> subprocess.CompletedProcess:
        """Run a command inside a host (all of its namespaces), capturing output."""
        h = self.host(name)
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        proc = subprocess.run(
            ["nsenter", "-t", str(h.pid1), "-a", "--", *cmd],
            input=input, text=True, capture_output=True, timeout=timeout, check=False,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if check and proc.returncode != 0:
            raise LabError(f"{name}: {' '.join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def serve_nbd(self, export: str, size_mib: int = 64, port: int = 10809) -> tuple[str, int, str]:
        """Serve a fresh qcow2 image over NBD from the bridge address (a third party to the hosts): a disk
        that every host reaches over the network, i.e. shared storage without NFS.  Stopped by `down`."""
        directory = self.rundir / "nbd"
        directory.mkdir(parents=True, exist_ok=True)
        image = directory / f"{export}.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), f"{size_mib}M"])
        log_file = open(directory / f"{export}.log", "wb")
        proc = subprocess.Popen(
            ["qemu-nbd", "--persistent", "--shared=8", "--cache=none", "-f", "qcow2", "-b", GATEWAY, "-p", str(port),
             "-x", export, str(image)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        for _attempt in range(50):
            if _port_open(GATEWAY, port):
                return GATEWAY, port, export
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise LabError(f"qemu-nbd did not start: {(directory / f'{export}.log').read_text()}")

    @staticmethod
    def set_kernel_sysctl(name: str, value: str) -> str:
        """Set a kernel-wide sysctl from the root namespace (the hosts cannot: /proc/sys is read-only in
        them, and knobs such as vm.unprivileged_userfaultfd are global).  Returns the previous value."""
        path = Path("/proc/sys") / name.replace(".", "/")
        previous = path.read_text().strip()
        path.write_text(value)
        return previous

    def ssh_command(self, name: str) -> list[str]:
        h = self.host(name)
        return ["ssh", "-i", str(self.key_path), "-o", f"UserKnownHostsFile={self.known_hosts_path}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{h.ip}"]

    # ------------------------------------------------------------------ templates
    def template(self, suite: str, profile: str) -> Path:
        """Return a cached root filesystem for suite+profile, building it if needed."""
        recipe = [TEMPLATE_RECIPE, suite, MIRROR, BASE_PACKAGES]
        if profile == "ready":
            recipe += [READY_ROLE_VARS, _tree_digest(PREPARE_ROLE), _tree_digest(PREPARE_PLAYBOOK)]
        digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
        dest = self.cache / "templates" / f"{suite}-{profile}-{digest}"
        if (dest / ".complete").exists():
            return dest / "rootfs"
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in [*dest.parent.glob(f"{suite}-{profile}-*"), *dest.parent.glob(f".build-{suite}-{profile}-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        tmp = dest.parent / f".build-{suite}-{profile}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp).mkdir()
        t0 = time.monotonic()
        if profile == "bare":
            log(f"building the bare {suite} template (debootstrap, about a minute)")
            self._debootstrap(suite, tmp / "rootfs")
            self._configure_base(tmp / "rootfs", suite)
        else:
            base = self.template(suite, "bare")
            log(f"building the ready {suite} template: the collection's hypervisor_prep role on a bare host")
            self._prepare_with_role(suite, base, tmp / "rootfs")
        (tmp / ".complete").write_text(time.strftime("%FT%T"))
        tmp.rename(dest)
        log(f"template {dest.name} built in {time.monotonic() - t0:.0f} s")
        return dest / "rootfs"

    def _debootstrap(self, suite: str, rootfs: Path) -> None:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(rootfs), MIRROR],
            capture=True, timeout=900)

    def _configure_base(self, rootfs: Path, suite: str) -> None:
        sources = (
            f"Types: deb\nURIs: {MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            f"Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: {suite}-security\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        (rootfs / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources)
        legacy = rootfs / "etc/apt/sources.list"
        if legacy.exists():
            legacy.unlink()
        script = """
set -e
systemctl enable systemd-networkd
systemctl mask systemd-networkd-wait-online.service
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
  systemctl disable "$t" 2>/dev/null || true
  systemctl mask "$t" 2>/dev/null || true
done
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
mkdir -p /root/.ssh && chmod 700 /root/.ssh
apt-get clean
rm -rf /var/lib/apt/lists/*
"""
        _chroot(rootfs, script)

    def _prepare_with_role(self, suite: str, bare: Path, rootfs: Path) -> None:
        """Boot one bare host, run the collection's own hypervisor_prep role on it (through the prepare_hosts
        playbook, as an operator would), stop it and keep its root filesystem, minus what is per host."""
        playbook_bin = Path(sys.executable).parent / "ansible-playbook"
        if not playbook_bin.exists() or not PREPARE_PLAYBOOK.exists():
            raise LabError(f"a ready template needs ansible-playbook next to {sys.executable} and the collection's "
                           f"{PREPARE_PLAYBOOK}; run `make install` (or use --profile bare)")
        builder = Host(name=HOST_NAMES[0], ip=str(NETWORK.network_address + FIRST_HOST_OCTET), profile="bare")
        self.hosts, self.suite = [builder], suite
        self._save()
        try:
            self._make_bridge()
            self._start_proxy()
            self._make_ssh_keys()
            self.shared_dir.mkdir(parents=True, exist_ok=True)
            self._prepare_host(builder, bare)
            self._write_known_hosts()
            self._boot(builder)
            self._save()
            self._wait_ready(builder)
            self._write_inventory()
            env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
            env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO / "build" / "collections"))
            proc = subprocess.run(
                [str(playbook_bin), "-i", str(self.inventory_path), str(PREPARE_PLAYBOOK),
                 "-e", json.dumps(READY_ROLE_VARS)],
                capture_output=True, text=True, env=env, timeout=1800, check=False)
            (self.cache / "templates" / f"ready-{suite}-prepare.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise LabError(f"hypervisor_prep failed on the template's host (rc={proc.returncode}):\n"
                               + (proc.stdout + proc.stderr)[-4000:])
            # A clean shutdown, so the daemons' state on disk is consistent; the overlay stays mounted.
            os.kill(builder.nspawn_pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _alive(builder.nspawn_pid):
                time.sleep(0.2)
            self._kill_controller_ssh()
            run(["cp", "-a", str(builder.root), str(rootfs)])
        finally:
            self.down(quiet=True)
        _forget_host_identity(rootfs)

    # ------------------------------------------------------------------ per host
    def _prepare_host(self, h: Host, template: Path) -> None:
        for sub in ("upper", "work", "root"):
            (h.dir / sub).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={template},upperdir={h.dir / 'upper'},workdir={h.dir / 'work'}", str(h.root)])
        r = h.root
        (r / "etc/hostname").write_text(h.name + "\n")
        hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        hosts += "".join(f"{p.ip} {p.name}\n" for p in self.hosts)
        (r / "etc/hosts").write_text(hosts)
        (r / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        run(["ssh-keygen", "-A", "-f", str(r)], capture=True)
        net = (f"[Match]\nName=host0\n\n[Network]\nAddress={h.ip}/{NETWORK.prefixlen}\n"
               f"Gateway={GATEWAY}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        (r / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
        (r / "etc/systemd/network/10-host0.network").write_text(net)
        (r / "etc/apt/apt.conf.d/01kvmlab-proxy").write_text(f'Acquire::http::Proxy "http://{GATEWAY}:{PROXY_PORT}";\n')
        ssh = r / "root/.ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        pub = self.key_path.with_suffix(".pub").read_text()
        (ssh / "authorized_keys").write_text(pub)
        os.chmod(ssh / "authorized_keys", 0o600)
        if h.profile == "ready":
            # Root trust between hypervisors, as qemu+ssh and peer-to-peer migration need.
            shutil.copy(self.key_path, ssh / "id_ed25519")
            shutil.copy(self.key_path.with_suffix(".pub"), ssh / "id_ed25519.pub")
            os.chmod(ssh / "id_ed25519", 0o600)
            conf = r / "etc/libvirt/libvirtd.conf"
            kept = [line for line in conf.read_text().splitlines() if not line.lstrip().startswith("host_uuid")]
            conf.write_text("\n".join(kept + [f'host_uuid = "{uuid.uuid4()}"']) + "\n")

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            for keyfile in sorted((h.root / "etc/ssh").glob("ssh_host_*_key.pub")):
                keytype, key = keyfile.read_text().split()[:2]
                lines.append(f"{h.name},{h.ip} {keytype} {key}\n")
        self.known_hosts_path.write_text("".join(lines))
        for h in self.hosts:
            if h.profile == "ready":
                (h.root / "root/.ssh/known_hosts").write_text("".join(lines))

    def _boot(self, h: Host) -> None:
        cgroups = []
        for cg_root in CGROUP_ROOTS:
            cg = cg_root / CGROUP_SLICE / h.name
            cg.mkdir(parents=True, exist_ok=True)
            cgroups.append(cg / "cgroup.procs")

        def enter_own_cgroup():
            # Each nspawn must start from its own cgroup, or a second container lands in the
            # first one's /payload and its systemd adopts the other's services.
            for procs in cgroups:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            os.setsid()

        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        cmd = ["systemd-nspawn", "-D", str(h.root), "-M", h.name, "-b", "--register=no", "--keep-unit",
               f"--network-bridge={BRIDGE}", "--console=read-only",
               # One directory seen by every host at the same path: what an NFS mount gives hypervisors.
               f"--bind={self.shared_dir}:{SHARED_IN_HOST}",
               # Post-copy: QEMU calls munlockall() and userfaultfd(), which nspawn's default filter refuses.
               "--system-call-filter=@memlock userfaultfd"]
        console = open(h.dir / "console.log", "wb")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=enter_own_cgroup)
        console.close()
        h.nspawn_pid = proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # nspawn forks a short-lived "outer child" before the container's PID 1; only the latter lives
            # in a PID namespace of its own (taking the former made a healthy boot look like an exit).
            children = [c for c in _children(proc.pid) if _in_new_pid_namespace(c)]
            if children:
                h.pid1 = children[0]
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise LabError(f"{h.name}: systemd-nspawn did not start (see {h.dir / 'console.log'}):\n"
                       + (h.dir / "console.log").read_text()[-2000:])

    def _wait_ready(self, h: Host, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not _alive(h.pid1):
                raise LabError(f"{h.name}: container exited during boot; console:\n"
                               + (h.dir / "console.log").read_text()[-3000:])
            state = self.exec(h.name, ["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded") and _port_open(h.ip, 22):
                return
            time.sleep(0.3)
        raise LabError(f"{h.name}: not ready after {timeout:.0f} s (systemd state {state!r}, ssh port "
                       f"{'open' if _port_open(h.ip, 22) else 'closed'})")

    # ------------------------------------------------------------------ shared pieces
    def _make_bridge(self) -> None:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{GATEWAY}/{NETWORK.prefixlen}", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])

    def _make_ssh_keys(self) -> None:
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.ssh_dir, 0o700)
        if not self.key_path.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvm-migration-lab", "-f", str(self.key_path)])

    def _start_proxy(self) -> None:
        """apt-cacher-ng on the bridge address: the hosts' only way to Debian's mirror."""
        conf = self.rundir / "apt-cacher-ng"
        cache = self.cache / "apt-cacher-ng"
        cache.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree("/etc/apt-cacher-ng", conf)
        (conf / "backends_debian").write_text(f"{MIRROR}/\n")
        logdir = self.rundir / "apt-cacher-ng-log"
        logdir.mkdir(exist_ok=True)
        os.system(f"chown -R apt-cacher-ng: {cache} {logdir} 2>/dev/null")
        out = open(self.rundir / "apt-cacher-ng.out", "wb")
        proc = subprocess.Popen(
            ["/usr/sbin/apt-cacher-ng", "-c", str(conf), "ForeGround=1", f"BindAddress={GATEWAY}",
             f"Port={PROXY_PORT}", f"CacheDir={cache}", f"LogDir={logdir}", "PidFile=",
             "SocketPath="],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        (self.rundir / "apt-cacher-ng.pid").write_text(str(proc.pid))
        for _attempt in range(50):
            if _port_open(GATEWAY, PROXY_PORT):
                return
            time.sleep(0.1)
        log("warning: apt-cacher-ng did not open its port; apt inside the hosts will fail")

    def _stop_proxy(self) -> None:
        pidfile = self.rundir / "apt-cacher-ng.pid"
        pids = []
        if pidfile.exists():
            pids.append(int(pidfile.read_text()))
        pids += [p for p in _pids_matching("apt-cacher-ng") if str(self.rundir) in _cmdline(p)]
        for pid in set(pids):
            _terminate(pid)

    def _kill_controller_ssh(self) -> None:
        """Ansible's ControlPersist masters on the controller would outlive the hosts."""
        lab_ips = {str(NETWORK.network_address + FIRST_HOST_OCTET + i) for i in range(len(HOST_NAMES))}
        for pid in _pids_matching("ssh"):
            cmd = _cmdline(pid)
            if any(f"@{ip}" in cmd or f" {ip}" in cmd for ip in lab_ips) or str(self.rundir) in cmd:
                _terminate(pid)

    def _write_inventory(self) -> None:
        lines = ["# Written by the kvm-migration lab; regenerated by every `lab up`.", "all:", "  children:",
                 "    hypervisors:", "      hosts:"]
        for h in self.hosts:
            lines.append(f"        {h.name}:")
            lines.append(f"          ansible_host: {h.ip}")
        lines += [
            "  vars:",
            "    ansible_user: root",
            "    ansible_python_interpreter: /usr/bin/python3",
            f"    ansible_ssh_private_key_file: {self.key_path}",
            "    ansible_ssh_common_args: >-",
            f"      -o UserKnownHostsFile={self.known_hosts_path} -o StrictHostKeyChecking=yes",
            f"      -o ControlPath={self.rundir}/cp-%C",
            "",
        ]
        self.inventory_path.write_text("\n".join(lines))

    def _save(self) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(
            {"suite": self.suite, "hosts": [dataclasses.asdict(h) for h in self.hosts]}, indent=2))


# ---------------------------------------------------------------------- helpers
def _tree_digest(path: Path) -> str:
    """sha256 over the names and contents of the files under `path` (or of the file itself)."""
    sha = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        sha.update(str(f.relative_to(path.parent)).encode() + b"\0" + f.read_bytes())
    return sha.hexdigest()


def _forget_host_identity(rootfs: Path) -> None:
    """What a booted host made its own, removed so every host started from the template gets its own: machine
    id, SSH host keys, root's keys, logs, caches."""
    (rootfs / "etc/machine-id").write_text("")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # apt's lists go, and with them every sign that they are fresh (apt's binary caches, the update stamp), so
    # a role that updates "when older than cache_valid_time" does update.
    for stale in [*(rootfs / "var/cache/apt/archives").glob("*.deb"), *(rootfs / "var/cache/apt").glob("*.bin"),
                  rootfs / "var/lib/apt/periodic/update-success-stamp"]:
        if stale.exists():
            stale.unlink()
    for sub in ("root/.ssh", "root/.ansible", "var/log/journal", "var/lib/apt/lists", "tmp", "var/tmp"):
        target = rootfs / sub
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    # Ansible's apt takes the lists directory's time as the last update when there is no update stamp: an
    # emptied directory must look old, or "cache_valid_time" skips the update and finds no package.
    os.utime(rootfs / "var/lib/apt/lists", (0, 0))


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates a bridge, mounts and containers)")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter", "ip", "ssh-keygen", "/usr/sbin/apt-cacher-ng")
               if not shutil.which(t) and not Path(t).exists()]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (run `make deps`)")


def _chroot(rootfs: Path, script: str, policy_rc: bool = False) -> None:
    mounts = []
    try:
        for src, fstype in (("proc", "proc"), ("sys", "sysfs")):
            target = rootfs / src
            run(["mount", "-t", fstype, src, str(target)])
            mounts.append(target)
        run(["mount", "--bind", "/dev", str(rootfs / "dev")])
        mounts.append(rootfs / "dev")
        policy = rootfs / "usr/sbin/policy-rc.d"
        if policy_rc:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        resolv = rootfs / "etc/resolv.conf"
        had_resolv = resolv.exists() or resolv.is_symlink()
        if resolv.is_symlink():
            resolv.unlink()
        shutil.copy("/etc/resolv.conf", resolv)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        run(["chroot", str(rootfs), "/bin/sh", "-c", script], env=env, capture=True, timeout=1800)
        if policy_rc:
            policy.unlink()
        resolv.unlink()
        if had_resolv:
            resolv.write_text("")
    finally:
        for m in reversed(mounts):
            run(["umount", "-l", str(m)], check=False)


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _in_new_pid_namespace(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids_matching(comm: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == comm:
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _attempt in range(30):
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cgroup_pids(cg: Path) -> list[int]:
    pids = []
    if not cg.is_dir():
        return pids
    for procs in cg.rglob("cgroup.procs"):
        try:
            pids += [int(x) for x in procs.read_text().split()]
        except OSError:
            pass
    return pids


def _kill_cgroup_tree(cg: Path) -> None:
    """SIGKILL whatever is still in the lab's cgroups (containers that ignored SIGTERM, orphans)."""
    for _attempt in range(50):
        pids = _cgroup_pids(cg)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise LabError(f"processes in {cg} survived SIGKILL: {_cgroup_pids(cg)}")


def _remove_cgroup_tree(cg: Path) -> None:
    if not cg.is_dir():
        return
    dirs = sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for d in [*dirs, cg]:
        for _attempt in range(20):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def _umount_below(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    for _attempt in range(5):
        targets = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mountpoint = line.split()[4].replace("\\040", " ")
            if mountpoint.startswith(prefix):
                targets.append(mountpoint)
        if not targets:
            return
        for t in sorted(targets, key=len, reverse=True):
            run(["umount", t], check=False, quiet=True)
            if os.path.ismount(t):
                run(["umount", "-l", t], check=False, quiet=True)


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False
