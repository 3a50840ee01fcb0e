"""The convergence model, with numbers (it has no libvirt in it)."""

from __future__ import annotations

import math

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._convergence import (
    MIB,
    Workload,
    predict,
    simulate_auto_converge,
    simulate_precopy,
)

LINK = 100 * MIB  # about 1 Gbit/s


def test_an_idle_guest_converges_in_about_ram_over_bandwidth():
    p = predict(Workload(ram_bytes=256 * MIB, dirty_rate=0, bandwidth=LINK))
    assert p.converges and p.strategy == "precopy"
    assert p.rounds == 2
    assert p.estimated_total_s == pytest.approx(1.5 + 2.56, rel=0.05)
    assert p.estimated_downtime_ms == 0


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_below_the_link_pre_copy_converges_and_slower_as_rho_grows(ratio):
    w = Workload(ram_bytes=256 * MIB, dirty_rate=ratio * LINK, bandwidth=LINK)
    p = predict(w)
    assert p.converges and p.strategy == "precopy"
    # About (RAM / B) / (1 - rho), the mission's model.
    assert p.estimated_total_s - 1.5 == pytest.approx(2.56 / (1 - ratio), rel=0.35)
    assert p.estimated_downtime_ms <= 300


def test_rounds_grow_with_rho():
    rounds = [simulate_precopy(Workload(256 * MIB, r * LINK, LINK))[2] for r in (0.2, 0.5, 0.8)]
    assert rounds == sorted(rounds) and rounds[0] < rounds[-1]


@pytest.mark.parametrize("ratio", [1.5, 3.0])
def test_above_the_link_pre_copy_does_not_converge(ratio):
    w = Workload(ram_bytes=256 * MIB, dirty_rate=ratio * LINK, bandwidth=LINK)
    assert not simulate_precopy(w)[0]
    assert predict(w).strategy == "auto_converge"
    assert predict(Workload(256 * MIB, ratio * LINK, LINK, postcopy_allowed=True)).strategy == "postcopy"
    offline = predict(Workload(256 * MIB, ratio * LINK, LINK, auto_converge_allowed=False))
    assert offline.strategy == "offline" and math.isinf(offline.estimated_total_s)


def test_a_small_working_set_fits_in_the_downtime_whatever_the_rate():
    # 20 MiB rewritten flat out, but 30 MiB fit in 300 ms at 100 MiB/s.
    p = predict(Workload(256 * MIB, dirty_rate=10 * LINK, bandwidth=LINK, working_set=20 * MIB))
    assert p.converges and p.strategy == "precopy"
    assert any("fits in the downtime budget" in r for r in p.reasons)


def test_a_larger_downtime_lets_a_working_set_converge():
    w = Workload(256 * MIB, dirty_rate=3 * LINK, bandwidth=LINK, working_set=40 * MIB)
    assert not predict(w).converges
    w.max_downtime = 0.5
    assert predict(w).converges


def test_disk_copy_comes_first():
    p = predict(Workload(64 * MIB, 0, LINK, disk_bytes=1000 * MIB))
    assert p.estimated_total_s > 10 and any("disk to copy first" in r for r in p.reasons)


def test_no_bandwidth_never_converges():
    assert not simulate_precopy(Workload(64 * MIB, 0, 0))[0]


def test_prediction_serialises():
    d = predict(Workload(64 * MIB, 3 * LINK, LINK, auto_converge_allowed=False)).as_dict()
    assert d["strategy"] == "offline" and d["estimated_total_s"] is None and d["rho"] == 3.0


from ansible_collections.kvm.migration.plugins.module_utils._convergence import Controller, Policy  # noqa: E402


def stats(remaining, iteration=1, disk_remaining=0, disk_total=0):
    return {"data_remaining": remaining, "memory_iteration": iteration, "memory_processed": 1,
            "disk_remaining": disk_remaining, "disk_total": disk_total}


def run(controller, samples):
    actions = []
    for t, s in samples:
        actions += [(t, a, v) for a, v, _r in controller.decide(t, s)]
    return actions


def test_a_converging_migration_is_left_alone():
    c = Controller(Policy(completion_timeout=100, progress_timeout=30, downtime_schedule=[300, 400, 500]))
    samples = [(t, stats(1000 - 40 * t)) for t in range(20)]
    assert run(c, samples) == []


def test_the_downtime_rises_step_by_step_while_progress_stalls():
    c = Controller(Policy(completion_timeout=1000, downtime_schedule=[100, 150, 200, 300, 500], step_interval=5))
    samples = [(t, stats(500 + (t % 3))) for t in range(0, 40)]
    steps = [(t, v) for t, a, v in run(c, samples) if a == "set_downtime"]
    assert [v for _t, v in steps] == [150, 200, 300, 500]
    assert [t for t, _v in steps] == [5, 10, 15, 20]


def test_completion_timeout_takes_its_action_once():
    c = Controller(Policy(completion_timeout=10, completion_action="abort"))
    actions = run(c, [(t, stats(1000 - t)) for t in range(0, 30, 2)])
    assert actions == [(10, "abort", None)]


def test_postcopy_waits_for_the_memory_phase():
    c = Controller(Policy(completion_timeout=10, completion_action="postcopy", postcopy="on_demand"))
    # The disk mirror is still running at t=10: no switch yet (QEMU would ignore it and run forever).
    samples = [(t, stats(1000 - t, iteration=0, disk_remaining=50 - 2 * t, disk_total=100)) for t in range(0, 26, 2)]
    samples += [(26, stats(900, iteration=1, disk_remaining=0, disk_total=100))]
    assert run(c, samples) == [(26, "postcopy", None)]


def test_immediate_postcopy_switches_as_soon_as_ram_moves():
    c = Controller(Policy(completion_timeout=100, postcopy="immediate"))
    assert run(c, [(0, stats(1000, iteration=0) | {"memory_processed": 0}), (1, stats(900))]) == [(1, "postcopy", None)]


def test_auto_strategy_switches_to_postcopy_when_stalled_at_the_top():
    c = Controller(Policy(completion_timeout=1000, downtime_schedule=[300, 500], step_interval=5, postcopy="on_demand",
                          switch_when_stalled=True))
    actions = run(c, [(t, stats(500)) for t in range(0, 20)])
    assert [(t, a) for t, a, _v in actions] == [(5, "set_downtime"), (10, "postcopy")]


def test_pause_then_abort_on_the_other_timeout():
    c = Controller(Policy(completion_timeout=30, completion_action="abort", progress_timeout=10, progress_action="pause"))
    actions = run(c, [(t, stats(500)) for t in range(0, 40, 2)])
    assert [(t, a) for t, a, _v in actions] == [(10, "pause"), (30, "abort")]


def test_nothing_aborts_a_running_postcopy():
    c = Controller(Policy(completion_timeout=5, completion_action="abort", postcopy="immediate"))
    actions = run(c, [(t, stats(500)) for t in range(0, 10)])
    assert [a for _t, a, _v in actions] == ["postcopy"]
    assert any("cannot be undone" in reason for _t, _e, reason in c.events)


@pytest.mark.parametrize("ratio, certain", [(0.5, True), (0.85, False), (1.1, False), (1.5, True)])
def test_a_verdict_near_rho_one_is_marked_uncertain(ratio, certain):
    p = predict(Workload(256 * MIB, dirty_rate=ratio * LINK, bandwidth=LINK))
    assert p.certain is certain
    assert any("uncertain" in r for r in p.reasons) is not certain
    assert p.as_dict()["certain"] is certain


def test_a_working_set_that_fits_makes_the_verdict_certain_whatever_rho():
    assert predict(Workload(256 * MIB, dirty_rate=LINK, bandwidth=LINK, working_set=20 * MIB)).certain


def test_auto_converge_throttles_harder_and_longer_as_rho_grows():
    runs = [simulate_auto_converge(Workload(256 * MIB, r * LINK, LINK)) for r in (1.5, 3.0, 10.0)]
    assert all(converges for converges, _s, _r, _t in runs)
    assert [s for _c, s, _r, _t in runs] == sorted(s for _c, s, _r, _t in runs)
    throttles = [t for _c, _s, _r, t in runs]
    assert throttles == sorted(throttles) and 0.2 <= throttles[0] and throttles[-1] <= 0.99


def test_auto_converge_cannot_beat_a_guest_faster_than_the_highest_throttle():
    assert not simulate_auto_converge(Workload(256 * MIB, 500 * LINK, LINK))[0]
    assert predict(Workload(256 * MIB, 500 * LINK, LINK)).strategy == "offline"


# What the benchmark measured for migrations that auto-converge finished (bench/results, docs/performance.md):
# touched RAM MiB, measured dirty rate MiB/s, link MiB/s, job seconds.
MEASURED_AUTO_CONVERGE = [(320, 78.0, 23.0, 100.5), (320, 176.0, 119.0, 18.7), (320, 150.0, 119.0, 22.1),
                          (320, 25.3, 23.0, 50.2)]


@pytest.mark.parametrize("ram, rate, link, job_s", MEASURED_AUTO_CONVERGE)
def test_auto_converge_estimate_is_an_upper_bound_within_a_factor_of_the_benchmark(ram, rate, link, job_s):
    w = Workload(ram * MIB, rate * MIB, link * MIB, max_downtime=0.4)
    p = predict(w)
    assert p.strategy == "auto_converge"
    assert job_s <= p.estimated_total_s <= 2.5 * job_s


def test_a_rising_auto_converge_throttle_counts_as_progress():
    # Defect 13: remaining bytes hover while QEMU raises its throttle 20 -> 90 %; the progress timeout (30 s)
    # must not give up while the throttle still climbs, and fires once it stops climbing.
    c = Controller(Policy(completion_timeout=1000, progress_timeout=30, downtime_schedule=[300]))
    samples = [(t, stats(500 + (t % 7)) | {"auto_converge_throttle": min(20 + 10 * (t // 10), 90)})
               for t in range(0, 100)]
    assert [a for _t, a, _v in run(c, samples)] == []
    later = [(t, stats(500) | {"auto_converge_throttle": 90}) for t in range(100, 130)]
    # The throttle stopped at t=70; with no progress since, the timeout fires 30 s later.
    assert run(c, later) == [(100, "abort", None)]


def test_completion_timeout_fires_without_samples():
    # Defect 14: no job statistics at all (the monitor gets no answer); wall time still counts.
    c = Controller(Policy(completion_timeout=10, completion_action="abort"))
    assert run(c, [(t, {}) for t in range(0, 20, 2)]) == [(10, "abort", None)]


def test_dirtyrate_and_the_engine_build_the_prediction_input_alike():
    from ansible_collections.kvm.migration.plugins.module_utils._measure import guest_workload

    w = guest_workload(256 * MIB, 12.5, 0, 64 * MIB, 300, "on_demand", None)
    assert (w.ram_bytes, w.dirty_rate, w.bandwidth, w.disk_bytes, w.max_downtime) == (
        256 * MIB, 12.5 * MIB, 1 * MIB, 64 * MIB, 0.3)  # an unknown (0) link counts as 1 MiB/s, never zero
    assert (w.postcopy_allowed, w.auto_converge_allowed) == (True, True)
    w = guest_workload(1, 1, 100, 0, 500, "off", False)
    assert (w.postcopy_allowed, w.auto_converge_allowed, w.bandwidth) == (False, False, 100 * MIB)
