# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Where the domain is: on the source, on the destination, on both, in a migration job already running; for an
offline move, whether the destination's definition is this collection's current copy."""

from __future__ import annotations

import time
from urllib.parse import urlparse

from ansible_collections.kvm.migration.plugins.module_utils._domain import DomainSpec, outgoing_migration, state_name
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._offline_record import read_offline_record
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB
from ansible_collections.kvm.migration.plugins.module_utils._qemu_state import (
    daemon_restarted_under,
    restart_hint,
    source_qemu_leftovers,
)

from ansible_collections.kvm.migration.plugins.module_utils._report import FAIL, PASS


# How long to wait for the destination's incoming domain when the source already has an outgoing migration job
# (libvirt starts the job on the source before the destination is prepared).
INCOMING_WAIT = 10.0


def _done_fraction(stats):
    total = stats.get("data_total") or 0
    return (stats.get("data_processed", 0) / float(total)) if total else 0.0


def qemu_leftovers(client, dom, name, spec, suspect=False):
    """What an earlier migration left in the source QEMU that libvirt hides (see _qemu_state), asked only when
    libvirt may hide something: its daemon restarted while the guest ran, this host cannot tell (a remote URI),
    or the caller has its own reason (`suspect`: the run saw the source's connection drop)."""
    local = not urlparse(client.uri).hostname
    restarted = daemon_restarted_under(name) if local else None
    if restarted is False and not suspect:
        return []
    return source_qemu_leftovers(dom, [d.target for d in spec.disks])


class PlacementChecks:
    """The domain checks of the preflight: where the guest is and what that means.

    A part of Preflight (see _preflight.py), which holds the connections, the request, the stagers, the
    report and what was located."""

    def _domain(self):
        req, r = self.request, self.report
        src = self.source.lookup_domain(req.name)
        dst = self.dest.lookup_domain(req.name)
        self.located.source_domain, self.located.dest_domain = src, dst
        src_active = bool(src is not None and src.isActive())
        dst_active = bool(dst is not None and dst.isActive())
        if src_active and self._running_migration(src):
            return self._attach(src)
        if src_active and dst_active:
            r.add("domain", FAIL, "Domain %s is active on both hosts; refusing to touch either" % req.name,
                  "find out which copy is authoritative and stop the other one")
            return False
        if dst_active:
            r.nothing_to_do = True
            r.add("domain", PASS, "domain %s already runs on the destination (%s)" % (req.name, state_name(dst)))
            return True
        if src is None and dst is None:
            r.add("domain", FAIL, "Domain %s does not exist on the source %s nor on the destination %s"
                  % (req.name, self.source.uri, self.dest.uri), "check the name and the hosts")
            return False
        if not getattr(req, "live", True):
            return self._domain_offline(src, dst, src_active)
        if src is None:
            r.add("domain", FAIL, "Domain %s is defined on the destination %s but not running, and is absent from "
                  "the source %s" % (req.name, self.dest.uri, self.source.uri),
                  "start it on the destination if that copy is the right one")
            return False
        if not src_active:
            r.add("domain", FAIL, "Domain %s is %s on the source; a live migration needs a running domain"
                  % (req.name, state_name(src)),
                  "start the domain first, or move it while it is shut off with live=false (an offline migration)")
            return False
        with libvirt_errors("read the definition of %s" % req.name):
            self.located.spec = DomainSpec.from_xml(src.XMLDesc(0))
        left = qemu_leftovers(self.source, src, req.name, self.located.spec)
        if left:
            r.add("domain", FAIL, "Domain %s runs on the source, but its QEMU process still holds what an earlier "
                  "migration left, which libvirt no longer shows: %s" % (req.name, "; ".join(left)),
                  restart_hint(req.name), qemu=left)
            return False
        r.add("domain", PASS, "domain %s is %s on the source" % (req.name, state_name(src)))
        return True

    def _domain_offline(self, src, dst, src_active):
        """An offline move: the domain must be shut off on the source.  Done when the destination holds the
        definition and the source does not, or when the source's images are unchanged since this collection copied
        them (its record in the destination's definition says so)."""
        req, r = self.request, self.report
        if src is None:
            if dst.isPersistent():
                r.nothing_to_do = True
                r.add("domain", PASS, "domain %s is defined on the destination (%s) and not on the source"
                      % (req.name, state_name(dst)))
                return True
            r.add("domain", FAIL, "Domain %s is absent from the source %s" % (req.name, self.source.uri),
                  "check the name and the hosts")
            return False
        if src_active:
            r.add("domain", FAIL, "Domain %s is %s on the source; an offline migration (live=false) moves a shut-off "
                  "domain" % (req.name, state_name(src)),
                  "shut the domain down first (virsh shutdown), or migrate it live (live=true)")
            return False
        if dst is not None and dst.UUIDString() == src.UUIDString():
            self.located.not_a_current_copy = self.offline_copy_changes(src, dst)
            if not self.located.not_a_current_copy:
                r.nothing_to_do = True
                r.add("domain", PASS, "domain %s was moved to the destination offline, and its images on the source "
                      "have not changed since" % req.name)
                return True
        with libvirt_errors("read the definition of %s" % req.name):
            self.located.spec = DomainSpec.from_xml(src.XMLDesc(0))
        r.add("domain", PASS, "domain %s is shut off on the source; it moves offline" % req.name)
        return True

    def offline_copy_changes(self, src, dst):
        """Why the destination's definition of `src` is not a current copy made by an offline move (empty list: it
        is).  It is current when its record names this source host and every source image still has the size and
        modification time it had when it was copied."""
        record = read_offline_record(dst)
        if record is None:
            return ["the destination's definition was not made by an offline move of kvm.migration"]
        if record.get("source_host_uuid") != self.source.host_uuid():
            return ["the destination's copy came from another host"]
        problems = []
        for image in record.get("images", []):
            facts = self.source_stager.facts(image["path"]) if self.source_stager else None
            if facts is None:
                problems.append("%s is gone from the source" % image["path"])
            elif (facts["physical"], facts["mtime"]) != (image["size"], image["mtime"]):
                problems.append("%s changed on the source since it was copied" % image["path"])
        return problems

    def _running_migration(self, src):
        """The job statistics of a migration out of the source that is already running, or None."""
        stats = outgoing_migration(src)
        if stats is None:
            return None
        self.located.running_job = stats
        return stats

    def _attach(self, src):
        """A migration of the domain is already running (another client started it, or an earlier run that was cut
        off).  If it goes to this destination, the run waits for it instead of starting a second one."""
        req, r = self.request, self.report
        deadline = time.monotonic() + INCOMING_WAIT
        while True:
            dst = self.dest.lookup_domain_by_uuid(src.UUIDString())
            if dst is not None and dst.isActive():
                break
            if time.monotonic() >= deadline or self._running_migration(src) is None:
                r.add("domain", FAIL, "A migration of %s is already running on the source, but not to %s"
                      % (req.name, self.dest.uri),
                      "wait for it to finish, or abort it (virsh domjobabort %s)" % req.name)
                return False
            time.sleep(0.5)
        self.located.dest_domain = dst
        r.add("domain", PASS, "a migration of %s to the destination is already running (%.0f%% of %d MiB processed); "
              "this run attaches to it instead of starting another"
              % (req.name, 100.0 * _done_fraction(self.located.running_job),
                 self.located.running_job.get("data_total", 0) // MIB), attached=True)
        r.attach = True
        return True
