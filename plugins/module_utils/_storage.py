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

import os
import uuid
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    InvalidRequest,
    is_error,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._volume import (
    pool_target_path,
    transient_being_destroyed,
    volume_facts,
)
from ansible_collections.kvm.migration.plugins.module_utils._volume_journal import VolumeJournal
from ansible_collections.kvm.migration.plugins.module_utils._volume_streams import VolumeStreams
from ansible_collections.kvm.migration.plugins.module_utils._volume_tree import VolumeTree

TRANSIENT_POOL_PREFIX = "kvm-migration-"


class VolumeGateway(VolumeStreams, VolumeJournal, VolumeTree):
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

    def create(self, spec, journal=True):
        """Create the volume `spec` describes; `journal`: mark its directory with this run's journal first."""
        pool = self._pool_for_dir(os.path.dirname(spec.path), create=True)
        if journal and self.journal_uuid:
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

    def rollback(self):
        """Delete the volumes this stager created (a failed migration); returns their paths."""
        removed = []
        for path in reversed(self.created):
            self.drop_journals_in(path)  # a directory this run made goes only when empty
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
