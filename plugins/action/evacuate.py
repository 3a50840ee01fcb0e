# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of kvm.migration.evacuate: run an evacuation plan's migrations from the source host, as many
at once as the plan's admission rule allows, each one a kvm.migration.migrate job on the source.

A failed migration leaves its guest on the source (migrate guarantees that) and the others go on; the task
fails at the end, naming every guest that did not move.  One line every poll interval shows every running
migration.  An abort (SIGINT/SIGTERM of ansible-playbook, or kvm.migration.migration_job state=aborted on the
source) ends with each guest in one place: migrate's own recovery handles a job that libvirt cancelled."""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible_collections.kvm.migration.plugins.module_utils._evacuation import Admission, Move
from ansible_collections.kvm.migration.plugins.module_utils._maintenance import ABORT_REQUEST_PATH
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB

display = Display()

ASYNC_LIMIT = 7 * 24 * 3600  # migrate's own timeouts end a migration long before this
# Options of migrate that the evacuation sets per guest, so the user's migrate_options cannot override them.
PER_MOVE = ("name", "dest_uri", "live", "persistent")


def row(move, result, seconds):
    """One line of the final table."""
    summary = result.get("summary") or {}
    strategy = (result.get("strategy") or {}).get("chosen") or move.strategy
    return {
        "name": move.name,
        "from": result.get("_source_host"),
        "to": move.destination,
        "strategy": move.strategy if move.strategy == "offline" else "live (%s)" % strategy,
        "seconds": round(seconds, 1),
        "downtime_ms": summary.get("downtime_ms") if move.strategy == "live" else None,  # offline: no guest to pause
        "bytes": summary.get("data_processed_bytes"),
        "memory_bytes": summary.get("memory_processed_bytes"),
        "result": "failed" if result.get("failed") else ("moved" if result.get("changed") else "in place"),
        "guest_location": result.get("guest_location") or ("source" if result.get("failed") else "destination"),
        "msg": result.get("msg", ""),
    }


def short_progress(job):
    stats = job.get("stats") or {}
    text = "%.0f%%" % job.get("percent", 0)
    if stats.get("memory_bps"):
        text += " %.1f MiB/s" % (stats["memory_bps"] / float(MIB))
    if stats.get("memory_iteration"):
        text += " it%d" % stats["memory_iteration"]
    return text


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        plan = args.get("plan") or {}
        if not isinstance(plan, dict) or "moves" not in plan:
            raise AnsibleActionFail("plan must be the plan that kvm.migration.evacuation_plan returned (its 'plan' key)")
        options = dict(args.get("migrate_options") or {})
        clash = sorted(set(options) & set(PER_MOVE))
        if clash:
            raise AnsibleActionFail("migrate_options may not set %s: the plan decides them per guest" % ", ".join(clash))
        try:
            interval = float(args.get("poll_interval", 5))
        except (TypeError, ValueError):
            raise AnsibleActionFail("poll_interval=%r is not a number of seconds" % args.get("poll_interval"))
        if not 1 <= interval <= 60:
            raise AnsibleActionFail("poll_interval=%r is out of range: it must be between 1 and 60 s" % interval)
        host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        moves = [Move(**{k: v for k, v in m.items() if k in Move.__dataclass_fields__}) for m in plan["moves"]]
        link = (plan.get("link") or {}).get("mib_per_s") or 0
        if self._task.check_mode:
            result.update(changed=bool(moves), moves=[], planned=[m.name for m in moves],
                          msg="check mode: %d guest(s) would move" % len(moves))
            return result
        admission = Admission(int(plan.get("max_outgoing", 2)), int(plan.get("max_incoming", 2)))
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        queue, running, rows = list(moves), {}, []
        peak = {"source": 0}
        timeline = []
        last_line = 0.0
        aborted_by_operator = False
        started_all = time.monotonic()
        self._clear_abort_request(task_vars)
        while queue or running:
            admitted = admission.next_moves(queue, [r["move"] for r in running.values()])
            if admitted and self._abort_requested(task_vars):
                aborted_by_operator = True
                rows.extend(self._not_started(queue, host))
                queue, admitted = [], []
            for move in admitted:
                queue.remove(move)
                share = link / float(len(running) + 1) if link else 0
                module_args = dict(options, name=move.name, dest_uri=move.destination_uri,
                                   live=move.strategy == "live", persistent=bool(move.persistent))
                if share and not options.get("link_speed"):
                    module_args["link_speed"] = max(1, int(share))
                if share and move.strategy == "live" and "strategy" not in options:
                    # The plan measured and predicted already: each migrate run takes its decision instead of
                    # measuring the dirty rate again (3 s each), with auto-converge as the safety net.
                    module_args["strategy"] = "manual"
                    module_args["auto_converge"] = options.get("auto_converge") is not False
                    if move.converge_with == "postcopy":
                        module_args["postcopy"] = "immediate"
                launched = self._launch(module_args, task_vars)
                now = time.monotonic() - started_all
                if launched.get("failed") or not launched.get("ansible_job_id"):
                    launched["_source_host"] = host
                    rows.append(row(move, launched, 0.0))
                    continue
                running[move.name] = {"move": move, "jid": launched["ansible_job_id"], "t0": time.monotonic()}
                timeline.append({"name": move.name, "event": "start", "t": round(now, 1),
                                 "destination": move.destination, "running": len(running)})
                peak["source"] = max(peak["source"], len(running))
            time.sleep(1 if not running else min(interval, 2))
            for name, job in list(running.items()):
                status = self._execute_module(module_name="ansible.legacy.async_status",
                                              module_args={"jid": job["jid"], "mode": "status", "_async_dir": async_dir},
                                              task_vars=task_vars)
                if not status.get("finished") and not (status.get("failed") and "finished" not in status):
                    continue
                self._execute_module(module_name="ansible.legacy.async_status",
                                     module_args={"jid": job["jid"], "mode": "cleanup", "_async_dir": async_dir},
                                     task_vars=task_vars)
                del running[name]
                status["_source_host"] = host
                finished = row(job["move"], status, time.monotonic() - job["t0"])
                rows.append(finished)
                timeline.append({"name": name, "event": "end", "t": round(time.monotonic() - started_all, 1),
                                 "result": finished["result"]})
                cause = status.get("cause") or {}
                if status.get("failed") and queue and (
                        (cause.get("kind") == "aborted" and not cause.get("aborted_by"))
                        or self._abort_requested(task_vars)):
                    # Someone cancelled this job on the source (kvm.migration.migration_job, virsh domjobabort):
                    # the operator stops the evacuation, so nothing more starts.
                    aborted_by_operator = True
                    rows.extend(self._not_started(queue, host))
                    queue = []
            if running and time.monotonic() - last_line >= interval:
                parts = []
                for name, job in sorted(running.items()):
                    info = self._execute_module(module_name="kvm.migration.migration_info",
                                                module_args={"name": name}, task_vars=task_vars)
                    parts.append("%s -> %s %s" % (name, job["move"].destination, short_progress(info.get("job") or {})))
                queued = (" | queued: %s" % ", ".join(m.name for m in queue)) if queue else ""
                display.display("%s: evacuating: %s%s" % (host, " | ".join(parts), queued))
                last_line = time.monotonic()
        self._clear_abort_request(task_vars)
        failed = [r for r in rows if r["result"] in ("failed", "not started")]
        result.update(
            aborted=aborted_by_operator,
            changed=any(r["result"] == "moved" for r in rows),
            moves=rows,
            timeline=timeline,
            peak_concurrency=peak["source"],
            total_seconds=round(time.monotonic() - started_all, 1),
        )
        for line in self._table(rows):
            display.display(line)
        if failed:
            result["failed"] = True
            result["msg"] = ("%s%d of %d guest(s) did not move: %s" % (
                "evacuation aborted; " if aborted_by_operator else "",
                len(failed), len(rows), "; ".join("%s (now on %s): %s" % (r["name"], r["guest_location"], r["msg"])
                                                  for r in failed)))
        else:
            result["msg"] = "%d guest(s) moved" % sum(r["result"] == "moved" for r in rows)
        return result

    @staticmethod
    def _not_started(queue, host):
        return [dict(row(move, {"_source_host": host}, 0.0), result="not started", guest_location="source",
                     msg="the evacuation was aborted (kvm.migration.migration_job, or a job cancelled on the source)")
                for move in queue]

    def _abort_requested(self, task_vars):
        found = self._execute_module(module_name="ansible.legacy.stat",
                                     module_args={"path": ABORT_REQUEST_PATH, "get_checksum": False},
                                     task_vars=task_vars)
        return bool((found.get("stat") or {}).get("exists"))

    def _clear_abort_request(self, task_vars):
        self._execute_module(module_name="ansible.legacy.file",
                             module_args={"path": ABORT_REQUEST_PATH, "state": "absent"}, task_vars=task_vars)

    def _launch(self, module_args, task_vars):
        self._task.async_val = ASYNC_LIMIT
        try:
            return self._execute_module(module_name="kvm.migration.migrate", module_args=module_args,
                                        task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = 0

    @staticmethod
    def _table(rows):
        if not rows:
            return []
        header = ("VM", "from", "to", "strategy", "time", "downtime", "result")
        body = [(r["name"], str(r["from"]), r["to"], r["strategy"], "%.1f s" % r["seconds"],
                 "%s ms" % r["downtime_ms"] if r["downtime_ms"] is not None else "-", r["result"]) for r in rows]
        widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
        return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) for line in [header] + body]
