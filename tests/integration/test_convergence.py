"""Convergence on real hosts: the dirty rate QEMU measures, the prediction made from it, the strategy the auto
mode picks for a guest that dirties memory faster than a capped link (and that the migration then completes),
post-copy, and the timeout actions.  Behaviour only: how fast is in bench/ and docs/performance.md."""

from __future__ import annotations

import pytest
from helpers import ROOT
from kvmlab.guestops import LabGuest

pytestmark = pytest.mark.usefixtures("lab")

SRC, DST = "hv-a", "hv-b"
DEST_URI = f"qemu+ssh://{DST}/system"


@pytest.fixture
def busy(lab):
    """A guest rewriting 48 MiB of RAM at 40 MiB/s."""
    vm = LabGuest(lab, name="busyvm", dirty_mb=48, dirty_rate=40)
    vm.remove_everywhere()
    vm.start_and_wait(SRC, ticks=3)
    yield vm
    vm.remove_everywhere()


def dirtyrate(ansible, name, **args):
    return ansible.module(SRC, "kvm.migration.dirtyrate", {"name": name, **args}).task("probe")


def migrate(ansible, vm, **args):
    return ansible.module(SRC, "kvm.migration.migrate",
                          {"name": vm.name, "dest_uri": DEST_URI, "source_cleanup": True, **args}).task("probe")


def assert_alive_on_destination(vm):
    vm.wait_ticks(DST, 2, after=max(n for n, _b in vm.ticks(SRC)))
    proof = vm.proof([SRC, DST])
    assert proof["problems"] == [], proof


def test_dirty_rate_and_prediction(lab, ansible, busy):
    capped = dirtyrate(ansible, busy.name, bandwidth=20)  # the alias of link_speed
    assert capped["changed"] is False
    assert capped["dirty_rate"]["mode"] == "page-sampling"
    assert 20 <= capped["dirty_rate"]["mib_per_s"] <= 60, capped["dirty_rate"]
    samples = capped["dirty_rate"]["samples_mib_per_s"]
    assert len(samples) == 3 and capped["dirty_rate"]["mib_per_s"] == round(sum(samples) / 3, 1), samples
    prediction = capped["prediction"]
    assert prediction["converges"] is False and prediction["strategy"] == "auto_converge"
    assert prediction["rho"] > 1 and prediction["reasons"]
    assert dirtyrate(ansible, busy.name, link_speed=20, postcopy="on_demand")["prediction"]["strategy"] == "postcopy"
    wide = dirtyrate(ansible, busy.name, link_speed=1000)
    assert wide["prediction"]["converges"] is True and wide["prediction"]["strategy"] == "precopy"
    measured = dirtyrate(ansible, busy.name, dest_uri=DEST_URI, measure_mib=16)
    assert measured["bandwidth"]["source"] == "measured" and measured["bandwidth"]["mib_per_s"] > 0
    assert lab.exec(DST, "ls /var/lib/libvirt/images | grep -c bandwidth", check=False).stdout.strip() == "0"
    assert dirtyrate(ansible, busy.name, samples=0)["msg"].startswith("samples=0 is out of range")
    refused = dirtyrate(ansible, busy.name, mode="dirty-bitmap")
    assert refused["failed"] and "needs a KVM guest" in refused["msg"]
    off = dirtyrate(ansible, "no-such-vm")
    assert off["failed"] and "is not running" in off["msg"]


def test_auto_picks_more_than_plain_precopy_and_shows_live_progress(runner, busy, monkeypatch, tmp_path):
    """A guest dirtying faster than the capped link: not plain pre-copy, and it completes.  Run as an AWX job
    template runs it: the pattern's playbook through ansible-runner, every survey answer a string, and the
    live progress lines of the action plugin in the job's event stream."""
    # The environment's value must lose to the extra var.
    monkeypatch.setenv("KVM_MIGRATION_PROGRESS_INTERVAL", "3600")
    run = runner.playbook(ROOT / "extensions/patterns/kvm_migration/playbooks/migrate.yml", {
        "live_migration_vm": busy.name, "live_migration_source": SRC, "live_migration_destination": DST,
        "live_migration_live": "true", "live_migration_storage": "auto", "live_migration_bandwidth": "20",
        "live_migration_strategy": "auto", "live_migration_postcopy": "off",
        "live_migration_source_cleanup": "true", "kvm_migration_progress_interval": "1"}, tmp_path)
    assert run.status == "successful" and run.rc == 0, run.stdout[-3000:]
    result = run.task("Migrate the VM")
    strategy = result["strategy"]
    assert strategy["prediction"]["converges"] is False
    assert strategy["chosen"] != "pre-copy" and "auto_converge" in result["flags"]
    assert strategy["measured"]["bandwidth"]["source"] == "bandwidth cap"
    assert result["summary"]["downtime_ms"] <= 500
    assert_alive_on_destination(busy)
    lines = [line.strip() for e in run.events for line in e.get("stdout", "").splitlines()
             if line.strip().startswith("hv-a: migrating busyvm")]
    assert any("% of" in line and "MiB/s" in line and "iteration" in line for line in lines), run.stdout[:3000]
    assert len(lines) >= 3, lines  # one per second, not one per hour
    # What the next workflow node gets, and the artifact ansible-runner leaves for AWX.
    report = run.custom_stats["kvm_migration_report"]
    assert {k: report[k] for k in ("vm", "from", "to", "result")} == {
        "vm": busy.name, "from": SRC, "to": DST, "result": "done"}, report
    assert report["strategy"] == strategy["chosen"] and int(report["bytes"]) > 0, report
    assert run.changed > 0 and not any(s.get("failures") for s in run.data["stats"].values()), run.data
    assert any(tmp_path.glob("artifacts/*/job_events/*.json")), list(tmp_path.rglob("*"))[:20]


def test_postcopy_when_allowed(lab, ansible, busy):
    previous = lab.set_kernel_sysctl("vm.unprivileged_userfaultfd", "1")
    try:
        result = migrate(ansible, busy, bandwidth=20, postcopy="on_demand")
        assert not result.get("failed"), result.get("msg")
        assert result["strategy"]["chosen"] == "post-copy" and "postcopy" in result["flags"]
        assert result["strategy"]["finished_by"] == "post-copy"
        assert any(e["event"] == "postcopy" for e in result["strategy"]["events"])
        assert_alive_on_destination(busy)
    finally:
        lab.set_kernel_sysctl("vm.unprivileged_userfaultfd", previous)


def test_completion_timeout_aborts_and_the_guest_stays(lab, ansible, busy):
    result = migrate(ansible, busy, strategy="manual", bandwidth=5, timeout=12)
    assert result["failed"] and "not finished within the completion timeout of 12 s" in result["msg"]
    assert result["guest_location"] == "source"
    assert busy.state(SRC) == "running" and busy.state(DST) == "absent"
    busy.wait_ticks(SRC, 2, after=max(n for n, _b in busy.ticks(SRC)))
    assert busy.proof([SRC, DST])["problems"] == []


def test_progress_timeout_pauses_and_the_migration_finishes(lab, ansible, busy):
    result = migrate(ansible, busy, strategy="manual", bandwidth=20, progress_timeout=8, progress_action="pause")
    assert not result.get("failed"), result.get("msg")
    assert result["strategy"]["finished_by"] == "pausing the guest"
    assert [e["event"] for e in result["strategy"]["events"]] == ["pause"]
    # Paused to finish, running again on the destination.
    assert busy.state(DST) == "running"
    assert_alive_on_destination(busy)


def test_a_migration_that_cannot_finish_is_refused_before_it_starts(lab, ansible, busy):
    result = migrate(ansible, busy, bandwidth=5, auto_converge=False)
    assert result["failed"] and "would not converge" in result["msg"]
    assert "allow postcopy" in result["hint"]
    assert busy.state(SRC) == "running" and busy.state(DST) == "absent"
    assert lab.exec(DST, ["test", "-e", busy.disk_path], check=False).returncode != 0


def test_a_stated_link_speed_gives_the_prediction_in_check_mode_without_capping(lab, ansible, busy):
    result = ansible.module(SRC, "kvm.migration.migrate",
                            {"name": busy.name, "dest_uri": DEST_URI, "link_speed": 20}, check=True).task("probe")
    assert result["changed"] and not result.get("failed"), result
    strategy = result["strategy"]
    assert strategy["measured"]["bandwidth"] == {"mib_per_s": 20.0, "source": "link speed (stated)"}
    assert strategy["prediction"]["strategy"] != "precopy", strategy
    assert busy.state(SRC) == "running" and busy.state(DST) == "absent"
    assert lab.exec(DST, ["test", "-e", busy.disk_path], check=False).returncode != 0


@pytest.fixture
def shaped_100mbit(lab):
    """Both hosts' links shaped to 100 Mbit/s (11.4 MiB/s measured, lab-facts.md), as the review's lab was."""
    for host in (SRC, DST):
        lab.exec(host, "tc qdisc replace dev host0 root tbf rate 100mbit burst 256kb latency 100ms")
    yield 100e6 / 8 / 2 ** 20
    for host in (SRC, DST):
        lab.exec(host, "tc qdisc del dev host0 root", check=False)


def test_the_default_path_converges_a_guest_dirtying_faster_than_the_link(lab, ansible, shaped_100mbit):
    """Defect 13: every option at its default (strategy auto, no link_speed, no bandwidth cap) and a guest
    dirtying 1.5x the link.  The engine measures the link itself, escalates while the job runs instead of
    waiting for the progress timeout, and the result says what was measured, predicted, chosen and done."""
    rate = round(1.5 * shaped_100mbit)
    vm = LabGuest(lab, name="defaultvm", memory_mib=256, dirty_mb=96, dirty_rate=rate)
    vm.remove_everywhere()
    try:
        vm.start_and_wait(SRC, ticks=3)
        result = migrate(ansible, vm)
        strategy = result.get("strategy") or {}
        print("default path:", result.get("msg"), {k: strategy.get(k) for k in ("measured", "chosen", "finished_by")})
        assert not result.get("failed"), result.get("msg")
        measured = strategy["measured"]["bandwidth"]
        assert measured["source"] == "measured", measured
        # The measurement goes through the shaped link: it cannot see more than the link carries.
        assert measured["mib_per_s"] <= shaped_100mbit * 1.2, measured
        assert strategy["prediction"]["converges"] is False, strategy["prediction"]
        assert strategy["chosen"] == "auto-converge" and strategy["finished_by"] in ("auto-converge", "pre-copy")
        assert result["summary"]["downtime_ms"] <= 500, result["summary"]
        assert_alive_on_destination(vm)
    finally:
        vm.remove_everywhere()
