# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""What an evacuation plan is decided from, read through libvirt: every domain on the source, the read-only
preflight of each domain against each candidate, the candidates' free memory and disk room, the guests' dirty
rates and the link.  Then the decision itself (see _evacuation.py)."""

from __future__ import annotations

import math

from ansible_collections.kvm.migration.plugins.module_utils import _measure
from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, state_name
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, KvmMigrationError
from ansible_collections.kvm.migration.plugins.module_utils._evacuation import (
    INTRINSIC_CHECKS,
    Admission,
    Candidate,
    Guest,
    decide_parallelism,
    duration,
    order,
    place,
    simulate,
)
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._migration import Migration, MigrationRequest
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeGateway

# The options of a single migration that the preflight of an evacuation uses as they are.
FORWARDED = ("storage", "memory_margin", "tls", "allow_unsafe", "max_downtime", "postcopy", "auto_converge")
DIRTY_RATE_SAMPLES = 2
MEASURE_DIRECTORY = "/var/lib/libvirt/images"


class EvacuationSurvey:
    """Reads the source and the candidates; `plan()` returns the evacuation plan as a dict."""

    def __init__(self, module, params, check_mode):
        self.module = module
        self.p = params
        self.check_mode = check_mode
        self.source = module.client(role="source")
        self.notes = []

    # ------------------------------------------------------------------ reads
    def candidates(self):
        found = []
        for spec in self.p["candidates"]:
            cand = Candidate(name=spec["name"], uri=spec["uri"], maintenance=bool(spec.get("maintenance")),
                             reserved_bytes=self.p["reserved_memory"] * MIB)
            found.append(cand)
        return found

    def guests(self):
        wanted = self.p["guests"]
        domains = {}
        for dom in self.source.list_domains():
            with libvirt_errors("read domain %s on %s" % (dom.name(), self.source.uri)):
                domains[dom.name()] = dom
        if wanted:
            missing = [n for n in wanted if n not in domains]
            if missing:
                raise InvalidRequest("guests names %s, which the source %s does not have (it has: %s)"
                                     % (", ".join(missing), self.source.uri, ", ".join(sorted(domains)) or "none"))
            domains = {n: domains[n] for n in wanted}
        return domains

    def _guest(self, dom):
        with libvirt_errors("read the definition of %s on %s" % (dom.name(), self.source.uri)):
            spec = DomainSpec.from_xml(dom.XMLDesc(0))
            state = state_name(dom)
            persistent = bool(dom.isPersistent())
        memory = spec.memory_kib * 1024
        guest = Guest(name=dom.name(), state=state, persistent=persistent, memory_bytes=memory)
        if guest.live:
            guest.touched_bytes = _measure.touched_ram(dom, memory)
            given = (self.p["dirty_rates"] or {}).get(guest.name)
            if given is not None:
                guest.dirty_rate_mib_s = float(given)
            elif state == "running":
                guest.dirty_rate_mib_s = _measure.dirty_rate(self.source, dom, 1, samples=DIRTY_RATE_SAMPLES)["mib_per_s"]
        return guest

    def _preflight(self, guest, cand, client):
        params = {k: self.p[k] for k in FORWARDED}
        params.update(name=guest.name, dest_uri=cand.uri, live=guest.live,
                      persistent=guest.persistent or self.p["transient"] == "persistent")
        request = MigrationRequest.from_params(params)
        request.validate()
        report = Migration(self.source, client, request).check()
        found = report.as_dict()
        checks = {c["name"]: c for c in found["checks"]}
        space = (checks.get("storage", {}).get("details") or {}).get("space") or {}
        for directory, room in space.items():
            cand.disk_room.setdefault(directory, room["available_bytes"])
        blockers = ["%s: %s" % (c["name"], c["message"]) for c in found["checks"] if c["status"] == "fail"]
        return {
            "verdict": found["verdict"],
            "nothing_to_do": found["nothing_to_do"],
            "blockers": blockers,
            "intrinsic": ["%s: %s" % (c["name"], c["message"]) for c in found["checks"]
                          if c["status"] == "fail" and c["name"] in INTRINSIC_CHECKS],
            "space": {d: room["needed_bytes"] for d, room in space.items()},
            "disk_bytes": sum(room["needed_bytes"] for room in space.values()),
        }

    def _link(self, candidates, clients):
        """MiB/s from the source to each candidate: stated, or measured by a short transfer (not in check mode)."""
        if self.p["link_speed"]:
            for cand in candidates:
                cand.link_mib_s = float(self.p["link_speed"])
            return {"mib_per_s": float(self.p["link_speed"]), "source": "stated"}
        if self.check_mode:
            self.notes.append("check mode measures no link (it would write a scratch file on each destination): "
                              "concurrency follows the caps alone; give link_speed for a decided plan")
            return {"mib_per_s": None, "source": "not measured in check mode"}
        rates = {}
        for cand in candidates:
            if cand.maintenance or cand.name not in clients:
                continue
            gateway = VolumeGateway(clients[cand.name])
            try:
                cand.link_mib_s = _measure.bandwidth(gateway, MEASURE_DIRECTORY, self.p["measure_mib"])["mib_per_s"]
                rates[cand.name] = cand.link_mib_s
            except (_measure.NoRoomToMeasure, KvmMigrationError) as exc:
                self.notes.append("link to %s not measured: %s" % (cand.name, getattr(exc, "msg", exc)))
            finally:
                gateway.close()
        if not rates:
            return {"mib_per_s": None, "source": "not measured"}
        # Each path was measured alone, so the source's own uplink carries at least the fastest of them.
        return {"mib_per_s": max(rates.values()), "source": "measured", "per_destination": rates}

    # ------------------------------------------------------------------ decision
    def plan(self):
        p = self.p
        candidates = self.candidates()
        clients, unreachable = {}, {}
        for cand in candidates:
            if cand.maintenance:
                continue
            client = self.module.client(cand.uri, role="destination", connect=False)
            try:
                client.open()
                cand.free_bytes = client.free_memory()
                clients[cand.name] = client
            except KvmMigrationError as exc:
                unreachable[cand.name] = exc.msg
        guests, skipped, already = [], [], []
        for name, dom in sorted(self.guests().items()):
            guest = self._guest(dom)
            if not guest.persistent and p["transient"] == "skip":
                skipped.append({"name": name, "state": guest.state, "reason": "transient (transient: skip)"})
                continue
            if guest.state not in ("running", "blocked", "paused", "shutoff"):
                skipped.append({"name": name, "state": guest.state,
                                "reason": "neither running nor shut off; start it or shut it down first"})
                continue
            for cand in candidates:
                if cand.name in unreachable:
                    guest.checks[cand.name] = {"verdict": "fail", "blockers": ["connection: %s" % unreachable[cand.name]]}
                elif cand.name in clients:
                    guest.checks[cand.name] = self._preflight(guest, cand, clients[cand.name])
            if any(c.get("nothing_to_do") for c in guest.checks.values()):
                already.append(name)
                continue
            guests.append(guest)
        memory_margin = p["memory_margin"] * MIB
        moves, unplaceable, not_migratable = place(guests, candidates, memory_margin)
        for move in moves:
            move.persistent = move.persistent or p["transient"] == "persistent"
        link = self._link(candidates, clients)
        by_name = {g.name: g for g in guests}
        link_rate = link["mib_per_s"] or 0.0
        by_cand = {c.name: c for c in candidates}
        live_ok = []
        for move in moves:
            why_not = decide_parallelism(move, by_name[move.name], link_rate, by_cand[move.destination].link_mib_s,
                                         p["max_outgoing"], p["max_downtime"], p["postcopy"], p["auto_converge"])
            if why_not:
                not_migratable.append({"name": move.name, "state": by_name[move.name].state,
                                       "reasons": ["live migration would not finish: %s" % why_not]})
                by_cand[move.destination].assigned_bytes -= move.memory_bytes + memory_margin
                continue
            live_ok.append(move)
        moves = order(live_ok)
        admission = Admission(p["max_outgoing"], p["max_incoming"])
        total = simulate(moves, admission, lambda m, running: duration(
            m, by_name[m.name], link_rate, by_cand[m.destination].link_mib_s, running, p["max_downtime"],
            p["postcopy"], p["auto_converge"]), link_rate)
        moved_bytes = sum(m.disk_bytes + (by_name[m.name].touched_bytes if m.strategy == "live" else 0) for m in moves)
        lower = moved_bytes / (link_rate * MIB) if link_rate else None
        return {
            "source": self.source.uri,
            "moves": [m.as_dict() for m in moves],
            "order": [m.name for m in moves],
            "unplaceable": unplaceable,
            "not_migratable": not_migratable,
            "skipped": skipped,
            "already_moved": already,
            "unreachable": unreachable,
            "max_outgoing": p["max_outgoing"],
            "max_incoming": p["max_incoming"],
            "link": link,
            "expected_seconds": round(total, 1) if link_rate and math.isfinite(total) else None,
            "lower_bound_seconds": round(lower, 1) if lower else None,
            "candidates": [{"name": c.name, "uri": c.uri, "maintenance": c.maintenance,
                            "free_memory_bytes": c.free_bytes, "reserved_memory_bytes": c.reserved_bytes,
                            "link_mib_s": c.link_mib_s or None} for c in candidates],
            "notes": self.notes,
        }
