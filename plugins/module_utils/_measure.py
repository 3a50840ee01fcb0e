# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Measurements a migration plan needs: the guest's dirty page rate, the RAM it has touched, and the
bandwidth between two hosts."""

from __future__ import annotations

import os
import time
import uuid

from ansible_collections.kvm.migration.plugins.module_utils._convergence import Workload
from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, libvirt, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._options import MIB
from ansible_collections.kvm.migration.plugins.module_utils._volume import STREAM_CHUNK, VolumeSpec

DIRTYRATE_MODES = {
    "page-sampling": "VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING",
    "dirty-bitmap": "VIR_DOMAIN_DIRTYRATE_MODE_DIRTY_BITMAP",
    "dirty-ring": "VIR_DOMAIN_DIRTYRATE_MODE_DIRTY_RING",
}
CALC_MEASURED = 2


def dirty_rate(client, domain, period=1, mode="auto", samples=1):
    """The guest's dirty page rate in MiB/s: the mean of `samples` measurements by QEMU, `period` seconds each.

    page-sampling hashes a sample of pages and compares their contents, so it works everywhere, TCG
    included.  dirty-bitmap crashes QEMU 7.2 under TCG and dirty-ring needs KVM's dirty ring, so both are
    refused for TCG guests.  Several short samples rather than one long one: a page rewritten twice within a
    period counts once, so a long period undercounts a guest that cycles through its working set, while a
    single short sample of 512 pages per GiB is noisy (one-second samples were off by up to 44 % in the
    benchmarks, docs/performance.md)."""
    if samples < 1 or period < 1:
        raise InvalidRequest("The dirty rate needs period >= 1 s and samples >= 1 (got %s, %s)" % (period, samples))
    measured = [_dirty_rate_once(client, domain, period, mode) for _sample in range(samples)]
    rates = [m["mib_per_s"] for m in measured]
    result = dict(measured[-1], mib_per_s=round(sum(rates) / len(rates), 1))
    if samples > 1:
        result["samples_mib_per_s"] = rates
    return result


def _dirty_rate_once(client, domain, period, mode):
    domain_type = client_domain_type(domain)
    if mode == "auto":
        mode = "page-sampling"
    if mode not in DIRTYRATE_MODES:
        raise InvalidRequest("Unknown dirty rate mode %r (choose %s)" % (mode, ", ".join(["auto", *DIRTYRATE_MODES])))
    if mode != "page-sampling" and domain_type != "kvm":
        raise InvalidRequest("Dirty rate mode %s needs a KVM guest; %s runs under %s (use page-sampling)"
                             % (mode, domain.name(), domain_type or "an unknown hypervisor"))
    flags = getattr(libvirt, DIRTYRATE_MODES[mode], 0)
    if not hasattr(domain, "startDirtyRateCalc"):
        raise InvalidRequest("This libvirt-python cannot measure dirty rates (libvirt 7.2 or later is needed)")
    with libvirt_errors("start measuring the dirty rate of %s" % domain.name()):
        domain.startDirtyRateCalc(period, flags)
    deadline = time.monotonic() + period + 10
    stats = {}
    while time.monotonic() < deadline:
        time.sleep(min(0.25, period / 4))
        stats = client.domain_stats(domain, libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
        if stats.get("dirtyrate.calc_status") == CALC_MEASURED:
            return {
                "mib_per_s": float(stats.get("dirtyrate.megabytes_per_second", 0)),
                "period_s": stats.get("dirtyrate.calc_period", period),
                "mode": stats.get("dirtyrate.calc_mode", mode),
            }
    raise InvalidRequest("QEMU did not finish measuring the dirty rate of %s within %d s (status %s)"
                         % (domain.name(), period + 10, stats.get("dirtyrate.calc_status")))


def client_domain_type(domain):
    from xml.etree import ElementTree as ET

    return ET.fromstring(domain.XMLDesc(0)).get("type")


def touched_ram(domain, memory_bytes):
    """RAM the guest has touched, about: the QEMU process's resident memory, at most the guest's memory.
    Untouched pages migrate as zero pages, next to free."""
    try:
        stats = domain.memoryStats()
    except Exception:  # no stats (an inactive domain): assume all of it
        return memory_bytes
    rss = stats.get("rss")
    return min(memory_bytes, rss * 1024) if rss else memory_bytes


# Room the destination keeps free beyond a bandwidth measurement's scratch file.
SCRATCH_MARGIN = 64 * MIB


class NoRoomToMeasure(Exception):
    """The destination has too little free space for the scratch file of a bandwidth measurement."""


def guest_workload(touched_bytes, dirty_rate_mib_s, bandwidth_mib_s, disk_bytes, max_downtime_ms, postcopy,
                   auto_converge):
    """The prediction's input, the same for dirtyrate and the migration engine: the RAM the guest has touched,
    its dirty rate and the link in MiB/s, the local disk to copy first, the downtime ceiling in ms, and the
    migrate options postcopy (any value but off allows it) and auto_converge (only False forbids it)."""
    return Workload(
        ram_bytes=touched_bytes,
        dirty_rate=dirty_rate_mib_s * MIB,
        bandwidth=(bandwidth_mib_s or 1) * MIB,
        disk_bytes=disk_bytes,
        max_downtime=max_downtime_ms / 1000.0,
        postcopy_allowed=postcopy != "off",
        auto_converge_allowed=auto_converge is not False,
    )


def bandwidth(dest_stager, directory, mib=32):
    """MiB/s of a transfer of `mib` MiB of incompressible data from here to the destination's libvirt,
    through a libvirt storage stream into a scratch volume in `directory` (deleted afterwards, whatever
    happens).  It measures the path to the destination's libvirtd: for qemu+ssh that includes SSH's
    encryption, so it is a lower bound for QEMU's own migration stream.  Raises NoRoomToMeasure, having written
    nothing, when the directory lacks room for the file and a margin (a full disk must never be filled)."""
    size = mib * MIB
    dest_stager.sweep_scratch(directory)
    free = dest_stager.available(directory)
    if free < size + SCRATCH_MARGIN:
        raise NoRoomToMeasure("%s on %s has %d MiB free; measuring needs %d MiB and a margin of %d MiB"
                              % (directory, dest_stager.client.uri, free // MIB, mib, SCRATCH_MARGIN // MIB))
    # The time stamp in the name lets a later run sweep a file that a killed run left behind.
    path = os.path.join(directory, ".kvm-migration-bandwidth-t%d-%s.raw" % (time.time(), uuid.uuid4().hex[:10]))
    chunk = os.urandom(STREAM_CHUNK)
    try:
        volume = dest_stager.create(VolumeSpec(path, "raw", size))
        with libvirt_errors("measure the bandwidth to %s" % dest_stager.client.uri):
            stream = dest_stager.client.new_stream()
            started = time.monotonic()
            volume.upload(stream, 0, size, 0)
            sent = 0
            while sent < size:
                piece = chunk[:min(len(chunk), size - sent)]
                view = memoryview(piece)
                while view:
                    done = stream.send(view.tobytes())
                    view = view[done:]
                sent += len(piece)
            stream.finish()
            elapsed = time.monotonic() - started
    finally:
        try:
            dest_stager.remove(path)
        finally:
            if path in dest_stager.created:
                dest_stager.created.remove(path)
    return {"mib_per_s": round(mib / elapsed, 1) if elapsed > 0 else None, "mib": mib, "seconds": round(elapsed, 2)}
