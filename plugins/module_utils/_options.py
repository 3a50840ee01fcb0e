# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The options of the migration modules in one place: their argument specs, and the bounds every number is
checked against before anything changes.  Plain Python (no libvirt, no Ansible)."""

from __future__ import annotations

import dataclasses
import math
import re
from urllib.parse import urlparse

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest

# libvirt's limit for a migration bandwidth in MiB/s (QEMU takes bytes/s in an int64): INT64_MAX / 1 MiB.
MIB = 1024 * 1024
MAX_BANDWIDTH_MIB = (2 ** 63 - 1) // MIB
# QEMU's downtime-limit: at most 2000 s.
MAX_DOWNTIME_MS = 2000 * 1000
# QEMU's multifd-channels is a uint8 and must be at least 1.
MAX_PARALLEL_CONNECTIONS = 255
# QEMU measures a dirty rate over 1 to 60 s (calc-time).
MAX_DIRTYRATE_PERIOD = 60
WEEK = 7 * 24 * 3600
# libvirt domain names: no "/" (libvirt refuses it) and no control characters.
DOMAIN_NAME = re.compile(r"^[^/\x00-\x1f\x7f]{1,255}$")
URI_SCHEME = re.compile(r"^(qemu|test)(\+(ssh|libssh|libssh2|tcp|tls|unix|ext))?$")
DATA_URI_SCHEMES = {"migrate_uri": ("tcp", "rdma", "unix"), "disks_uri": ("tcp", "unix")}


@dataclasses.dataclass(frozen=True)
class Bound:
    low: float
    high: float
    unit: str
    why: str = ""
    zero_means: str = ""  # a low of 0 that means something (off, no cap, never)

    def check(self, option, value):
        if value is None:
            return
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if not bad and isinstance(value, float) and not math.isfinite(value):
            bad = True
        if bad or not self.low <= value <= self.high:
            raise InvalidRequest(
                "%s=%r is out of range: it must be %s%s" % (option, value, self.describe(), self.explain()),
                details={"option": option, "value": str(value), "low": self.low, "high": self.high})

    def describe(self):
        return "between %s and %s %s" % (_num(self.low), _num(self.high), self.unit)

    def explain(self):
        parts = [p for p in (("%s means %s" % (_num(self.low), self.zero_means)) if self.zero_means else "", self.why) if p]
        return " (%s)" % "; ".join(parts) if parts else ""


def _num(value):
    return ("%d" % value) if float(value).is_integer() else ("%g" % value)


# Numbers of kvm.migration.migrate (and the live_migration role that forwards them).
MIGRATE_BOUNDS = {
    "bandwidth": Bound(0, MAX_BANDWIDTH_MIB, "MiB/s", "libvirt's limit", "no cap"),
    "link_speed": Bound(0, MAX_BANDWIDTH_MIB, "MiB/s", "libvirt's limit", "measure it"),
    "postcopy_bandwidth": Bound(0, MAX_BANDWIDTH_MIB, "MiB/s", "libvirt's limit", "no cap"),
    "max_downtime": Bound(1, MAX_DOWNTIME_MS, "ms", "QEMU's limit is 2000 s"),
    "downtime_step_interval": Bound(0.5, 3600, "s"),
    "parallel_connections": Bound(0, MAX_PARALLEL_CONNECTIONS, "connections", "QEMU's multifd limit",
                                  "one connection"),
    "completion_timeout": Bound(1, 86400, "s per GiB"),
    "progress_timeout": Bound(0, WEEK, "s", "", "never"),
    "timeout": Bound(0, WEEK, "s", "", "use completion_timeout"),
    "poll_interval": Bound(0.1, 60, "s"),
    "memory_margin": Bound(0, 1024 * 1024, "MiB"),
    "measure_mib": Bound(1, 1024, "MiB", "a measurement needs no more"),
}
# Numbers of kvm.migration.dirtyrate.
DIRTYRATE_BOUNDS = {
    "period": Bound(1, MAX_DIRTYRATE_PERIOD, "s", "QEMU measures over at most 60 s"),
    "samples": Bound(1, 30, "samples"),
    # The options dirtyrate shares with migrate have migrate's bounds.
    "link_speed": MIGRATE_BOUNDS["link_speed"],
    "measure_mib": MIGRATE_BOUNDS["measure_mib"],
    "max_downtime": MIGRATE_BOUNDS["max_downtime"],
}
# Numbers of kvm.migration.evacuation_plan (and the evacuate role); shared concepts keep migrate's bounds.
MAX_CONCURRENT_MIGRATIONS = 16
EVACUATION_BOUNDS = {
    "max_outgoing": Bound(1, MAX_CONCURRENT_MIGRATIONS, "migrations", "each one is a QEMU job and a share of the link"),
    "max_incoming": Bound(1, MAX_CONCURRENT_MIGRATIONS, "migrations", "each one is a QEMU job and a share of the link"),
    "reserved_memory": Bound(0, 1024 * 1024 * 1024, "MiB"),
    "link_speed": MIGRATE_BOUNDS["link_speed"],
    "measure_mib": MIGRATE_BOUNDS["measure_mib"],
    "max_downtime": MIGRATE_BOUNDS["max_downtime"],
    "memory_margin": MIGRATE_BOUNDS["memory_margin"],
}
# A stated dirty rate, MiB/s: no guest dirties faster than its memory bus.
DIRTY_RATE_BOUND = Bound(0, 1024 * 1024, "MiB/s")
# samples x period: the longest a dirty rate measurement may take.
MAX_DIRTYRATE_SECONDS = 300
MAX_SCHEDULE_STEPS = 20


def check_bounds(params, bounds):
    """Raise InvalidRequest naming the first option whose value is outside its bounds."""
    for option, bound in bounds.items():
        bound.check(option, params.get(option))


def check_downtime_schedule(schedule):
    if not schedule:
        return
    if len(schedule) > MAX_SCHEDULE_STEPS:
        raise InvalidRequest("downtime_schedule has %d steps; at most %d are allowed" % (len(schedule), MAX_SCHEDULE_STEPS))
    bound = Bound(1, MAX_DOWNTIME_MS, "ms", "QEMU's limit is 2000 s")
    for index, value in enumerate(schedule):
        bound.check("downtime_schedule[%d]" % index, value)


def check_domain_name(option, name):
    if name is None or not str(name).strip():
        raise InvalidRequest("%s is empty; give the name of a libvirt domain" % option)
    if name != name.strip() or not DOMAIN_NAME.match(name):
        raise InvalidRequest("%s=%r is not a libvirt domain name: it may not contain '/', newlines or other control "
                             "characters, nor start or end with spaces, and has at most 255 characters" % (option, name))


def check_libvirt_uri(option, uri):
    """A libvirt URI for the QEMU driver: qemu[+transport]://[host]/system (or /session)."""
    if uri is None or not str(uri).strip():
        raise InvalidRequest("%s is empty; give %s libvirt URI, for example qemu+ssh://hv2/system"
                             % (option, "the destination's" if option == "dest_uri" else "a"))
    if any(c.isspace() for c in uri):
        raise InvalidRequest("%s=%r contains spaces or newlines; a libvirt URI has none" % (option, uri))
    parsed = urlparse(uri)
    if not URI_SCHEME.match(parsed.scheme or ""):
        raise InvalidRequest(
            "%s=%r is not a libvirt URI for QEMU: its scheme %r is not qemu, qemu+ssh, qemu+tcp, qemu+tls, qemu+unix "
            "or qemu+libssh" % (option, uri, parsed.scheme),
            hint="write it as qemu+ssh://HOST/system (or qemu+tcp://, qemu+tls://)")
    if parsed.scheme.startswith("qemu") and parsed.path not in ("/system", "/session"):
        raise InvalidRequest("%s=%r has the path %r; QEMU's libvirt URIs end in /system (or /session)"
                             % (option, uri, parsed.path or ""), hint="write it as %s://%s/system"
                             % (parsed.scheme, parsed.netloc))
    return parsed


def check_data_uri(option, uri):
    """migrate_uri / disks_uri: where QEMU sends its streams, tcp://ADDRESS[:PORT]."""
    if not uri:
        return
    if any(c.isspace() for c in uri):
        raise InvalidRequest("%s=%r contains spaces or newlines" % (option, uri))
    parsed = urlparse(uri)
    schemes = DATA_URI_SCHEMES[option]
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise InvalidRequest("%s=%r is not a migration data URI: use %s://ADDRESS[:PORT]"
                             % (option, uri, schemes[0]), hint="for example tcp://192.168.50.12")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise InvalidRequest("%s=%r has a port outside 1-65535" % (option, uri))


def check_directory(option, path):
    """An absolute directory a user names: no '..', no newlines or other control characters."""
    if path is None:
        return
    if not path.startswith("/") or any(part == ".." for part in path.split("/")) or re.search(r"[\x00-\x1f\x7f]", path):
        raise InvalidRequest("%s=%r is not an absolute directory: it must start with '/' and contain no '..' "
                             "and no newlines or control characters" % (option, path))


def check_file_name(option, name):
    """A single file name inside a directory the collection chooses: it may not leave that directory."""
    if not name or name in (".", "..") or "/" in name or re.search(r"[\s#\x00-\x1f\x7f]", name) \
            or name.startswith("-"):
        raise InvalidRequest("%s=%r is not a plain file name: it may not be empty, '.' or '..', start with '-', or "
                             "contain '/', '#', spaces, newlines or control characters" % (option, name))
