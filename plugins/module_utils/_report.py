# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The preflight report: each check with a status (pass, warn, fail, skip), a message and a hint; the verdict
is "fail" when any check fails."""

from __future__ import annotations

import dataclasses

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest


PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


CHECK_ORDER = ("connection", "host_uuid", "domain", "name", "cpu", "memory", "machine", "devices", "interfaces",
               "firmware", "cache", "storage", "network")


@dataclasses.dataclass
class Check:
    name: str
    status: str
    message: str
    hint: str = ""
    details: dict = dataclasses.field(default_factory=dict)

    def as_dict(self):
        data = {"name": self.name, "status": self.status, "message": self.message}
        if self.hint:
            data["hint"] = self.hint
        if self.details:
            data["details"] = self.details
        return data


class Report:
    def __init__(self):
        self.checks = []
        self.hosts = {}
        self.nothing_to_do = False
        self.attach = False

    def add(self, name, status, message, hint="", **details):
        self.checks.append(Check(name, status, message, hint, details))

    def has(self, name):
        return any(c.name == name for c in self.checks)

    def skip_rest(self, reason):
        for name in CHECK_ORDER:
            if not self.has(name):
                self.add(name, SKIP, reason)

    @property
    def blockers(self):
        return [c for c in self.checks if c.status == FAIL]

    @property
    def verdict(self):
        return FAIL if self.blockers else PASS

    def summary(self):
        return "; ".join("%s: %s" % (c.name, c.message) for c in self.blockers)

    def as_dict(self):
        order = {n: i for i, n in enumerate(CHECK_ORDER)}
        return {
            "verdict": self.verdict,
            "nothing_to_do": self.nothing_to_do,
            "attach": self.attach,
            "blockers": [c.name for c in self.blockers],
            "warnings": [c.name for c in self.checks if c.status == WARN],
            "checks": [c.as_dict() for c in sorted(self.checks, key=lambda c: order.get(c.name, 99))],
            "hosts": self.hosts,
        }


class PreflightFailed(InvalidRequest):
    """At least one preflight check failed; details['preflight'] holds the whole report."""

    def __init__(self, name, dest_uri, report):
        blockers = report.blockers
        super().__init__(
            "Preflight found %d blocker%s for migrating %s to %s: %s"
            % (len(blockers), "" if len(blockers) == 1 else "s", name, dest_uri, report.summary()),
            details={"preflight": report.as_dict()},
            hint=" / ".join(c.hint for c in blockers if c.hint) or None,
        )
