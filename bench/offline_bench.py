"""Offline move benchmark: kvm.migration (live=false) against what the RHEL guide and the seed wiki describe for a
shut-off VM - `virsh migrate --offline --persistent --undefinesource`, which moves only the definition, plus `scp`
of the image between the hosts.

    make bench-offline   (or: .venv/bin/python bench/offline_bench.py)

The guest's qcow2 disk is filled with DATA_MIB of data before it moves.  For every link it records the time of
each tool against the lower bound (the image's bytes / link rate), ours with and without the sha256 read-back,
over qemu+ssh and qemu+tcp.  Results go to bench/results/offline-<timestamp>.json and a Markdown table on
stdout (copied into docs/performance.md).  A benchmark, not a test: nothing asserts on time."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from helpers import Ansible  # noqa: E402
from kvmlab.guestops import LabGuest, install_guest  # noqa: E402
from kvmlab.lab import Lab  # noqa: E402

SRC, DST = "hv-a", "hv-b"
MIB = 1024 * 1024
LINKS = {"200mbit": 200e6 / 8 / MIB, "1gbit": 1e9 / 8 / MIB, "unshaped": 0}
DATA_MIB = 256


def shape(lab, link):
    for host in (SRC, DST):
        if LINKS[link]:
            lab.exec(host, f"tc qdisc replace dev host0 root tbf rate {link} burst 256kb latency 100ms")
        else:
            lab.exec(host, "tc qdisc del dev host0 root", check=False)


def shut_off_guest(lab):
    vm = LabGuest(lab, name="offbench", disk_mib=DATA_MIB + 64)
    vm.remove_everywhere()
    vm.define(SRC, start=False)
    # Random data: nothing on the path compresses it.
    lab.exec(SRC, f"head -c {DATA_MIB}M /dev/urandom > /root/fill.raw && "
                  f"qemu-io -f qcow2 -c 'write -s /root/fill.raw 8M {DATA_MIB}M' {vm.disk_path} >/dev/null && "
                  "rm -f /root/fill.raw")
    size = int(lab.exec(SRC, ["stat", "-c", "%s", vm.disk_path]).stdout)
    return vm, size


def run_ours(ansible, vm, transport, verify):
    started = time.monotonic()
    run = ansible.playbook(ROOT / "playbooks" / "migrate.yml", {
        "live_migration_vm": vm.name, "live_migration_source": SRC, "live_migration_destination": DST,
        "live_migration_live": False, "live_migration_transport": transport,
        "live_migration_verify_copies": verify}, timeout=1800)
    wall = time.monotonic() - started
    task = run.task("Migrate the VM")
    record = {"tool": "kvm.migration", "transport": transport, "verify": verify, "ok": not run.failed,
              "wall_s": round(wall, 1)}
    if run.failed:
        record["error"] = task.get("msg", "")[:300]
    else:
        record["copy_s"] = round(task["summary"]["time_elapsed_ms"] / 1000, 1)
    return record


def run_manual(lab, vm):
    """The RHEL guide's offline migration plus the copy it leaves to the operator."""
    started = time.monotonic()
    lab.exec(SRC, f"scp -q {vm.disk_path} {DST}:{vm.disk_path} && "
                  f"virsh -q migrate --offline --persistent --undefinesource {vm.name} qemu+ssh://{DST}/system")
    return {"tool": "scp + virsh migrate --offline", "ok": True, "wall_s": round(time.monotonic() - started, 1)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--links", nargs="*", default=list(LINKS))
    parser.add_argument("--table", metavar="RESULTS_JSON", help="only print the table of an earlier run")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    lab = Lab()
    lab.up(2, profile="ready")
    install_guest(lab)
    ansible = Ansible(lab.inventory_path)
    results = {"data_mib": DATA_MIB, "runs": []}
    try:
        # qemu+tcp for the bench: the ready hosts listen on 16509 without authentication (lab only).
        for link in args.links:
            shape(lab, link)
            for label, runner in (
                ("ours, ssh, read-back", lambda vm: run_ours(ansible, vm, "ssh", True)),
                ("ours, ssh, no read-back", lambda vm: run_ours(ansible, vm, "ssh", False)),
                ("ours, tcp, read-back", lambda vm: run_ours(ansible, vm, "tcp", True)),
                ("ours, tcp, no read-back", lambda vm: run_ours(ansible, vm, "tcp", False)),
                ("scp + virsh migrate --offline", lambda vm: run_manual(lab, vm)),
            ):
                vm, size = shut_off_guest(lab)
                record = runner(vm)
                vm.remove_everywhere()
                row = {"link": link, "link_mib_s": round(LINKS[link], 1), "case": label, "image_mib": round(size / MIB, 1),
                       **record}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        shape(lab, "unshaped")
    finally:
        out = ROOT / "bench" / "results" / time.strftime("offline-%Y%m%d-%H%M%S.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"results: {out}")
        lab.down()
    print(table(results))


def table(results):
    """Copy time (ours: libvirt's streams, with or without the read-back) and wall time (ours: the whole playbook,
    preflight and checks included) against the lower bound."""
    lines = ["| link | case | image MiB | ok | copy s | copy / bound | wall s | lower bound s | wall / bound |",
             "|" + "---|" * 9]
    for row in results["runs"]:
        bound = row["image_mib"] / row["link_mib_s"] if row["link_mib_s"] else None
        copy = row.get("copy_s")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["link"], row["case"], row["image_mib"], "yes" if row["ok"] else "no: " + row.get("error", ""),
            copy if copy is not None else "", "%.2f" % (copy / bound) if bound and copy else "", row["wall_s"],
            "%.1f" % bound if bound else "", "%.2f" % (row["wall_s"] / bound) if bound else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
