"""Placement, decided concurrency and the schedule of an evacuation, with numbers (no libvirt in them)."""

from __future__ import annotations

import math

from ansible_collections.kvm.migration.plugins.module_utils._evacuation import (
    MIB,
    Admission,
    Candidate,
    Guest,
    Move,
    decide_parallelism,
    duration,
    order,
    place,
    simulate,
)

GIB = 1024 * MIB
PASS = {"verdict": "pass", "blockers": [], "space": {"/var/lib/libvirt/images": 1 * GIB}, "disk_bytes": 1 * GIB}


def guest(name, memory_mib=1024, state="running", dirty=0.0, checks=None, candidates=("hv2", "hv3")):
    return Guest(name=name, state=state, persistent=True, memory_bytes=memory_mib * MIB,
                 touched_bytes=memory_mib * MIB, dirty_rate_mib_s=dirty,
                 checks=checks if checks is not None else {c: dict(PASS) for c in candidates})


def hosts(free_mib=(8192, 8192), reserved_mib=0, room=100 * GIB):
    return [Candidate(name="hv%d" % (i + 2), uri="qemu+ssh://hv%d/system" % (i + 2), free_bytes=f * MIB,
                      reserved_bytes=reserved_mib * MIB, disk_room={"/var/lib/libvirt/images": room})
            for i, f in enumerate(free_mib)]


def test_guests_spread_to_the_candidate_with_the_most_memory_left():
    moves, unplaceable, stuck = place([guest("a", 4096), guest("b", 2048), guest("c", 1024)], hosts(), 256 * MIB)
    assert not unplaceable and not stuck
    where = {m.name: m.destination for m in moves}
    # a (biggest) first to hv3 (tie broken by name, highest), then b to the other host, then c to the roomier one
    assert where["a"] != where["b"]
    assert where["c"] == where["b"], where
    assert all("passes every check" in m.why for m in moves)


def test_memory_is_counted_for_all_guests_placed_together():
    # Each host has room for one 3 GiB guest with its margin, not two.
    moves, unplaceable, _stuck = place([guest("a", 3072), guest("b", 3072), guest("c", 3072)],
                                       hosts((4000, 4000)), 256 * MIB)
    assert sorted(m.name for m in moves) == ["a", "b"]
    assert [u["name"] for u in unplaceable] == ["c"]
    assert all("needs 3328 MiB with the margin" in why for why in unplaceable[0]["reasons"].values())


def test_reserved_memory_and_maintenance_keep_hosts_out():
    cands = hosts((8192, 8192), reserved_mib=7900)
    cands[1].maintenance = True
    moves, unplaceable, _stuck = place([guest("a", 512)], cands, 256 * MIB)
    assert not moves
    reasons = unplaceable[0]["reasons"]
    assert reasons["hv3"] == "the host is in maintenance"
    assert "7900 MiB reserved" in reasons["hv2"]


def test_a_shut_off_guest_needs_no_memory_but_needs_disk_room():
    cands = hosts((100, 100), room=1536 * MIB)
    moves, unplaceable, _stuck = place([guest("a", 1024, state="shutoff"), guest("b", 1024, state="shutoff")], cands, 0)
    assert {m.name: m.strategy for m in moves} == {"a": "offline", "b": "offline"}
    assert moves[0].destination != moves[1].destination  # 1 GiB each, 1.5 GiB room per host
    third, unplaceable, _stuck = place([guest("c", 1024, state="shutoff")], cands, 0)
    assert not third and "not enough room" in unplaceable[0]["reasons"]["hv2"]


def test_a_blocker_of_the_guest_itself_makes_it_not_migratable():
    devices = {"verdict": "fail", "blockers": ["devices: host PCI device 0000:03:00.0"],
               "intrinsic": ["devices: host PCI device 0000:03:00.0"]}
    cpu = {"verdict": "fail", "blockers": ["cpu: the destination lacks avx512f"], "intrinsic": []}
    moves, unplaceable, stuck = place(
        [guest("gpu", checks={"hv2": devices, "hv3": devices}), guest("avx", checks={"hv2": cpu, "hv3": dict(PASS)})],
        hosts(), 256 * MIB)
    assert [s["name"] for s in stuck] == ["gpu"] and "host PCI device" in stuck[0]["reasons"][0]
    assert [(m.name, m.destination) for m in moves] == [("avx", "hv3")]
    assert not unplaceable


def live_move(name, memory_mib=1024, disk=0):
    return Move(name=name, destination="hv2", destination_uri="x", strategy="live", why="", memory_bytes=memory_mib * MIB,
                disk_bytes=disk)


def test_an_idle_guest_may_share_the_link_a_dirty_one_runs_alone_and_a_hopeless_one_is_refused():
    link = 100.0
    idle, busy, hopeless = live_move("idle"), live_move("busy"), live_move("hopeless")
    assert decide_parallelism(idle, guest("idle", dirty=1), link, 0, 4, 250, "off", True) is None
    assert idle.max_parallel == 4 and idle.converge_with == "precopy"
    # 30 MiB/s dirtying over 100 MiB/s converges alone (rho 0.3) but not over a third of it (rho 0.9+).
    assert decide_parallelism(busy, guest("busy", dirty=30), link, 0, 4, 250, "off", True) is None
    assert busy.max_parallel == 2, busy
    # Faster than the whole link, and neither post-copy nor auto-converge allowed: no live migration.
    why = decide_parallelism(hopeless, guest("hopeless", dirty=400), link, 0, 4, 250, "off", False)
    assert why and "pre-copy will not converge" in why
    # With post-copy allowed, it runs alone with post-copy.
    assert decide_parallelism(hopeless, guest("hopeless", dirty=400), link, 0, 4, 250, "on_demand", False) is None
    assert (hopeless.max_parallel, hopeless.converge_with) == (1, "postcopy")


def test_admission_keeps_caps_and_every_running_migration_within_its_share():
    rule = Admission(max_outgoing=3, max_incoming=2)
    a, b, c, alone = live_move("a"), live_move("b"), live_move("c"), live_move("alone")
    for m in (a, b, c):
        m.max_parallel = 3
    alone.max_parallel = 1
    c.destination = "hv3"
    # Two to hv2 at most; c goes to hv3 beside them.
    assert rule.next_moves([a, b, c], []) == [a, b, c]
    d = live_move("d")
    d.max_parallel = 3
    assert rule.next_moves([d], [a, b]) == []  # hv2's cap
    # The guest that must run alone waits for an empty link and holds back the queue behind it.
    assert rule.next_moves([alone, c], [a]) == []
    assert rule.next_moves([alone, c], []) == [alone]
    # Nothing joins a guest that must run alone.
    assert rule.next_moves([c], [alone]) == []


def test_the_simulated_schedule_never_exceeds_the_caps_and_beats_a_serial_loop():
    guests = {n: guest(n, 512, dirty=d) for n, d in (("a", 1), ("b", 1), ("c", 1), ("d", 20))}
    moves = []
    for name in guests:
        m = live_move(name, 512)
        m.destination = "hv2" if name in "ac" else "hv3"
        decide_parallelism(m, guests[name], 100.0, 0, 2, 250, "off", True)
        moves.append(m)
    moves = order(moves)
    rule = Admission(2, 2)
    total = simulate(moves, rule, lambda m, running: duration(m, guests[m.name], 100.0, 0, running, 250, "off", True),
                     100.0)
    events = sorted([(m.start_s, 1) for m in moves] + [(m.start_s + m.predicted_seconds, -1) for m in moves],
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _t, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    serial = sum(duration(m, guests[m.name], 100.0, 0, 1, 250, "off", True) for m in moves)
    # The link is the bottleneck: sharing it costs the dirty guest extra rounds, which the admission keeps small.
    assert math.isfinite(total) and total <= serial * 1.1, (total, serial)
    lower = sum(512 * MIB for _m in moves) / (100.0 * MIB)
    assert total >= lower


def test_offline_moves_take_the_disk_over_the_link_share():
    m = Move(name="off", destination="hv2", destination_uri="x", strategy="offline", why="", memory_bytes=GIB,
             disk_bytes=1000 * MIB)
    assert round(duration(m, guest("off", state="shutoff"), 100.0, 0, 2, 250, "off", True)) == 25
    assert math.isnan(duration(m, guest("off", state="shutoff"), 0.0, 0, 1, 250, "off", True))


def test_a_dirtier_measured_a_little_below_its_share_still_runs_alone():
    """Measured at 8 MiB/s on a 23.8 MiB/s link: half the link would be rho 0.67 as measured, but short samples
    are off by up to ~40 % (the bench saw such a guest send 690 MiB instead of 480 beside another)."""
    move = live_move("dirty", 320)
    assert decide_parallelism(move, guest("dirty", 320, dirty=8), 23.8, 0, 2, 250, "off", True) is None
    assert move.max_parallel == 1
    idle = live_move("idle", 320)
    assert decide_parallelism(idle, guest("idle", 320, dirty=0.5), 23.8, 0, 2, 250, "off", True) is None
    assert idle.max_parallel == 2
