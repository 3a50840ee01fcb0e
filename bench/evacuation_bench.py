"""Evacuation benchmark: empty hv-a of N guests (idle and dirtying) onto hv-b and hv-c over a shaped source
link, three ways in the same run, each on fresh guests of the same kind:

- ours: `playbooks/evacuate.yml` (the plan decides the destinations, the concurrency and the order);
- serial: a loop of plain `virsh migrate --live --copy-storage-all`, one guest after the other, to the same
  destinations as ours;
- all at once: the same virsh commands started together.

    .venv/bin/python bench/evacuation_bench.py [--guests 4] [--link-mbit 200] [--dirty-fraction 0.5]

Per guest it records success, downtime and RAM sent; per way the total time and the lower bound (all bytes sent
/ link rate).  Results go to bench/results/evacuation-<timestamp>.json and a Markdown table on stdout (copied
into docs/performance.md).  A benchmark, not a test: nothing here asserts on time."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "bench"))

from helpers import Ansible  # noqa: E402
from kvmlab.guestops import LabGuest, install_guest  # noqa: E402
from kvmlab.lab import Lab  # noqa: E402
from migration_bench import completed_stats, size_mib  # noqa: E402

SRC, DESTINATIONS = "hv-a", ("hv-b", "hv-c")
MIB = 1024 * 1024
GUEST_MIB = 320
WORKING_SET_MIB = 160
VIRSH_TIMEOUT = 180


def shape(lab, mbit):
    if mbit:
        lab.exec(SRC, f"tc qdisc replace dev host0 root tbf rate {mbit}mbit burst 256kb latency 100ms")
    else:
        lab.exec(SRC, "tc qdisc del dev host0 root", check=False)


def make_guests(lab, count, dirty_mib_s):
    """Half of them (rounded down) dirty their working set at dirty_mib_s; the rest are idle."""
    guests = []
    for index in range(count):
        dirty = dirty_mib_s if index < count // 2 else 0
        vm = LabGuest(lab, name=f"bench-ev{index}", memory_mib=GUEST_MIB, disk_mib=32,
                      dirty_mb=WORKING_SET_MIB if dirty else 0, dirty_rate=max(1, round(dirty)) if dirty else 0)
        vm.remove_everywhere()
        vm.start_and_wait(SRC, ticks=2)
        guests.append(vm)
    time.sleep(12)  # the dirtiers fill their working sets once
    return guests


def clean(lab, guests):
    for vm in guests:
        vm.remove_everywhere()
    for host in (SRC,) + DESTINATIONS:
        lab.exec(host, ["rm", "-f", "/var/lib/kvm-migration/maintenance.json"])


def per_guest(lab, vm, host):
    done = completed_stats(lab, host, vm.name)
    return {"downtime_ms": int(done.get("Total downtime", "0 ms").split()[0]) if done.get("Total downtime") else None,
            "memory_mib": size_mib(done.get("Memory processed")), "disk_mib": size_mib(done.get("File processed"))}


def run_ours(ansible, link_mib_s):
    started = time.monotonic()
    run = ansible.playbook(ROOT / "playbooks" / "evacuate.yml", {
        "evacuate_source": SRC, "evacuate_destinations": list(DESTINATIONS),
        "evacuate_link_speed": int(link_mib_s), "evacuate_poll_interval": 5}, timeout=3600)
    total = time.monotonic() - started
    plan = run.task("Plan where every guest")["plan"]
    result = run.task("Move the guests")
    destinations = {m["name"]: m["destination"] for m in plan["moves"]}
    rows = []
    for r in result.get("moves", []):
        # migrate read the completed job's statistics itself (libvirt hands them out once): its bytes are in the row.
        row = {"name": r["name"], "to": r["to"], "ok": r["result"] == "moved", "seconds": r["seconds"],
               "downtime_ms": r["downtime_ms"], "sent_mib": round((r.get("bytes") or 0) / MIB, 1),
               "memory_mib": round((r.get("memory_bytes") or 0) / MIB, 1) or None}
        rows.append(row)
    return {"way": "kvm.migration evacuate", "total_s": round(total, 1), "migrations_s": result.get("total_seconds"),
            "expected_s": plan.get("expected_seconds"), "peak": result.get("peak_concurrency"), "guests": rows,
            "order": plan["order"], "max_parallel": {m["name"]: m["max_parallel"] for m in plan["moves"]}}, destinations


def virsh_migrate(lab, vm, dest):
    lab.exec(dest, f"qemu-img create -q -f qcow2 {vm.disk_path} {vm.disk_mib}M")
    return subprocess.Popen(["nsenter", "-t", str(lab.host(SRC).pid1), "-a", "--", "virsh", "migrate", "--live",
                             "--persistent", "--undefinesource", "--copy-storage-all", vm.name,
                             f"qemu+ssh://{dest}/system"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(lab, vm, proc, dest, deadline):
    try:
        out = proc.communicate(timeout=max(1, deadline - time.monotonic()))[0]
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        lab.exec(SRC, ["virsh", "domjobabort", vm.name], check=False)
        out = "did not finish within %d s (aborted); " % VIRSH_TIMEOUT + proc.communicate()[0]
        ok = False
    row = {"name": vm.name, "to": dest, "ok": ok}
    if ok:
        row.update(per_guest(lab, vm, dest))
    else:
        row["error"] = out.strip()[-200:]
    return row


def run_serial(lab, guests, destinations):
    started = time.monotonic()
    rows = []
    for vm in guests:
        t0 = time.monotonic()
        proc = virsh_migrate(lab, vm, destinations[vm.name])
        row = finish(lab, vm, proc, destinations[vm.name], t0 + VIRSH_TIMEOUT)
        row["seconds"] = round(time.monotonic() - t0, 1)
        rows.append(row)
    return {"way": "serial virsh migrate", "total_s": round(time.monotonic() - started, 1), "guests": rows}


def run_all_at_once(lab, guests, destinations):
    started = time.monotonic()
    procs = [(vm, virsh_migrate(lab, vm, destinations[vm.name])) for vm in guests]
    rows = []
    for vm, proc in procs:
        row = finish(lab, vm, proc, destinations[vm.name], started + VIRSH_TIMEOUT)
        row["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
    return {"way": "all at once, virsh migrate", "total_s": round(time.monotonic() - started, 1), "guests": rows}


def lower_bound(way, link_mib_s):
    """RAM sent over the link rate: the same measure for every way (virsh reports no disk bytes, and the disks'
    zero blocks cost next to nothing on the wire)."""
    sent = sum(g.get("memory_mib") or g.get("sent_mib") or 0 for g in way["guests"] if g["ok"])
    return round(sent / link_mib_s, 1) if sent else None


def table(results):
    link = results["link_mib_s"]
    lines = ["| way | guests moved | total s | lower bound s | total / bound | downtime ms per guest | peak at once |",
             "|---|---|---|---|---|---|---|"]
    for way in results["ways"]:
        bound = lower_bound(way, link)
        moved = sum(g["ok"] for g in way["guests"])
        downtimes = ", ".join("%s: %s" % (g["name"].replace("bench-", ""), g.get("downtime_ms") if g["ok"] else "failed")
                              for g in way["guests"])
        lines.append("| %s | %d of %d | %s | %s | %s | %s | %s |" % (
            way["way"], moved, len(way["guests"]), way["total_s"], bound or "",
            "%.2f" % (way.get("migrations_s", way["total_s"]) / bound) if bound else "", downtimes,
            way.get("peak", "")))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--guests", type=int, default=4)
    parser.add_argument("--link-mbit", type=int, default=200)
    parser.add_argument("--dirty-fraction", type=float, default=0.5, help="dirty rate of the dirtiers, x link")
    parser.add_argument("--table", metavar="RESULTS_JSON")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    link = args.link_mbit * 1e6 / 8 / MIB
    lab = Lab()
    lab.up(3, profile="ready")
    install_guest(lab)
    ansible = Ansible(lab.inventory_path)
    results = {"guests": args.guests, "guest_mib": GUEST_MIB, "working_set_mib": WORKING_SET_MIB,
               "link_mib_s": round(link, 1), "dirty_mib_s": round(link * args.dirty_fraction, 1), "ways": []}
    try:
        shape(lab, args.link_mbit)
        guests = make_guests(lab, args.guests, link * args.dirty_fraction)
        ours, destinations = run_ours(ansible, link)
        results["ways"].append(ours)
        print(json.dumps(ours), flush=True)
        for way in (run_serial, run_all_at_once):
            clean(lab, guests)
            guests = make_guests(lab, args.guests, link * args.dirty_fraction)
            results["ways"].append(way(lab, guests, destinations))
            print(json.dumps(results["ways"][-1]), flush=True)
        clean(lab, guests)
        shape(lab, None)
    finally:
        out = ROOT / "bench" / "results" / time.strftime("evacuation-%Y%m%d-%H%M%S.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"results: {out}")
        lab.down()
    print(table(results))


if __name__ == "__main__":
    main()
