"""Command line of the lab: python -m kvmlab {up,down,status,exec,ssh,guest-build}."""

from __future__ import annotations

import argparse
import os
import sys

from .lab import DEFAULT_SUITE, PROFILES, Lab, LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvmlab", description="throwaway hypervisor hosts on this machine")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start hosts (removes any earlier lab first)")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--suite", default=DEFAULT_SUITE, help="Debian suite of the hosts (trixie, bookworm)")
    up.add_argument("--profile", choices=PROFILES, default="ready",
                    help="ready: hypervisor packages and config; bare: systemd, sshd and python3 only")
    up.add_argument("--no-guest", action="store_true", help="do not build or install the test guest")
    sub.add_parser("down", help="stop the hosts and remove everything the lab made")
    sub.add_parser("status")
    ex = sub.add_parser("exec", help="run a command inside a host")
    ex.add_argument("host")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ssh = sub.add_parser("ssh", help="ssh into a host")
    ssh.add_argument("host")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    tpl = sub.add_parser("template", help="build (or reuse) the cached root filesystem")
    tpl.add_argument("--suite", default=DEFAULT_SUITE)
    tpl.add_argument("--profile", choices=PROFILES, default="ready")
    sub.add_parser("guest-build", help="build (or reuse) the test guest's kernel and initramfs")
    gs = sub.add_parser("guest-start", help="define and start a test guest on a host, wait for its ticks")
    gs.add_argument("host")
    gs.add_argument("name")
    gs.add_argument("--memory", type=int, default=192, help="MiB")
    gs.add_argument("--dirty-mb", type=int, default=0)
    gs.add_argument("--dirty-rate", type=int, default=0, help="MiB/s, 0 = flat out")
    gp = sub.add_parser("guest-proof", help="check (JSON report) that a guest never rebooted and lost no disk write")
    gp.add_argument("name")
    gp.add_argument("hosts", nargs="+", help="every host the guest ran on")
    gr = sub.add_parser("guest-remove", help="destroy and undefine a test guest on every host, delete its files")
    gr.add_argument("name")
    args = parser.parse_args(argv)

    lab = Lab()
    try:
        if args.cmd == "up":
            lab.up(args.hosts, args.suite, args.profile)
            if not args.no_guest and args.profile == "ready":
                from . import guestops
                guestops.install_guest(lab)
        elif args.cmd == "down":
            lab.down()
        elif args.cmd == "status":
            if not lab.hosts:
                print("lab is down")
            for h in lab.hosts:
                print(f"{h.name:6} {h.ip:12} {h.profile:6} pid1={h.pid1} {'up' if lab.is_up() else 'DOWN'}")
        elif args.cmd == "exec":
            proc = lab.exec(args.host, args.command, check=False)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode
        elif args.cmd == "ssh":
            cmd = lab.ssh_command(args.host) + args.command
            os.execvp(cmd[0], cmd)
        elif args.cmd == "template":
            print(lab.template(args.suite, args.profile))
        elif args.cmd == "guest-start":
            from .guestops import LabGuest
            vm = LabGuest(lab, args.name, memory_mib=args.memory, dirty_mb=args.dirty_mb, dirty_rate=args.dirty_rate)
            vm.start_and_wait(args.host, ticks=2)
            print(f"{args.name} runs on {args.host}")
        elif args.cmd == "guest-proof":
            import json
            from .guestops import LabGuest
            report = LabGuest(lab, args.name).proof(args.hosts)
            print(json.dumps(report, indent=2))
            return 1 if report["problems"] else 0
        elif args.cmd == "guest-remove":
            from .guestops import LabGuest
            LabGuest(lab, args.name).remove_everywhere()
        elif args.cmd == "guest-build":
            from . import guest
            art = guest.build(lab.cache)
            print(art.kernel)
            print(art.initrd)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
