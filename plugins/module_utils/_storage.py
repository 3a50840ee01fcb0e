# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Volumes through libvirt, for the engine: find the pool that holds a path, make sure a volume exists, copy
and digest volumes, and remember what was created so that a failed migration can take it back.  The pools the
storage_pool module manages as desired state live in _pools.py."""

from __future__ import annotations

import dataclasses
import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    InvalidRequest,
    KvmMigrationError,
    is_error,
    libvirt,
    libvirt_errors,
)

TRANSIENT_POOL_PREFIX = "kvm-migration-"
# The journal: an empty file this collection writes in a destination directory before it creates volumes there
# for a domain, and removes when the migration succeeded or was rolled back.  A re-run that finds it knows the
# files at its planned paths are its own leftovers (an interrupted run) and removes them instead of refusing.
JOURNAL_PREFIX = ".kvm-migration-journal-"
# Scratch files of a bandwidth measurement and shared-storage markers: always removed; one older than this that
# is still there was left by a run that died, and is swept.
SCRATCH_PREFIXES = (".kvm-migration-bandwidth-", ".kvm-migration-shared-")


def journal_name(domain_uuid):
    return "%s%s.raw" % (JOURNAL_PREFIX, domain_uuid)


STREAM_CHUNK = 4 * 1024 * 1024
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}


# libvirt keeps capacities in an unsigned long long; QEMU's images stop at 2^63 - 1 bytes.
MAX_VOLUME_BYTES = 2 ** 63 - 1


def parse_size(value):
    """Bytes from an int or a string like '64M', '10G', '512k' (binary units)."""
    if isinstance(value, int):
        return value
    match = re.match(r"^\s*(-?\d+)\s*([bkmgt]?)(?:i?b)?\s*$", str(value).lower())
    if not match:
        raise InvalidRequest("Not a size: %r (use bytes, or a number with K, M, G or T)" % (value,))
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


@dataclasses.dataclass
class VolumeSpec:
    """A volume that must exist at `path` (same format and virtual size as its source)."""

    path: str
    format: str
    capacity: int
    backing_path: str = ""
    backing_format: str = ""

    def xml(self):
        parts = [
            "<volume>",
            "<name>%s</name>" % escape(os.path.basename(self.path)),
            "<capacity unit='bytes'>%d</capacity>" % self.capacity,
            # Allocation 0 keeps thin images thin (libvirt would otherwise preallocate raw files).
            "<allocation unit='bytes'>0</allocation>",
            "<target><format type='%s'/></target>" % escape(self.format),
        ]
        if self.backing_path:
            parts.append("<backingStore><path>%s</path><format type='%s'/></backingStore>"
                         % (escape(self.backing_path), escape(self.backing_format or "raw")))
        parts.append("</volume>")
        return "".join(parts)

    def as_dict(self):
        return dataclasses.asdict(self)


def pool_target_path(pool):
    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""


def volume_facts(vol):
    """Format, virtual size and backing file of a volume, from libvirt's view of the image."""
    xml = ET.fromstring(vol.XMLDesc(0))
    fmt = xml.find("target/format")
    backing_fmt = xml.find("backingStore/format")
    return {
        "path": xml.findtext("target/path"),
        "format": fmt.get("type") if fmt is not None else "raw",
        "capacity": int(xml.findtext("capacity") or 0),
        "allocation": int(xml.findtext("allocation") or 0),
        "backing_path": xml.findtext("backingStore/path") or "",
        "backing_format": backing_fmt.get("type") if backing_fmt is not None else "",
        "physical": int(xml.findtext("physical") or xml.findtext("allocation") or 0),
        "mtime": xml.findtext("target/timestamps/mtime") or "",
    }


def transient_being_destroyed(pool):
    """Whether a pool is transient and gone or going (its maker, another run, destroys it)."""
    try:
        return not pool.isPersistent() and not pool.isActive()
    except Exception as exc:
        if is_error(exc, "VIR_ERR_NO_STORAGE_POOL"):
            return True
        raise


def _sparse_streams():
    """Whether this libvirt binding can move holes through streams (libvirt 3.4 and later)."""
    return all(hasattr(libvirt, n) for n in ("VIR_STREAM_RECV_STOP_AT_HOLE", "VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM",
                                             "VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM"))


_ZEROS = memoryview(bytes(STREAM_CHUNK))


def _pump(down, up, sha, sparse):
    """Move a download stream's bytes into `sha` and, if given, an upload stream.  A hole (sparse streams only)
    is hashed as zeros and recreated as a hole on the upload side."""
    while True:
        if sparse:
            data = down.recvFlags(STREAM_CHUNK, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
            if data == -3:  # a hole comes next
                length = down.recvHole(0)
                if up is not None:
                    up.sendHole(length, 0)
                while length > 0:
                    step = min(length, STREAM_CHUNK)
                    sha.update(_ZEROS[:step])
                    length -= step
                continue
        else:
            data = down.recv(STREAM_CHUNK)
        if not data:
            return
        sha.update(data)
        if up is not None:
            view = memoryview(data)
            while view:
                sent = up.send(view.tobytes())
                view = view[sent:]


class VolumeGateway:
    """Every volume operation on one host, through libvirt's storage API: look up, check, create (and undo
    exactly what it made), copy and digest through streams, measure, mark shared storage, sweep scratch files.

    A directory with no storage pool gets a transient dir pool (it vanishes when destroyed and
    never touches files), so nothing persistent is added to the host."""

    def __init__(self, client):
        self.client = client
        self.created = []
        self.journal_uuid = None
        self._journals = []
        self._transient_pools = []
        self._orphaned_pools = set()
        self._pools_by_dir = {}

    def forget_connection(self):
        """After the client reconnected: pool handles of the old connection are useless, but a restarted
        libvirtd brings the transient pools back, so close() still removes them, found by name (a handle
        keeps its name without asking the daemon)."""
        self._orphaned_pools.update(p.name() for p in self._transient_pools)
        self._pools_by_dir = {}
        self._transient_pools = []

    def _pool_for_dir(self, directory, create):
        directory = os.path.normpath(directory)
        if directory in self._pools_by_dir:
            return self._pools_by_dir[directory]
        inactive = None
        for pool in self.client.list_pools():
            try:
                if os.path.normpath(pool_target_path(pool)) != directory:
                    continue
                transient = not pool.isPersistent()
                if not pool.isActive():
                    if not transient:
                        inactive = pool
                    continue  # a transient pool is inactive only while it is being destroyed
                pool.refresh(0)
            except Exception as exc:
                if is_error(exc, "VIR_ERR_NO_STORAGE_POOL") or transient_being_destroyed(pool):
                    continue  # a transient pool destroyed since the listing
                with libvirt_errors("refresh storage pool for %s on %s" % (directory, self.client.uri)):
                    raise
            if transient and pool.name().startswith(TRANSIENT_POOL_PREFIX):
                # A transient pool of a run that died: adopt it, so close() removes it.
                self._transient_pools.append(pool)
            self._pools_by_dir[directory] = pool
            return pool
        if inactive is not None:
            raise InvalidRequest(
                "Storage pool %s for %s on %s is not active" % (inactive.name(), directory, self.client.uri),
                hint="start the pool (virsh pool-start %s) or remove its definition" % inactive.name(),
            )
        if not create:
            return None
        name = TRANSIENT_POOL_PREFIX + uuid.uuid4().hex[:8]
        xml = "<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>" % (
            name, escape(directory))
        try:
            pool = self.client.create_transient_pool(xml)
        except Exception as exc:
            if is_error(exc, "VIR_ERR_OPERATION_INVALID", "VIR_ERR_INTERNAL_ERROR", "VIR_ERR_SYSTEM_ERROR",
                        "VIR_ERR_NO_STORAGE_POOL"):
                raise InvalidRequest(
                    "Cannot use directory %s on %s: %s" % (directory, self.client.uri, exc),
                    hint="create the directory on the destination, or define a storage pool for it",
                ) from exc
            with libvirt_errors("open a transient storage pool for %s on %s" % (directory, self.client.uri)):
                raise
        self._transient_pools.append(pool)
        self._pools_by_dir[directory] = pool
        return pool

    def _in_pool(self, directory, func):
        """func(pool) with the pool that covers `directory`.  An adopted transient pool can vanish under us (the
        interrupted run that made it was still alive, and closed it): then once more with a pool found or made
        afresh."""
        pool = self._pool_for_dir(directory, create=True)
        try:
            return func(pool)
        except Exception as exc:
            if not self._vanished(pool, exc):
                raise
            self._pools_by_dir.pop(os.path.normpath(directory), None)
            self._transient_pools = [p for p in self._transient_pools if p is not pool]
            return func(self._pool_for_dir(directory, create=True))

    def _vanished(self, pool, exc):
        """Whether `exc` says that `pool`, a transient pool of this collection, went away under us: gone
        already (no such pool) or being destroyed by the run that made it (not active)."""
        if is_error(exc, "VIR_ERR_NO_STORAGE_POOL"):
            return True
        return (is_error(exc, "VIR_ERR_OPERATION_INVALID") and pool in self._transient_pools
                and transient_being_destroyed(pool))

    def available(self, directory):
        """Free bytes in the pool that holds `directory` on this host."""
        def free(pool):
            pool.refresh(0)
            return pool.info()[3]
        with libvirt_errors("read the free space of %s on %s" % (directory, self.client.uri)):
            return self._in_pool(directory, free)

    def existing(self, path):
        """The volume at `path` on this host, or None.  Looks through the pool that covers its directory."""
        def lookup(pool):
            try:
                return pool.storageVolLookupByName(os.path.basename(path))
            except Exception as exc:
                if is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                    return None
                raise
        with libvirt_errors("look up %s on %s" % (path, self.client.uri)):
            return self._in_pool(os.path.dirname(path), lookup)

    def create(self, spec):
        pool = self._pool_for_dir(os.path.dirname(spec.path), create=True)
        if self.journal_uuid:
            self._write_journal(pool, os.path.dirname(spec.path))
        with libvirt_errors("create volume %s on %s" % (spec.path, self.client.uri)):
            vol = self._in_pool(os.path.dirname(spec.path), lambda p: p.createXML(spec.xml(), 0))
        self.created.append(spec.path)
        return vol

    def check(self, spec):
        """Problems with the volume at spec.path compared with what it should be (empty: it matches)."""
        vol = self.existing(spec.path)
        if vol is None:
            return ["%s is missing" % spec.path]
        with libvirt_errors("read volume %s on %s" % (spec.path, self.client.uri)):
            facts = volume_facts(vol)
        problems = []
        if facts["format"] != spec.format:
            problems.append("%s has format %s, expected %s" % (spec.path, facts["format"], spec.format))
        if facts["capacity"] != spec.capacity:
            problems.append("%s has virtual size %d, expected %d" % (spec.path, facts["capacity"], spec.capacity))
        if facts["backing_path"] != spec.backing_path:
            problems.append("%s has backing file %r, expected %r" % (spec.path, facts["backing_path"], spec.backing_path))
        return problems

    def remove(self, path):
        """Delete the volume at `path` if it exists; returns whether it did."""
        def delete(pool):
            try:
                vol = pool.storageVolLookupByName(os.path.basename(path))
            except Exception as exc:
                if is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                    return False
                raise
            try:
                vol.delete(0)
            except Exception as exc:
                if is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                    return False  # another run deleted it between our lookup and delete
                raise
            return True
        with libvirt_errors("delete %s on %s" % (path, self.client.uri)):
            return self._in_pool(os.path.dirname(path), delete)

    def facts(self, path):
        """volume_facts() of the volume at `path`, or None when there is none."""
        vol = self.existing(path)
        if vol is None:
            return None
        with libvirt_errors("read volume %s on %s" % (path, self.client.uri)):
            return volume_facts(vol)

    def physical_size(self, path):
        facts = self.facts(path)
        if facts is None:
            raise InvalidRequest("%s does not exist on %s" % (path, self.client.uri))
        return facts["physical"]

    def sees_marker_of(self, other, directory):
        """Whether a file that `other` (another host's stager) creates in `directory` shows up here: the
        directory is shared storage.  The marker is removed again whatever the answer."""
        name = ".kvm-migration-shared-t%d-%s.raw" % (time.time(), uuid.uuid4().hex[:12])
        path = os.path.join(directory, name)
        with libvirt_errors("write a marker file in %s on %s" % (directory, other.client.uri)):
            other._in_pool(directory, lambda p: p.createXML(VolumeSpec(path, "raw", 512).xml(), 0))
        try:
            def look(pool):
                pool.refresh(0)
                try:
                    pool.storageVolLookupByName(name)
                    return True
                except Exception as exc:
                    if not is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                        raise
                    return False
            with libvirt_errors("look for the marker file in %s on %s" % (directory, self.client.uri)):
                found = self._in_pool(directory, look)
        finally:
            with libvirt_errors("remove the marker file %s on %s" % (path, other.client.uri)):
                other.remove(path)
        return found

    def digest(self, path, offset=0, length=0, sparse=False):
        """sha256 of the volume's bytes as stored (length 0: to the end), read through libvirt.  With `sparse`,
        holes travel as lengths and are hashed as the zeros they read as."""
        import hashlib

        sha = hashlib.sha256()
        vol = self.existing(path)
        sparse = sparse and _sparse_streams()
        with libvirt_errors("read %s on %s" % (path, self.client.uri)):
            stream = self.client.new_stream()
            vol.download(stream, offset, length, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM if sparse else 0)
            _pump(stream, None, sha, sparse)
            stream.finish()
        return sha.hexdigest()

    def copy_from(self, other, path, fmt, sparse=False):
        """Copy the volume at `path` on `other` (another host's stager) byte for byte to the same path here,
        through libvirt streams; returns the sha256 of what was sent.  The new volume counts as created.
        With `sparse`, holes in the file are sent as lengths, so a sparse raw image stays sparse."""
        import hashlib

        source = other.existing(path)
        size = other.physical_size(path)
        target = self.create(VolumeSpec(path, "raw", max(size, 512)))
        sha = hashlib.sha256()
        sparse = sparse and _sparse_streams()
        with libvirt_errors("copy %s from %s to %s" % (path, other.client.uri, self.client.uri)):
            down = other.client.new_stream()
            up = self.client.new_stream()
            source.download(down, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM if sparse else 0)
            target.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0)
            _pump(down, up, sha, sparse)
            down.finish()
            up.finish()
        pool = self._pool_for_dir(os.path.dirname(path), create=True)
        with libvirt_errors("refresh %s on %s" % (os.path.dirname(path), self.client.uri)):
            pool.refresh(0)
        facts = self.facts(path)
        if facts is None or facts["format"] != fmt:
            raise KvmMigrationError("The copy of %s on %s is not a %s image (%s)"
                                    % (path, self.client.uri, fmt, facts and facts["format"]))
        return sha.hexdigest()

    def _write_journal(self, pool, directory):
        path = os.path.join(os.path.normpath(directory), journal_name(self.journal_uuid))
        if path in self._journals:
            return
        if self.existing(path) is None:
            try:
                pool.createXML(VolumeSpec(path, "raw", 512).xml(), 0)
            except Exception:  # a directory that takes no journal takes no volume either: that error names the path
                return
        self._journals.append(path)

    def has_journal(self, directory, domain_uuid):
        """Whether an interrupted run of this collection left its journal for the domain in `directory`."""
        return self.existing(os.path.join(directory, journal_name(domain_uuid))) is not None

    def remove_journals(self, directories, domain_uuid):
        """Remove the journals an interrupted run left for the domain in `directories`, once the domain is
        where that run was taking it: they protect nothing any more.  Returns the paths removed."""
        removed = []
        for directory in sorted(set(directories)):
            path = os.path.join(os.path.normpath(directory), journal_name(domain_uuid))
            try:
                if self.remove(path):
                    removed.append(path)
            except KvmMigrationError:
                if self.existing(path) is not None:
                    raise  # not removed by the other run at the same moment: a real failure
        return removed

    def end_journal(self):
        """The run is over (done or rolled back): its journals go."""
        for path in self._journals:
            try:
                self.remove(path)
            except Exception:  # a host that cannot be reached keeps it; the next run sweeps it
                pass
        self._journals = []
        self.journal_uuid = None

    def sweep_scratch(self, directory, older_than=300):
        """Remove scratch files and markers of runs that died more than `older_than` seconds ago (libvirt reports
        no file times, so their age is read from the name's time stamp, when it has one)."""
        pool = self._pool_for_dir(directory, create=False)
        if pool is None:
            return []
        removed = []
        try:
            names = pool.listVolumes()
        except Exception:  # a pool that cannot list is not ours to sweep
            return []
        for name in names:
            if not name.startswith(SCRATCH_PREFIXES):
                continue
            stamp = re.search(r"-t(\d{10})-", name)
            if stamp is None or time.time() - int(stamp.group(1)) < older_than:
                continue
            try:
                pool.storageVolLookupByName(name).delete(0)
                removed.append(os.path.join(directory, name))
            except Exception:  # another run removes it right now
                pass
        return removed

    def rollback(self):
        """Delete the volumes this stager created (a failed migration); returns their paths."""
        removed = []
        for path in reversed(self.created):
            vol = None
            try:
                pool = self._pool_for_dir(os.path.dirname(path), create=True)
                pool.refresh(0)
                vol = pool.storageVolLookupByName(os.path.basename(path))
            except Exception:  # already gone
                vol = None
            if vol is not None:
                with libvirt_errors("delete partial volume %s on %s" % (path, self.client.uri)):
                    vol.delete(0)
                removed.append(path)
        self.created = []
        self.end_journal()
        return removed

    def close(self):
        """Drop the transient pools (never the files in them)."""
        pools = list(self._transient_pools)
        if self._orphaned_pools:
            try:
                pools += [p for p in self.client.list_pools() if p.name() in self._orphaned_pools and not p.isPersistent()]
            except Exception:  # the host is still away: the next run adopts them (their name says whose they are)
                pass
        for pool in pools:
            try:
                pool.destroy()
            except Exception:  # transient pools vanish on their own if libvirtd restarted
                pass
        self._transient_pools = []
        self._orphaned_pools = set()
        self._pools_by_dir = {}
