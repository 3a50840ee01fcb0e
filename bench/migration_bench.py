"""Migration benchmark: kvm.migration (strategy auto) against plain `virsh migrate --live --copy-storage-all`,
in the lab, with the link shaped to fixed rates and the test guest dirtying memory at fractions of the link.

    make bench            (or: .venv/bin/python bench/migration_bench.py)

For every (link, dirty rate) pair it records, for both tools: success, wall and job time, the lower bound
(RAM and disk bytes actually sent / bandwidth), downtime, and for ours the prediction made before starting.
Results go to bench/results/<timestamp>.json and a Markdown table on stdout (copied into docs/performance.md).
This is a benchmark, not a test: nothing here asserts on time."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "build" / "collections"))  # make bench installs the collection there

from helpers import Ansible  # noqa: E402
from ansible_collections.kvm.migration.plugins.module_utils._convergence import RHO_UNCERTAIN  # noqa: E402
from kvmlab.guestops import LabGuest, install_guest  # noqa: E402
from kvmlab.lab import Lab  # noqa: E402

SRC, DST = "hv-a", "hv-b"
MIB = 1024 * 1024
LINKS = {"100mbit": 100e6 / 8 / MIB, "200mbit": 200e6 / 8 / MIB, "1gbit": 1e9 / 8 / MIB}  # MiB/s
DEFAULT_LINKS = ["200mbit", "1gbit"]
RATIOS = [0.0, 0.5, 0.9, 1.5, 3.0]
GUEST_MIB = 320
WORKING_SET_MIB = 160
VIRSH_TIMEOUT = 120


def shape(lab, rate):
    for host in (SRC, DST):
        if rate:
            lab.exec(host, f"tc qdisc replace dev host0 root tbf rate {rate} burst 256kb latency 100ms")
        else:
            lab.exec(host, "tc qdisc del dev host0 root", check=False)


def guest(lab, dirty_rate):
    vm = LabGuest(lab, name="benchvm", memory_mib=GUEST_MIB, dirty_mb=WORKING_SET_MIB if dirty_rate else 0,
                  dirty_rate=max(1, round(dirty_rate)) if dirty_rate else 0)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=3)
    # Let the dirtier fill its working set once, so that the first round is the same for both tools.
    time.sleep(3 if not dirty_rate else min(10, 2 + WORKING_SET_MIB / max(dirty_rate, 1)))
    return vm


def completed_stats(lab, host, name):
    out = lab.exec(host, ["virsh", "domjobinfo", "--completed", name], check=False).stdout
    stats = {}
    for line in out.splitlines():
        key, _sep, value = line.partition(":")
        stats[key.strip()] = value.strip()
    return stats


def size_mib(text):
    match = re.match(r"([\d.]+)\s*(\w+)", text or "")
    if not match:
        return None
    factor = {"B": 1 / MIB, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}.get(match.group(2), 1)
    return float(match.group(1)) * factor


def run_ours(lab, ansible, vm, link_mib_s=0):
    """The collection's playbook, strategy auto, as an operator who knows the link runs it: link_speed states
    the link for the prediction (the module's own measurement runs through libvirt's SSH connection, which this
    2-core machine caps at about 70 MiB/s, far below 1 Gbit/s), and nothing caps the migration."""
    started = time.monotonic()
    run = ansible.playbook(ROOT / "playbooks" / "migrate.yml", {
        "live_migration_vm": vm.name, "live_migration_source": SRC, "live_migration_destination": DST,
        "live_migration_link_speed": int(link_mib_s), "live_migration_source_cleanup": True}, timeout=1800)
    wall = time.monotonic() - started
    task = run.task("Migrate the VM")
    record = {"tool": "kvm.migration", "ok": not run.failed, "wall_s": round(wall, 1)}
    if run.failed:
        record["error"] = task.get("msg", "")[:300]
        record["strategy"] = task.get("details", {}).get("strategy") or task.get("strategy")
        return record
    summary, stats, strategy = task["summary"], task["stats"], task["strategy"]
    record.update({
        "job_s": round((summary["time_elapsed_ms"] or 0) / 1000, 1),
        "downtime_ms": summary["downtime_ms"],
        "sent_mib": round((summary["data_processed_bytes"] or 0) / MIB, 1),
        "memory_mib": round((stats.get("memory_processed") or 0) / MIB, 1),
        "iterations": summary["iterations"],
        "predicted": strategy.get("prediction", {}),
        "measured": strategy.get("measured", {}),
        "chosen": strategy.get("chosen"),
        "finished_by": strategy.get("finished_by"),
        "max_throttle_percent": strategy.get("max_throttle_percent"),
        "events": strategy.get("events", []),
    })
    return record


def run_virsh(lab, vm):
    lab.exec(DST, f"qemu-img create -q -f qcow2 {vm.disk_path} {vm.disk_mib}M")
    started = time.monotonic()
    proc = subprocess.Popen(["nsenter", "-t", str(lab.host(SRC).pid1), "-a", "--", "virsh", "migrate", "--live",
                             "--persistent", "--undefinesource", "--copy-storage-all", vm.name,
                             f"qemu+ssh://{DST}/system"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = proc.communicate(timeout=VIRSH_TIMEOUT)[0]
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        lab.exec(SRC, ["virsh", "domjobabort", vm.name], check=False)
        out = proc.communicate()[0]
        ok = False
        out = f"did not finish within {VIRSH_TIMEOUT} s (aborted); " + out
    wall = time.monotonic() - started
    record = {"tool": "virsh migrate", "ok": ok, "wall_s": round(wall, 1)}
    if ok:
        done = completed_stats(lab, DST, vm.name)
        record.update({"job_s": round(float(done.get("Time elapsed", "0 ms").split()[0]) / 1000, 1),
                       "downtime_ms": int(done.get("Total downtime", "0 ms").split()[0]),
                       "memory_mib": size_mib(done.get("Memory processed"))})
    else:
        record["error"] = out.strip()[-300:]
    return record


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--links", nargs="*", default=DEFAULT_LINKS, choices=list(LINKS))
    parser.add_argument("--default-path", action="store_true",
                        help="run ours with every option at its default: no link_speed, so it measures the link")
    parser.add_argument("--ratios", nargs="*", type=float, default=RATIOS)
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--table", metavar="RESULTS_JSON", help="only print the table of an earlier run")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / "build" / "collections"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "tests" / "ansible.cfg"))
    os.environ["KVM_MIGRATION_PROGRESS"] = "0"
    lab = Lab()
    lab.up(2, profile="ready")
    install_guest(lab)
    ansible = Ansible(lab.inventory_path)
    results = {"guest_mib": GUEST_MIB, "working_set_mib": WORKING_SET_MIB, "runs": []}
    try:
        # An idempotent no-op run of the playbook.
        vm = guest(lab, 0)
        run_ours(lab, ansible, vm)
        started = time.monotonic()
        ansible.playbook(ROOT / "playbooks" / "migrate.yml",
                         {"live_migration_vm": vm.name, "live_migration_source": SRC, "live_migration_destination": DST})
        results["noop_playbook_s"] = round(time.monotonic() - started, 1)
        vm.remove_everywhere()
        for link in args.links:
            bandwidth = LINKS[link]
            shape(lab, link)
            for ratio in args.ratios:
                rate = ratio * bandwidth
                row = {"link": link, "link_mib_s": round(bandwidth, 1), "ratio": ratio, "dirty_mib_s": round(rate, 1)}
                vm = guest(lab, rate)
                row["ours"] = run_ours(lab, ansible, vm, 0 if args.default_path else bandwidth)
                row["default_path"] = args.default_path
                vm.remove_everywhere()
                vm = guest(lab, rate)
                row["virsh"] = run_virsh(lab, vm)
                vm.remove_everywhere()
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        shape(lab, None)
    finally:
        out = ROOT / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"results: {out}")
        if not args.keep_lab:
            lab.down()
    print(table(results))


def prediction_right(row):
    """Was the prediction made before starting right?  Its verdict on plain pre-copy must match what plain
    pre-copy (the virsh baseline) did, and a non-pre-copy strategy must be what finished the migration.  When
    pre-copy is predicted, QEMU may still throttle a little (auto-converge is armed as a safety net and starts
    once a round dirties half of what it sent), which does not make the verdict wrong."""
    ours, virsh = row["ours"], row["virsh"]
    predicted = ours.get("predicted", {})
    if not predicted or not ours.get("ok"):
        return None
    if predicted.get("converges") != virsh.get("ok"):
        return False
    strategy = predicted.get("strategy")
    if strategy == "precopy":
        return ours.get("finished_by") in ("pre-copy", "auto-converge")
    return strategy.replace("_", "-").replace("postcopy", "post-copy") == ours.get("finished_by")


def certain(record):
    """Whether the prediction called itself certain (runs recorded before the flag existed: the same rule)."""
    predicted = record.get("predicted", {})
    if "certain" in predicted or not predicted:
        return predicted.get("certain", True)
    return not RHO_UNCERTAIN[0] <= predicted.get("rho", 0) <= RHO_UNCERTAIN[1]


def table(results):
    """One line per run: ours against the lower bound, the prediction, and the baseline."""
    lines = ["| link | dirty rate (x link) | ours | job s (wall s) | lower bound s | job / bound | downtime ms | "
             "predicted: strategy, s | finished by (throttle) | prediction right | virsh | virsh job s | "
             "virsh downtime ms |", "|" + "---|" * 13]
    for row in results["runs"]:
        ours, virsh = row["ours"], row["virsh"]
        # RAM actually sent; the disk is 64 MiB virtual with a few hundred KiB written, and zero blocks cost
        # next to nothing on the wire.
        sent = ours.get("memory_mib")
        bound = sent / row["link_mib_s"] if sent else None
        pred = ours.get("predicted", {})
        throttle = ours.get("max_throttle_percent")
        lines.append("| %s | %.1f MiB/s (%.1f) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["link"] + (" (defaults, measured)" if row.get("default_path") else ""), row["dirty_mib_s"],
            row["ratio"], "yes" if ours["ok"] else "no",
            "%s (%s)" % (ours.get("job_s", "-"), ours.get("wall_s")),
            "%.1f" % bound if bound else "", "%.2f" % (ours["job_s"] / bound) if bound and ours.get("job_s") else "",
            ours.get("downtime_ms", ""),
            "%s, %s" % (pred.get("strategy"), pred.get("estimated_total_s")) if pred else "",
            "%s%s" % (ours.get("finished_by", ""), " (%s %%)" % throttle if throttle else ""),
            {None: "", True: "yes", False: "no"}[prediction_right(row)] + ("" if certain(ours) else " (uncertain)"),
            "yes" if virsh["ok"] else "no (%s s limit)" % VIRSH_TIMEOUT, virsh.get("job_s", ""),
            virsh.get("downtime_ms", "")))
    lines.append("")
    lines.append("Idempotent no-op run of the playbook: %s s" % results.get("noop_playbook_s"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
