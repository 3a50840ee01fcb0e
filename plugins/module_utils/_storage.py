# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Storage pools and volumes through libvirt: find the pool that holds a path, make sure a volume
exists, and remember what was created so that a failed migration can take it back."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._options import check_directory, check_file_name
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
POOL_TYPES = ("dir", "netfs")
NETFS_FORMATS = ("auto", "nfs", "glusterfs", "cifs")
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


class VolumeStager:
    """Makes sure volumes exist on one host, and can undo exactly what it made.

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
            if os.path.normpath(pool_target_path(pool)) == directory:
                if pool.isActive():
                    with libvirt_errors("refresh storage pool %s on %s" % (pool.name(), self.client.uri)):
                        pool.refresh(0)
                    if pool.name().startswith(TRANSIENT_POOL_PREFIX) and not pool.isPersistent():
                        # A transient pool of a run that died: adopt it, so close() removes it.
                        self._transient_pools.append(pool)
                    self._pools_by_dir[directory] = pool
                    return pool
                inactive = pool
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

    def available(self, directory):
        """Free bytes in the pool that holds `directory` on this host."""
        pool = self._pool_for_dir(directory, create=True)
        with libvirt_errors("read the free space of %s on %s" % (directory, self.client.uri)):
            pool.refresh(0)
            return pool.info()[3]

    def existing(self, path):
        """The volume at `path` on this host, or None.  Looks through the pool that covers its directory."""
        pool = self._pool_for_dir(os.path.dirname(path), create=True)
        try:
            return pool.storageVolLookupByName(os.path.basename(path))
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                return None
            with libvirt_errors("look up %s on %s" % (path, self.client.uri)):
                raise

    def create(self, spec):
        pool = self._pool_for_dir(os.path.dirname(spec.path), create=True)
        if self.journal_uuid:
            self._write_journal(pool, os.path.dirname(spec.path))
        with libvirt_errors("create volume %s on %s" % (spec.path, self.client.uri)):
            vol = pool.createXML(spec.xml(), 0)
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
        vol = self.existing(path)
        if vol is None:
            return False
        with libvirt_errors("delete %s on %s" % (path, self.client.uri)):
            vol.delete(0)
        return True

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
        other_pool = other._pool_for_dir(directory, create=True)
        with libvirt_errors("write a marker file in %s on %s" % (directory, other.client.uri)):
            marker = other_pool.createXML(VolumeSpec(path, "raw", 512).xml(), 0)
        try:
            pool = self._pool_for_dir(directory, create=True)
            with libvirt_errors("refresh %s on %s" % (directory, self.client.uri)):
                pool.refresh(0)
            try:
                pool.storageVolLookupByName(name)
                found = True
            except Exception as exc:
                if not is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                    raise
                found = False
        finally:
            with libvirt_errors("remove the marker file %s on %s" % (path, other.client.uri)):
                marker.delete(0)
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


@dataclasses.dataclass
class PoolSpec:
    """A storage pool as options describe it (dir or netfs)."""

    name: str
    type: str = "dir"
    target: str = ""
    source_host: str = ""
    source_path: str = ""
    source_format: str = ""

    # Properties libvirt cannot change while the pool is active.
    IMMUTABLE_WHEN_ACTIVE = ("type", "target", "source_host", "source_path", "source_format")

    def check_name(self):
        if not self.name or "/" in self.name or re.search(r"[\x00-\x1f\x7f]", self.name) \
                or self.name != self.name.strip():
            raise InvalidRequest("name=%r is not a storage pool name: it may not be empty, contain '/', newlines or "
                                 "other control characters, nor start or end with spaces" % self.name)
        return self

    def validate(self):
        self.check_name()
        if self.type not in POOL_TYPES:
            raise InvalidRequest("Unsupported pool type %r (supported: %s)" % (self.type, ", ".join(POOL_TYPES)))
        if not self.target or not os.path.isabs(self.target):
            raise InvalidRequest("Pool %s needs an absolute target path, got %r" % (self.name, self.target))
        # libvirt would resolve '..' and define the pool somewhere else (target=/srv/../etc became /etc).
        check_directory("target", self.target)
        if self.type == "netfs":
            check_directory("source_path", self.source_path)
            if not self.source_host or not self.source_path:
                raise InvalidRequest("netfs pool %s needs source_host and source_path (the NFS export)" % self.name)
            if self.source_format and self.source_format not in NETFS_FORMATS:
                raise InvalidRequest("Unsupported netfs format %r (supported: %s)"
                                     % (self.source_format, ", ".join(NETFS_FORMATS)))
        elif self.source_host or self.source_path:
            raise InvalidRequest("A dir pool has no source; source_host and source_path are for netfs")
        return self

    def xml(self, uuid=None):
        parts = ["<pool type='%s'>" % self.type, "<name>%s</name>" % escape(self.name)]
        if uuid:
            parts.append("<uuid>%s</uuid>" % escape(uuid))
        if self.type == "netfs":
            parts.append("<source><host name='%s'/><dir path='%s'/><format type='%s'/></source>"
                         % (escape(self.source_host), escape(self.source_path), escape(self.source_format or "nfs")))
        parts.append("<target><path>%s</path></target>" % escape(self.target))
        parts.append("</pool>")
        return "".join(parts)

    def pretty_xml(self):
        node = ET.fromstring(self.xml())
        ET.indent(node)
        return ET.tostring(node, encoding="unicode") + "\n"

    @classmethod
    def from_xml(cls, text):
        try:
            node = ET.fromstring(text)
        except ET.ParseError as exc:
            raise InvalidRequest("Invalid pool XML: %s" % exc) from exc
        if node.tag != "pool":
            raise InvalidRequest("Pool XML must have a <pool> root element, not <%s>" % node.tag)
        fmt = node.find("source/format")
        host = node.find("source/host")
        src_dir = node.find("source/dir")
        return cls(
            name=node.findtext("name") or "",
            type=node.get("type", ""),
            target=os.path.normpath(node.findtext("target/path") or "") if node.findtext("target/path") else "",
            source_host=host.get("name", "") if host is not None else "",
            source_path=src_dir.get("path", "") if src_dir is not None else "",
            source_format=fmt.get("type", "") if fmt is not None and node.get("type") == "netfs" else "",
        )

    def differences(self, other):
        """{field: (other's value, ours)} for the fields that differ from `other` (the existing pool)."""
        mine = dataclasses.asdict(self)
        theirs = dataclasses.asdict(other)
        if self.type == "netfs":
            mine["source_format"] = mine["source_format"] or "nfs"
        return {k: (theirs[k], mine[k]) for k in mine if k != "name" and mine[k] != theirs[k]}


class PoolManager:
    """Brings one storage pool to a state (present, started, stopped, absent) and makes sure its volumes
    exist.  It never deletes data: absent undefines the pool, and volumes are only ever created."""

    def __init__(self, client, check_mode=False):
        self.client = client
        self.check_mode = check_mode
        self.actions = []

    def _act(self, description, func, *args):
        self.actions.append(description)
        if not self.check_mode:
            with libvirt_errors("%s on %s" % (description, self.client.uri)):
                return func(*args)
        return None

    def ensure(self, spec, state, autostart=None, build=True, refresh=False, volumes=()):
        # Every input is checked before anything is read or changed on the host.
        spec.check_name()
        volumes = [self._volume_in_pool(spec, vol) for vol in volumes]
        if volumes and state == "stopped":
            raise InvalidRequest("volumes need an active pool, but state is %s for pool %s; nothing was changed"
                                 % (state, spec.name), hint="use state: started to create volumes")
        pool = self.client.lookup_pool(spec.name)
        before = None
        if pool is not None:
            with libvirt_errors("read pool %s on %s" % (spec.name, self.client.uri)):
                before = PoolSpec.from_xml(pool.XMLDesc(libvirt.VIR_STORAGE_XML_INACTIVE))
        if state == "absent":
            if pool is not None:
                if pool.isActive():
                    self._act("stop pool %s" % spec.name, pool.destroy)
                self._act("undefine pool %s" % spec.name, pool.undefine)
            return self._result(before, None, None)

        spec.validate()
        if pool is None:
            conflict = self._pool_with_target(spec.target)
            if conflict is not None:
                raise InvalidRequest("Pool %s already uses the target %s on %s; one directory, one pool"
                                     % (conflict, spec.target, self.client.uri))
            pool = self._act("define pool %s" % spec.name, self.client.define_pool, spec.xml())
            try:
                return self._converge(pool, spec, before, state, autostart, build, refresh, volumes)
            except Exception:
                # A pool defined by this run that could not be brought up is taken back: no half-made pool.
                if pool is not None:
                    with libvirt_errors("remove the pool %s this run defined" % spec.name):
                        if pool.isActive():
                            pool.destroy()
                        pool.undefine()
                raise
        else:
            changes = spec.differences(before)  # {field: (current, wanted)}
            if changes:
                if pool.isActive():
                    raise InvalidRequest(
                        "Cannot change %s of pool %s while it is active (%s)"
                        % (", ".join(sorted(changes)), spec.name,
                           "; ".join("%s: %r -> %r" % (k, a, b) for k, (a, b) in sorted(changes.items()))),
                        hint="stop the pool first (state: stopped), then change it",
                    )
                self._act("redefine pool %s (%s)" % (spec.name, ", ".join(sorted(changes))),
                          self.client.define_pool, spec.xml(uuid=pool.UUIDString()))
        return self._converge(pool, spec, before, state, autostart, build, refresh, volumes)

    def _converge(self, pool, spec, before, state, autostart, build, refresh, volumes):
        active = bool(pool is not None and pool.isActive())
        if state == "started" and not active:
            self._start(pool, spec, build)
            active = True
        elif state == "stopped" and active:
            self._act("stop pool %s" % spec.name, pool.destroy)
            active = False
        if autostart is not None and (pool is None or bool(pool.autostart()) != autostart):
            self._act("%s autostart of pool %s" % ("enable" if autostart else "disable", spec.name),
                      lambda: pool.setAutostart(1 if autostart else 0))
        created = []
        if volumes:
            if not active:
                raise InvalidRequest("Volumes need an active pool; pool %s is not started" % spec.name,
                                     hint="use state: started")
            created = self._volumes(pool, spec, volumes)
        if refresh and active and pool is not None and not self.check_mode:
            with libvirt_errors("refresh pool %s" % spec.name):
                pool.refresh(0)
        result = self._result(before, spec, pool if not self.check_mode else None)
        result["volumes_created"] = created
        return result

    def _start(self, pool, spec, build):
        if self.check_mode:
            self.actions.append("start pool %s (building its target if it does not exist)" % spec.name)
            return
        try:
            with libvirt_errors("start pool %s on %s" % (spec.name, self.client.uri)):
                pool.create(0)
            self.actions.append("start pool %s" % spec.name)
            return
        except Exception:
            if not build:
                raise
        missing = not self._target_exists(spec.target)
        # For dir and netfs pools, building makes the target directory (mkdir -p); it never touches what is in it.
        self._act("build pool %s" % spec.name, pool.build, 0)
        try:
            self._act("start pool %s" % spec.name, pool.create, 0)
        except Exception:
            if missing:
                # The mount point this run made goes again (delete removes an empty directory, never data).
                with contextlib.suppress(Exception):
                    pool.delete(0)
            raise

    def _target_exists(self, target):
        """Whether the directory exists on the host (libvirt lists a directory as a volume of its parent's pool;
        a transient pool for the parent, if needed, is gone again afterwards)."""
        stager = VolumeStager(self.client)
        try:
            return stager.existing(os.path.normpath(target)) is not None
        except KvmMigrationError:  # the parent directory is missing too
            return False
        finally:
            stager.close()

    def _pool_with_target(self, target):
        for other in self.client.list_pools():
            if os.path.normpath(pool_target_path(other)) == os.path.normpath(target):
                return other.name()
        return None

    @staticmethod
    def _volume_in_pool(spec, vol):
        """The volume with its full path in the pool's target; a name that would leave it is refused."""
        if os.path.isabs(vol.path):
            directory, name = os.path.split(vol.path)
            if os.path.normpath(directory) != os.path.normpath(spec.target):
                raise InvalidRequest("volume path %r is not in the target %s of pool %s"
                                     % (vol.path, spec.target, spec.name))
        else:
            name = vol.path
        check_file_name("volumes[].name", name)
        if not 0 < vol.capacity <= MAX_VOLUME_BYTES:
            raise InvalidRequest("volumes[].capacity=%d for %s is out of range: it must be between 1 byte and 8 EiB "
                                 "(libvirt's limit)" % (vol.capacity, name))
        return dataclasses.replace(vol, path=os.path.join(spec.target, name))

    def _volumes(self, pool, spec, volumes):
        created = []
        if not self.check_mode:
            with libvirt_errors("refresh pool %s" % spec.name):
                pool.refresh(0)
        for vol in volumes:
            path = vol.path
            existing = None
            if pool is not None:
                try:
                    existing = pool.storageVolLookupByName(os.path.basename(path))
                except Exception as exc:
                    if not is_error(exc, "VIR_ERR_NO_STORAGE_VOL"):
                        raise
            if existing is not None:
                facts = volume_facts(existing)
                if facts["format"] != vol.format or facts["capacity"] < vol.capacity:
                    raise InvalidRequest(
                        "Volume %s exists as %s of %d bytes; asked for %s of %d bytes. It is never resized or "
                        "replaced" % (path, facts["format"], facts["capacity"], vol.format, vol.capacity))
                continue
            self._act("create volume %s" % path, lambda xml=vol.xml(): pool.createXML(xml, 0))
            created.append(path)
        return created

    def _result(self, before, after_spec, pool):
        result = {
            "changed": bool(self.actions),
            "actions": list(self.actions),
            "diff": {
                "before": before.pretty_xml() if before is not None else "",
                "after": after_spec.pretty_xml() if after_spec is not None else "",
            },
        }
        if pool is not None:
            with libvirt_errors("read the state of pool %s" % after_spec.name):
                state, capacity, allocation, available = pool.info()
                result["pool"] = {
                    "name": after_spec.name,
                    "type": after_spec.type,
                    "target": after_spec.target,
                    "active": bool(pool.isActive()),
                    "autostart": bool(pool.autostart()),
                    "persistent": bool(pool.isPersistent()),
                    "capacity": capacity,
                    "allocation": allocation,
                    "available": available,
                }
        return result
