# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Will a live migration converge?  A pure model: numbers in, prediction and strategy out.  No libvirt.

Pre-copy sends the RAM the guest has touched, then, round after round, what the guest dirtied while the
previous round was on the wire.  With rho = dirty rate / bandwidth, each round is rho times the previous one
(until the writable working set caps it), so pre-copy finishes only if the rounds shrink below what the link
moves within the allowed downtime: when rho < 1, or when the whole working set fits in the downtime.  Its
total time is about (RAM / B) / (1 - rho), after (disk / B) for copied disks.  Auto-converge throttles the
guest's vCPUs until the rounds do shrink; post-copy switches the guest over at once and pulls the rest on
demand, so it always finishes in about RAM / B, with the guest slowed by page faults meanwhile."""

from __future__ import annotations

import dataclasses
import math

from ansible_collections.kvm.migration.plugins.module_utils._options import MIB

# What one migration costs beyond the bytes (setup, handshakes, the switch-over), measured in the lab.
FIXED_OVERHEAD_S = 1.5
MAX_ROUNDS = 200
# QEMU's auto-converge (migration parameters cpu-throttle-initial, cpu-throttle-increment,
# throttle-trigger-threshold, at their defaults): once two bitmap syncs in a row find that the guest dirtied more
# than half of what was sent since the previous one, it throttles the vCPUs by 20 %, then 10 % more each time,
# up to 99 %; the dirty rate falls with the vCPU time.
AUTO_CONVERGE_INITIAL = 0.20
AUTO_CONVERGE_INCREMENT = 0.10
AUTO_CONVERGE_TRIGGER = 0.50
AUTO_CONVERGE_MAX_THROTTLE = 0.99

# Averaged page-sampling dirty rates were within about 20 % of the set rate in the benchmarks
# (docs/performance.md): closer to the link than that, whether plain pre-copy converges is a guess.
RHO_UNCERTAIN = (0.8, 1.25)


@dataclasses.dataclass
class Workload:
    """What has to move, and how fast the guest changes it."""

    ram_bytes: int  # RAM the guest has touched (zero pages cost next to nothing)
    dirty_rate: float  # bytes per second
    bandwidth: float  # bytes per second the migration gets
    disk_bytes: int = 0  # disk data to copy before the RAM rounds (allocated, non-zero)
    working_set: int = 0  # bytes the guest keeps rewriting; 0 = unknown, taken as all of ram_bytes
    max_downtime: float = 0.3  # seconds
    postcopy_allowed: bool = False
    auto_converge_allowed: bool = True


@dataclasses.dataclass
class Prediction:
    converges: bool  # plain pre-copy finishes
    strategy: str
    rho: float
    estimated_total_s: float
    estimated_downtime_ms: float
    rounds: int
    reasons: list
    certain: bool = True  # False when rho is within the measurement's error of 1

    def as_dict(self):
        data = dataclasses.asdict(self)
        data["rho"] = round(self.rho, 3)
        data["estimated_total_s"] = round(self.estimated_total_s, 1) if math.isfinite(self.estimated_total_s) else None
        data["estimated_downtime_ms"] = (round(self.estimated_downtime_ms) if math.isfinite(self.estimated_downtime_ms)
                                         else None)
        return data


def simulate_precopy(w):
    """(converges, RAM phase seconds, rounds, final round bytes) of plain pre-copy."""
    if w.bandwidth <= 0:
        return False, math.inf, 0, w.ram_bytes
    working_set = w.working_set or w.ram_bytes
    budget = w.bandwidth * w.max_downtime
    remaining = float(w.ram_bytes)
    elapsed = 0.0
    for rounds in range(1, MAX_ROUNDS + 1):
        if remaining <= budget:
            return True, elapsed, rounds, remaining
        duration = remaining / w.bandwidth
        elapsed += duration
        dirtied = min(working_set, w.dirty_rate * duration)
        if dirtied >= remaining * 0.98 and rounds > 2:
            return False, math.inf, rounds, dirtied
        remaining = dirtied
    return remaining <= budget, elapsed if remaining <= budget else math.inf, MAX_ROUNDS, remaining


def simulate_auto_converge(w):
    """(converges, RAM phase seconds, rounds, highest throttle) of pre-copy with QEMU's auto-converge, round by
    round as QEMU does it.  Fitted against the benchmarks (docs/performance.md), this replaced a closed formula
    that overestimated by up to 3x."""
    if w.bandwidth <= 0:
        return False, math.inf, 0, 0.0
    working_set = w.working_set or w.ram_bytes
    budget = w.bandwidth * w.max_downtime
    remaining = float(w.ram_bytes)
    elapsed, throttle, high = 0.0, 0.0, 0
    for rounds in range(1, MAX_ROUNDS + 1):
        if remaining <= budget:
            return True, elapsed, rounds, throttle
        duration = remaining / w.bandwidth
        elapsed += duration
        dirtied = min(working_set, w.dirty_rate * (1 - throttle) * duration)
        if dirtied > AUTO_CONVERGE_TRIGGER * remaining:
            high += 1
            if high >= 2:
                high = 0
                throttle = (AUTO_CONVERGE_INITIAL if not throttle else
                            min(AUTO_CONVERGE_MAX_THROTTLE, throttle + AUTO_CONVERGE_INCREMENT))
        remaining = dirtied
    return False, math.inf, MAX_ROUNDS, throttle


def predict(w):
    """Whether pre-copy converges, and the strategy to use, with reasons."""
    rho = w.dirty_rate / w.bandwidth if w.bandwidth > 0 else math.inf
    reasons = ["dirty rate %.1f MiB/s over bandwidth %.1f MiB/s: rho = %.2f"
               % (w.dirty_rate / MIB, w.bandwidth / MIB, rho)]
    prediction = _predict(w, rho, reasons)
    if RHO_UNCERTAIN[0] <= rho <= RHO_UNCERTAIN[1] and not working_set_fits(w):
        prediction.certain = False
        reasons.append("rho is within the dirty rate measurement's error (about 20 %) of 1, so whether plain "
                       "pre-copy converges is uncertain")
    return prediction


def working_set_fits(w):
    """The whole writable working set moves within the downtime: pre-copy ends whatever the rate."""
    return (w.working_set or w.ram_bytes) <= w.bandwidth * w.max_downtime


def _predict(w, rho, reasons):
    disk_s = w.disk_bytes / w.bandwidth if w.bandwidth > 0 else math.inf
    converges, ram_s, rounds, last = simulate_precopy(w)
    if w.disk_bytes >= MIB:
        reasons.append("%.0f MiB of disk to copy first: about %.0f s" % (w.disk_bytes / MIB, disk_s))
    if converges:
        if working_set_fits(w) and rho >= 1:
            reasons.append("the working set (%.0f MiB) fits in the downtime budget, so pre-copy ends anyway"
                           % ((w.working_set or w.ram_bytes) / MIB))
        reasons.append("pre-copy converges in about %d round(s)" % rounds)
        downtime = last / w.bandwidth * 1000
        return Prediction(True, "precopy", rho, FIXED_OVERHEAD_S + disk_s + ram_s + last / w.bandwidth, downtime,
                          rounds, reasons)
    reasons.append("pre-copy will not converge: each round leaves about %.0f MiB, more than the %.0f MiB the link "
                   "moves in %.0f ms" % (last / MIB, w.bandwidth * w.max_downtime / MIB, w.max_downtime * 1000))
    if w.postcopy_allowed:
        reasons.append("post-copy finishes in about RAM / bandwidth, the guest slowed by remote page faults meanwhile")
        return Prediction(False, "postcopy", rho, FIXED_OVERHEAD_S + disk_s + 2 * w.ram_bytes / w.bandwidth,
                          50.0, 1, reasons)
    throttled = simulate_auto_converge(w) if w.auto_converge_allowed else (False, math.inf, 0, 0.0)
    if throttled[0]:
        _converges, ram_s, rounds, throttle = throttled
        reasons.append("auto-converge throttles the vCPUs step by step, up to about %d %%, until the rounds shrink"
                       % round(throttle * 100))
        return Prediction(False, "auto_converge", rho, FIXED_OVERHEAD_S + disk_s + ram_s,
                          w.max_downtime * 1000, rounds, reasons)
    reasons.append("neither post-copy nor auto-converge can finish it: migrate offline")
    return Prediction(False, "offline", rho, math.inf, math.inf, rounds, reasons)


ACTIONS = ("abort", "postcopy", "pause")


@dataclasses.dataclass
class Policy:
    """How a running migration is steered.  Times in seconds, downtimes in milliseconds."""

    completion_timeout: float
    completion_action: str = "abort"
    progress_timeout: float = 0.0  # 0: never
    progress_action: str = "abort"
    downtime_schedule: list = dataclasses.field(default_factory=lambda: [250])
    step_interval: float = 5.0
    postcopy: str = "off"  # off, immediate, on_demand (the capability is on; switch when an action asks)
    switch_when_stalled: bool = False  # auto strategy: at the top of the schedule and still stalled -> post-copy


class Controller:
    """Decides, from the job statistics libvirt reports while a migration runs, what to do next: raise the
    allowed downtime as progress stalls (the oVirt/Nova/Proxmox idea), switch to post-copy, pause the guest, or
    abort.  It only decides; the engine acts.  Pure: tested with numbers."""

    def __init__(self, policy):
        self.policy = policy
        self.best = None
        self.best_at = 0.0
        self.step = 0
        self.last_step_at = 0.0
        self.postcopy_started = False
        self.postcopy_pending = None
        self.paused = False
        self.fired = set()
        # Which timeout ('completion' or 'progress') asked for the abort, if one did.
        self.aborted_for = None
        self.events = []
        self.throttle = 0
        self.throttle_rose_at = 0.0

    @staticmethod
    def memory_phase(stats):
        """RAM is being sent: the disk mirror (if any) has caught up.  Post-copy can start only then; a switch
        asked earlier fails silently in QEMU and pre-copy then runs forever."""
        disks_done = not stats.get("disk_total") or stats.get("disk_remaining", 0) == 0
        ram_started = stats.get("memory_iteration", 0) >= 1 or stats.get("memory_processed", 0) > 0
        return disks_done and ram_started

    def decide(self, t, stats):
        """Actions for now: a list of (action, value, reason) with action in set_downtime, postcopy, pause,
        abort."""
        p = self.policy
        actions = []
        remaining = stats.get("data_remaining")
        if remaining is not None and (self.best is None or remaining < self.best * 0.99):
            self.best, self.best_at = remaining, t
        stalled_for = t - self.best_at if self.best is not None else 0.0
        throttle = stats.get("auto_converge_throttle") or 0
        if throttle > self.throttle:
            self.throttle, self.throttle_rose_at = throttle, t
        # While auto-converge still raises its throttle, QEMU is converging the guest: that is progress for the
        # progress timeout, though the remaining bytes have not yet shrunk.
        escalating_for = t - max(self.best_at, self.throttle_rose_at) if self.best is not None else 0.0
        in_memory = self.memory_phase(stats)

        if p.postcopy == "immediate" and not self.postcopy_started and self.postcopy_pending is None:
            self.postcopy_pending = "post-copy asked from the start"
        if (stalled_for >= p.step_interval and t - self.last_step_at >= p.step_interval
                and self.step < len(p.downtime_schedule) - 1 and not self.postcopy_started):
            self.step += 1
            self.last_step_at = t
            actions.append(("set_downtime", p.downtime_schedule[self.step],
                            "no progress for %.0f s" % stalled_for))
        at_top = self.step >= len(p.downtime_schedule) - 1
        if (p.switch_when_stalled and p.postcopy != "off" and at_top and not self.postcopy_started
                and self.postcopy_pending is None and stalled_for >= p.step_interval
                and t - self.last_step_at >= p.step_interval):
            self.postcopy_pending = "still no progress at the highest allowed downtime"
        for name, limit, action, reason in (
            ("completion", p.completion_timeout, p.completion_action,
             "not finished within the completion timeout of %.0f s" % p.completion_timeout),
            ("progress", p.progress_timeout, p.progress_action,
             "no progress for %.0f s (progress timeout)" % p.progress_timeout),
        ):
            elapsed = t if name == "completion" else escalating_for
            if not limit or elapsed < limit or name in self.fired:
                continue
            self.fired.add(name)
            if self.postcopy_started:
                self.events.append((t, "note", "%s, but post-copy is running and cannot be undone" % reason))
                continue
            if action == "postcopy" and p.postcopy != "off":
                self.postcopy_pending = reason
            elif action == "pause" and not self.paused:
                self.paused = True
                actions.append(("pause", None, reason))
            else:
                self.aborted_for = self.aborted_for or name
                actions.append(("abort", None, reason))
        if self.postcopy_pending and not self.postcopy_started and in_memory:
            self.postcopy_started = True
            actions.append(("postcopy", None, self.postcopy_pending))
        for action, value, reason in actions:
            self.events.append((t, action if value is None else "%s %s" % (action, value), reason))
        return actions
