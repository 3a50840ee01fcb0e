"""Evacuating a lab host: three guests of hv-a (shut off, idle, dirtying memory) to hv-b and hv-c through the
collection's evacuate playbook, with a cap of 2; the policies for a guest that fits nowhere; an operator's abort.

Where each guest runs, whether it rebooted and whether its disk writes survived is read with the hosts' own
tools (virsh, qemu-img) via the lab."""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers import ROOT, host_snapshot
from kvmlab.guestops import LabGuest

pytestmark = pytest.mark.usefixtures("lab")

SRC, DESTINATIONS = "hv-a", ("hv-b", "hv-c")
HOSTS = (SRC,) + DESTINATIONS
MARK = "/var/lib/kvm-migration/maintenance.json"
PLAYBOOK = ROOT / "playbooks" / "evacuate.yml"
PATTERN_PLAYBOOK = ROOT / "extensions/patterns/kvm_migration/playbooks/evacuate.yml"


@pytest.fixture
def guests(lab):
    made = {
        "off": LabGuest(lab, name="evac-off", memory_mib=128, disk_mib=32),
        "idle": LabGuest(lab, name="evac-idle", memory_mib=128, disk_mib=32),
        "dirty": LabGuest(lab, name="evac-dirty", memory_mib=160, disk_mib=32, dirty_mb=32, dirty_rate=8),
        "idle2": LabGuest(lab, name="evac-idle2", memory_mib=128, disk_mib=32),
    }
    for g in made.values():
        g.remove_everywhere()
    for host in HOSTS:
        lab.exec(host, ["rm", "-f", MARK])
    yield made
    for g in made.values():
        g.remove_everywhere()
    for host in HOSTS:
        lab.exec(host, ["rm", "-f", MARK])


def evacuate_vars(**extra):
    return {"evacuate_source": SRC, "evacuate_destinations": list(DESTINATIONS), "evacuate_poll_interval": 2, **extra}


def running_jobs(lab, guests):
    return [g for g in guests if "Data processed" in lab.exec(SRC, ["virsh", "domjobinfo", g.name], check=False).stdout]


def wait_for_jobs(lab, guests, count, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = running_jobs(lab, guests)
        if len(jobs) >= count:
            return jobs
        time.sleep(1)
    pytest.fail(f"{count} migration(s) never ran at once")


def where(guest):
    return {h: guest.state(h) for h in HOSTS if guest.state(h) != "absent"}


def marked(lab, host):
    return lab.exec(host, ["test", "-e", MARK], check=False).returncode == 0


def test_evacuation_moves_every_guest_within_the_cap_and_a_rerun_is_a_no_op(lab, ansible, runner, guests, tmp_path):
    guests["off"].define(SRC, start=False)
    guests["idle"].start_and_wait(SRC, ticks=2)
    guests["dirty"].start_and_wait(SRC, ticks=2)
    before = {h: host_snapshot(lab, h) for h in HOSTS}

    # Check mode: the plan, and nothing changed anywhere (no mark, no scratch file, no pool).
    run = ansible.playbook(PLAYBOOK, evacuate_vars(), check=True)
    assert not run.failed, run.stdout[-3000:]
    plan = run.task("Plan where every guest")["plan"]
    three = [guests[k] for k in ("off", "idle", "dirty")]
    assert sorted(m["name"] for m in plan["moves"]) == sorted(g.name for g in three), plan
    assert {m["name"]: m["strategy"] for m in plan["moves"]}["evac-off"] == "offline"
    assert all(m["destination"] in DESTINATIONS for m in plan["moves"])
    assert not plan["unplaceable"] and not plan["not_migratable"]
    assert {h: host_snapshot(lab, h) for h in HOSTS} == before
    assert not marked(lab, SRC)

    # The evacuation itself as an AWX job template runs it: the pattern's playbook through ansible-runner,
    # the survey's answers as strings.
    run = runner.playbook(PATTERN_PLAYBOOK, evacuate_vars(evacuate_max_outgoing="2", evacuate_max_incoming="2",
                                                          evacuate_poll_interval="2", evacuate_policy="fail",
                                                          evacuate_force_off="false"), tmp_path)
    assert run.status == "successful", run.stdout[-3000:]
    result = run.task("Move the guests")
    stats = run.custom_stats["kvm_migration_evacuation"]
    assert stats["source"] == SRC and sorted(m["name"] for m in stats["moves"]) == sorted(g.name for g in three)
    assert {r["name"]: r["result"] for r in result["moves"]} == {g.name: "moved" for g in three}, result
    # The cap, proven from the start and end times: never more than two at once.
    running = peak = 0
    for event in sorted(result["timeline"], key=lambda e: (e["t"], e["event"] == "start")):
        running += 1 if event["event"] == "start" else -1
        peak = max(peak, running)
    assert peak <= 2 and result["peak_concurrency"] <= 2, result["timeline"]

    planned = {m["name"]: m["destination"] for m in run.task("Plan where every guest")["plan"]["moves"]}
    for key in ("idle", "dirty"):
        g = guests[key]
        assert where(g) == {planned[g.name]: "running"}, where(g)
        proof = g.proof([SRC, planned[g.name]])
        assert not proof["problems"], proof
        assert len(proof["boot_ids"]) == 1, proof
    off = guests["off"]
    assert where(off) == {planned[off.name]: "shut off"}
    assert lab.exec(planned[off.name], ["qemu-img", "check", "-q", off.disk_path], check=False).returncode == 0
    assert marked(lab, SRC)

    # The same evacuation again: nothing on the source, the mark in place, no change.
    rerun = ansible.playbook(PLAYBOOK, evacuate_vars())
    assert not rerun.failed, rerun.stdout[-3000:]
    assert rerun.task("Plan where every guest")["plan"]["moves"] == []
    assert rerun.changed == 0, [t["task"]["name"] for t in rerun.tasks
                                if any(h.get("changed") for h in t["hosts"].values())]

    # Placement never picks a host in maintenance: hv-a is one now, so a plan from hv-b may use only hv-c.
    plan_b = ansible.module(planned["evac-idle"], "kvm.migration.evacuation_plan", {
        "candidates": [{"name": SRC, "uri": f"qemu+ssh://{SRC}/system", "maintenance": True},
                       {"name": "x", "uri": "qemu+ssh://hv-nonexistent/system"}],
        "guests": ["evac-idle"], "link_speed": 100}).task("probe")
    assert plan_b["plan"]["moves"] == [], plan_b
    assert plan_b["plan"]["unplaceable"][0]["reasons"][SRC] == "the host is in maintenance"
    assert "x" in plan_b["plan"]["unreachable"]

    # Back into service, the guests brought back from the record in the mark: check mode first (nothing moves).
    recorded = {m["name"]: m["to"] for m in ansible.module(SRC, "kvm.migration.migration_info", {})
                .task("probe")["maintenance"]["moved"]}
    assert recorded == {g.name: planned[g.name] for g in three}, recorded
    before = {h: host_snapshot(lab, h) for h in HOSTS}
    back = evacuate_vars(evacuate_state="active", evacuate_return="true")
    dry = ansible.playbook(PLAYBOOK, back, check=True)
    assert not dry.failed, dry.stdout[-3000:]
    assert {h: host_snapshot(lab, h) for h in HOSTS} == before and marked(lab, SRC)

    returned = ansible.playbook(PLAYBOOK, back)
    assert not returned.failed, returned.stdout[-3000:]
    assert not marked(lab, SRC)
    # Within the caps (2 in, 2 out): two batches, each started as jobs that run side by side before any wait.
    starts = [t["hosts"][SRC]["results"] for t in returned.tasks
              if "Start moving back" in t["task"]["name"]]
    assert [len(batch) for batch in starts] == [2, 1], starts
    assert all(r.get("ansible_job_id") and r.get("started") for batch in starts for r in batch), starts
    for key in ("idle", "dirty"):
        g = guests[key]
        assert where(g) == {SRC: "running"}, where(g)
        proof = g.proof([SRC, planned[g.name]])
        assert not proof["problems"] and len(proof["boot_ids"]) == 1, proof
    assert where(off) == {SRC: "shut off"}
    for g in three:  # evacuate_return_cleanup: nothing of the guest stays where it was parked
        assert lab.exec(planned[g.name], ["test", "-e", g.disk_path], check=False).returncode != 0, g.name
    assert lab.exec(SRC, ["qemu-img", "check", "-q", off.disk_path], check=False).returncode == 0

    again = ansible.playbook(PLAYBOOK, back)
    assert not again.failed and again.changed == 0, again.stdout[-3000:]


def test_a_guest_that_fits_nowhere_fails_skips_or_moves_offline_as_the_policy_says(lab, ansible, guests):
    """A memory margin no host has makes every running guest fit nowhere; a shut-off one needs no memory."""
    big, off = guests["idle"], guests["off"]
    big.start_and_wait(SRC, ticks=2)
    off.define(SRC, start=False)
    hungry = {"evacuate_memory_margin": 1024 * 1024}
    before = {h: host_snapshot(lab, h) for h in HOSTS}

    failed = ansible.playbook(PLAYBOOK, evacuate_vars(**hungry))
    assert failed.failed
    message = failed.task("Refuse, before anything moves")["msg"]
    assert big.name in message and "Nothing was moved" in message and off.name not in message, message
    assert {h: host_snapshot(lab, h) for h in HOSTS} == before
    assert not marked(lab, SRC)

    skipped = ansible.playbook(PLAYBOOK, evacuate_vars(evacuate_policy="skip", **hungry))
    assert not skipped.failed, skipped.stdout[-3000:]
    assert [r["name"] for r in skipped.task("Move the guests")["moves"]] == [off.name]
    assert where(big) == {SRC: "running"}
    assert list(where(off).values()) == ["shut off"] and SRC not in where(off)
    assert marked(lab, SRC)

    # shutdown: the lab guest ignores ACPI, so the short timeout ends in a forced power-off, then the offline move.
    shut = ansible.playbook(PLAYBOOK, evacuate_vars(evacuate_policy="shutdown", evacuate_shutdown_timeout=4,
                                                    evacuate_force_off=True, **hungry))
    assert not shut.failed, shut.stdout[-3000:]
    rows = shut.task("Move the guests")["moves"]
    assert [(r["name"], r["strategy"], r["result"]) for r in rows] == [(big.name, "offline", "moved")], rows
    assert list(where(big).values()) == ["shut off"] and SRC not in where(big)


def test_an_operator_abort_stops_the_evacuation_and_leaves_every_guest_in_one_place(lab, ansible, guests):
    """Two idle guests, one at a time at 2 MiB/s: the abort playbook cancels the running migration; the guest
    not started stays on the source, and nothing is left on the destinations."""
    pair = (guests["idle"], guests["idle2"])
    for g in pair:
        g.start_and_wait(SRC, ticks=2)
    before = {h: host_snapshot(lab, h) for h in DESTINATIONS}
    proc = ansible.playbook(PLAYBOOK, evacuate_vars(evacuate_max_outgoing=1,
                                                    evacuate_migrate_options={"bandwidth": 2}), background=True)
    jobs = wait_for_jobs(lab, pair, 1)
    time.sleep(3)
    abort = ansible.playbook(ROOT / "playbooks" / "abort_migrations.yml", {"kvm_migration_source": SRC})
    assert not abort.failed, abort.stdout[-3000:]
    assert abort.task("Cancel the outgoing")["aborted"] == [jobs[0].name]
    run = ansible.wait(proc)
    assert run.failed
    result = run.task("Move the guests")
    assert result["aborted"] is True, result
    rows = {r["name"]: r for r in result["moves"]}
    assert rows[jobs[0].name]["result"] == "failed"
    assert all(r["result"] == "not started" for n, r in rows.items() if n != jobs[0].name), rows
    for g in pair:
        assert where(g) == {SRC: "running"}, where(g)
        assert not g.proof([SRC])["problems"]
    assert {h: host_snapshot(lab, h) for h in DESTINATIONS} == before


def test_one_migration_failing_leaves_that_guest_on_the_source_and_the_others_finish(lab, ansible, guests):
    """Two idle guests at 3 MiB/s each, one to hv-b and one to hv-c (placement spreads equal guests); hv-c's
    link is cut while both run and comes back 20 s later."""
    pair = (guests["idle"], guests["idle2"])
    for g in pair:
        g.start_and_wait(SRC, ticks=2)
    before_c = host_snapshot(lab, "hv-c")
    proc = ansible.playbook(PLAYBOOK, evacuate_vars(evacuate_migrate_options={"bandwidth": 3}), background=True)
    try:
        wait_for_jobs(lab, pair, 2)
        subprocess.run(["ip", "link", "set", "vb-hv-c", "down"], check=True)
        time.sleep(20)
    finally:
        subprocess.run(["ip", "link", "set", "vb-hv-c", "up"], check=False)
    run = ansible.wait(proc)
    assert run.failed
    plan = {m["name"]: m["destination"] for m in run.task("Plan where every guest")["plan"]["moves"]}
    assert sorted(plan.values()) == ["hv-b", "hv-c"], plan
    rows = {r["name"]: r for r in run.task("Move the guests")["moves"]}
    cut = next(n for n, d in plan.items() if d == "hv-c")
    kept = next(n for n, d in plan.items() if d == "hv-b")
    assert rows[cut]["result"] == "failed" and rows[cut]["guest_location"] == "source", rows[cut]
    assert rows[kept]["result"] == "moved", rows[kept]
    message = run.task("Move the guests")["msg"]
    assert cut in message and "now on source" in message, message
    for g in pair:
        home = SRC if g.name == cut else "hv-b"
        assert where(g) == {home: "running"}, where(g)
        proof = g.proof([SRC, "hv-b"])
        assert not proof["problems"] and len(proof["boot_ids"]) == 1, proof
    assert host_snapshot(lab, "hv-c") == before_c
