# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Storage pools and volumes through libvirt: find the pool that holds a path, make sure a volume
exists, and remember what was created so that a failed migration can take it back."""

from __future__ import annotations

import dataclasses
import os
import uuid
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, is_error, libvirt_errors

TRANSIENT_POOL_PREFIX = "kvm-migration-"


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
    from xml.etree import ElementTree as ET  # local: only needed here

    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""


class VolumeStager:
    """Makes sure volumes exist on one host, and can undo exactly what it made.

    A directory with no storage pool gets a transient dir pool (it vanishes when destroyed and
    never touches files), so nothing persistent is added to the host."""

    def __init__(self, client):
        self.client = client
        self.created = []
        self._transient_pools = []
        self._pools_by_dir = {}

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
            pool = self.client.conn.storagePoolCreateXML(xml, 0)
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
        with libvirt_errors("create volume %s on %s" % (spec.path, self.client.uri)):
            vol = pool.createXML(spec.xml(), 0)
        self.created.append(spec.path)
        return vol

    def check(self, spec):
        """Problems with the volume at spec.path compared with what it should be (empty: it matches)."""
        vol = self.existing(spec.path)
        if vol is None:
            return ["%s is missing" % spec.path]
        from xml.etree import ElementTree as ET  # local: only needed here

        with libvirt_errors("read volume %s on %s" % (spec.path, self.client.uri)):
            xml = ET.fromstring(vol.XMLDesc(0))
        problems = []
        fmt = xml.find("target/format")
        fmt = fmt.get("type") if fmt is not None else "raw"
        if fmt != spec.format:
            problems.append("%s has format %s, expected %s" % (spec.path, fmt, spec.format))
        capacity = int(xml.findtext("capacity") or 0)
        if capacity != spec.capacity:
            problems.append("%s has virtual size %d, expected %d" % (spec.path, capacity, spec.capacity))
        return problems

    def remove(self, path):
        """Delete the volume at `path` if it exists; returns whether it did."""
        vol = self.existing(path)
        if vol is None:
            return False
        with libvirt_errors("delete %s on %s" % (path, self.client.uri)):
            vol.delete(0)
        return True

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
        return removed

    def close(self):
        """Drop the transient pools (never the files in them)."""
        for pool in self._transient_pools:
            try:
                pool.destroy()
            except Exception:  # transient pools vanish on their own if libvirtd restarted
                pass
        self._transient_pools = []
        self._pools_by_dir = {}
