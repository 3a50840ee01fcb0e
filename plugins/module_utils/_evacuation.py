# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Evacuating a host: where each guest goes, how many move at once, in which order.  Plain Python (no libvirt,
no Ansible), shared by the evacuation_plan module (which decides) and the evacuate action (which admits each
migration by the same rule while the real ones run).

Placement: first-fit decreasing by memory, each guest to the candidate that passed every preflight check and
keeps the most free memory after it (memory and disk room are counted cumulatively per candidate).

Concurrency: every migration leaves the same source, so they share its link.  For each live guest the plan
finds the largest number of migrations running at once (itself included) at which pre-copy still converges with
its share of the link; a migration starts only while every running one, and the new one, stays within its own
number.  Guests that converge only alone run alone; a guest that needs post-copy or auto-converge to finish
runs alone with it, and one that cannot finish at all is reported as not live-migratable."""

from __future__ import annotations

import dataclasses
import math

from ansible_collections.kvm.migration.plugins.module_utils._convergence import predict
from ansible_collections.kvm.migration.plugins.module_utils._measure import guest_workload
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB

# Checks whose failure is the guest's own, the same on every candidate: no placement can help.
INTRINSIC_CHECKS = ("devices", "domain", "machine", "firmware", "cache")
# Seconds an offline move or a migration spends on its fixed steps (connections, definition, verification).
FIXED_SECONDS = 5.0
POLICIES = ("fail", "skip", "shutdown")
# Dirty rates from short page-sampling measurements are off by up to ~40 % (docs/performance.md); the share a
# guest may run at is decided for a rate this much higher, so that noise does not make a dirtier share the link.
DIRTY_RATE_MARGIN = 1.3


@dataclasses.dataclass
class Candidate:
    name: str
    uri: str
    free_bytes: int = 0  # free memory the host reports
    reserved_bytes: int = 0  # memory kept free for the host itself
    maintenance: bool = False
    link_mib_s: float = 0.0  # measured or stated rate from the source to this host
    assigned_bytes: int = 0  # memory (and margin) of the guests placed here so far
    disk_room: dict = dataclasses.field(default_factory=dict)  # directory -> bytes still free

    def memory_left(self):
        return self.free_bytes - self.reserved_bytes - self.assigned_bytes


@dataclasses.dataclass
class Guest:
    name: str
    state: str  # running, paused, shutoff, ...
    persistent: bool
    memory_bytes: int
    touched_bytes: int = 0
    dirty_rate_mib_s: float = 0.0
    checks: dict = dataclasses.field(default_factory=dict)  # candidate name -> {"verdict", "blockers", "memory", "space", "disk_bytes"}

    @property
    def live(self):
        return self.state in ("running", "blocked", "paused")


@dataclasses.dataclass
class Move:
    name: str
    destination: str
    destination_uri: str
    strategy: str  # live or offline
    why: str
    memory_bytes: int
    disk_bytes: int
    persistent: bool = True
    dirty_rate_mib_s: float = 0.0
    max_parallel: int = 1  # migrations at once (itself included) at which this one still converges
    converge_with: str = "precopy"  # precopy, auto_converge or postcopy: what finishes it at max_parallel
    predicted_seconds: float = 0.0  # at its share when it starts in the simulated schedule
    predicted_downtime_ms: float = 0.0
    start_s: float = 0.0
    prediction: dict = None

    def as_dict(self):
        data = dataclasses.asdict(self)
        for key in ("predicted_seconds", "start_s", "predicted_downtime_ms", "dirty_rate_mib_s"):
            data[key] = round(data[key], 1) if math.isfinite(data[key]) else None
        return data


def place(guests, candidates, memory_margin_bytes):
    """(moves, unplaceable, not_migratable): a destination for every guest that fits somewhere."""
    moves, unplaceable, not_migratable = [], [], []
    usable = [c for c in candidates if not c.maintenance]
    for guest in sorted(guests, key=lambda g: (-g.memory_bytes, g.name)):
        intrinsic = _intrinsic_blockers(guest, usable)
        if intrinsic:
            not_migratable.append({"name": guest.name, "state": guest.state, "reasons": intrinsic})
            continue
        reasons, fits = {}, []
        for cand in candidates:
            if cand.maintenance:
                reasons[cand.name] = "the host is in maintenance"
                continue
            check = guest.checks.get(cand.name) or {}
            if check.get("verdict") == "fail":
                reasons[cand.name] = "; ".join(check.get("blockers") or ["preflight failed"])
                continue
            need = guest.memory_bytes + memory_margin_bytes if guest.live else 0
            if need > cand.memory_left():
                reasons[cand.name] = ("%d MiB of memory free for guests after those placed there (%d MiB reserved), "
                                      "%s needs %d MiB with the margin"
                                      % (max(cand.memory_left(), 0) // MIB, cand.reserved_bytes // MIB, guest.name,
                                         need // MIB))
                continue
            short = [d for d, n in (check.get("space") or {}).items() if n > cand.disk_room.get(d, n)]
            if short:
                reasons[cand.name] = "not enough room left in %s after the guests placed there" % ", ".join(short)
                continue
            fits.append(cand)
        if not fits:
            unplaceable.append({"name": guest.name, "state": guest.state, "reasons": reasons})
            continue
        need = guest.memory_bytes + memory_margin_bytes if guest.live else 0
        best = max(fits, key=lambda c: (c.memory_left() - need, c.name))
        best.assigned_bytes += need
        space = (guest.checks.get(best.name) or {}).get("space") or {}
        for directory, bytes_needed in space.items():
            if directory in best.disk_room:
                best.disk_room[directory] -= bytes_needed
        others = [c.name for c in fits if c is not best]
        why = ("passes every check; %s the most memory free after this guest (%d MiB)"
               % (("of %s, it keeps" % ", ".join([best.name] + others)) if others else "it keeps",
                  best.memory_left() // MIB))
        moves.append(Move(name=guest.name, destination=best.name, destination_uri=best.uri,
                          strategy="live" if guest.live else "offline", why=why, memory_bytes=guest.memory_bytes,
                          disk_bytes=(guest.checks.get(best.name) or {}).get("disk_bytes", 0),
                          persistent=guest.persistent, dirty_rate_mib_s=guest.dirty_rate_mib_s))
    return moves, unplaceable, not_migratable


def _intrinsic_blockers(guest, candidates):
    """The blockers that every usable candidate reports alike for checks that depend on the guest alone."""
    if not candidates:
        return []
    per_candidate = []
    for cand in candidates:
        check = guest.checks.get(cand.name) or {}
        per_candidate.append(set(check.get("intrinsic") or ()))
    common = set.intersection(*per_candidate) if per_candidate else set()
    return sorted(common)


def share(move, link_mib_s, running):
    """MiB/s a migration gets while `running` migrations (itself included) share the source's link."""
    return link_mib_s / max(running, 1)


def decide_parallelism(move, guest, link_mib_s, dest_link_mib_s, max_outgoing, max_downtime_ms, postcopy,
                       auto_converge):
    """Set move.max_parallel and move.converge_with from the prediction at each share of the link.  Returns
    None, or the reason the guest cannot migrate live at all."""
    if move.strategy != "live" or not link_mib_s:
        move.max_parallel = max_outgoing
        return None
    best = 0
    for running in range(1, max_outgoing + 1):
        rate = min(share(move, link_mib_s, running), dest_link_mib_s or link_mib_s)
        prediction = predict(guest_workload(guest.touched_bytes or guest.memory_bytes,
                                            guest.dirty_rate_mib_s * DIRTY_RATE_MARGIN, rate, move.disk_bytes,
                                            max_downtime_ms, "off", False))
        if prediction.converges and prediction.certain:
            best = running
        else:
            break
    if best:
        move.max_parallel, move.converge_with = best, "precopy"
        return None
    alone = predict(guest_workload(guest.touched_bytes or guest.memory_bytes, guest.dirty_rate_mib_s,
                                   min(link_mib_s, dest_link_mib_s or link_mib_s), move.disk_bytes, max_downtime_ms,
                                   postcopy, auto_converge))
    if alone.strategy in ("postcopy", "auto_converge") or (alone.converges and not alone.certain):
        move.max_parallel, move.converge_with = 1, alone.strategy
        return None
    return "; ".join(alone.reasons)


class Admission:
    """Which queued migrations may start now: caps per source and per destination, and every running
    migration (and the new one) within its own max_parallel.  The same rule for the plan's simulation and for
    the real run."""

    def __init__(self, max_outgoing, max_incoming):
        self.max_outgoing = max_outgoing
        self.max_incoming = max_incoming

    def admissible(self, move, running):
        if len(running) >= self.max_outgoing:
            return False, "source"
        if sum(1 for r in running if r.destination == move.destination) >= self.max_incoming:
            return False, "destination"
        after = len(running) + 1
        if after > move.max_parallel or any(after > r.max_parallel for r in running):
            return False, "link"
        return True, None

    def next_moves(self, queue, running):
        """The queued moves to start now, in queue order.  A move held back by the link blocks the ones behind
        it (it would starve otherwise); one held back by its destination's cap lets others pass."""
        started = []
        current = list(running)
        for move in list(queue):
            ok, blocker = self.admissible(move, current)
            if ok:
                started.append(move)
                current.append(move)
            elif blocker in ("source", "link"):
                break
        return started


def order(moves):
    """Guests that must run alone first (longest first), then the rest by predicted time, longest first."""
    return sorted(moves, key=lambda m: (m.max_parallel, -(m.disk_bytes + m.memory_bytes), m.name))


def duration(move, guest, link_mib_s, dest_link_mib_s, running, max_downtime_ms, postcopy, auto_converge):
    """Predicted seconds of one move started while `running` migrations (itself included) share the link."""
    if not link_mib_s:
        return math.nan
    rate = min(share(move, link_mib_s, running), dest_link_mib_s or link_mib_s)
    if move.strategy == "offline":
        return FIXED_SECONDS + move.disk_bytes / (rate * MIB)
    prediction = predict(guest_workload(guest.touched_bytes or guest.memory_bytes, guest.dirty_rate_mib_s, rate,
                                        move.disk_bytes, max_downtime_ms,
                                        postcopy if move.converge_with == "postcopy" else "off",
                                        auto_converge if move.converge_with == "auto_converge" else False))
    move.prediction = prediction.as_dict()
    move.predicted_downtime_ms = prediction.estimated_downtime_ms
    return prediction.estimated_total_s


def simulate(moves, admission, length_of, link_mib_s):
    """Start times and the total (seconds) of running `moves` in order under `admission`.

    length_of(move, running) gives a move's seconds when it starts with `running` migrations at once (its
    share of the link, the rounds its dirty rate costs at that share included).  That fixes the work it brings
    (seconds x share); from then on, the running migrations split the link evenly, so one that finishes gives
    its share to the others.  Without a link rate, only the order is simulated and the total is NaN."""
    queue, running, now = list(moves), [], 0.0
    work = {}
    while queue or running:
        for move in admission.next_moves(queue, running):
            queue.remove(move)
            running.append(move)
            move.start_s = now
            seconds = length_of(move, len(running))
            work[move.name] = seconds * (link_mib_s / len(running)) if link_mib_s and math.isfinite(seconds) else 0.0
        if not running:
            break  # nothing admissible with nothing running: cannot happen with max_parallel >= 1
        rate = link_mib_s / len(running) if link_mib_s else 0.0
        first = min(running, key=lambda m: work[m.name])
        step = work[first.name] / rate if rate else 0.0
        now += step
        for move in running:
            work[move.name] -= step * rate
        running.remove(first)
        first.predicted_seconds = now - first.start_s if link_mib_s else math.nan
    return now if link_mib_s else math.nan
