# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The files the collection writes next to volumes and later recognises: the journal of a run (so a re-run
knows the files at its planned paths are its own leftovers), shared-storage markers and the scratch files of a
bandwidth measurement (always removed; swept when a run died).  A part of VolumeGateway (see _storage.py)."""

from __future__ import annotations

import os
import re
import time
import uuid

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import KvmMigrationError, is_error, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._volume import VolumeSpec

# The journal: an empty file this collection writes in a destination directory before it creates volumes there
# for a domain, and removes when the migration succeeded or was rolled back.  A re-run that finds it knows the
# files at its planned paths are its own leftovers (an interrupted run) and removes them instead of refusing.
JOURNAL_PREFIX = ".kvm-migration-journal-"
# Scratch files of a bandwidth measurement and shared-storage markers: always removed; one older than this that
# is still there was left by a run that died, and is swept.
SCRATCH_PREFIXES = (".kvm-migration-bandwidth-", ".kvm-migration-shared-")


def journal_name(domain_uuid):
    return "%s%s.raw" % (JOURNAL_PREFIX, domain_uuid)


class VolumeJournal:
    """Journals, markers and scratch files; needs the gateway's pools and volume lookups."""

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

    def drop_journals_in(self, directory):
        """Remove this run's journal in `directory` now (the directory itself is about to go)."""
        directory = os.path.normpath(directory)
        for path in [j for j in self._journals if os.path.dirname(j) == directory]:
            try:
                self.remove(path)
            except KvmMigrationError:  # then the directory stays too, and the next run sweeps both
                continue
            self._journals.remove(path)

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
