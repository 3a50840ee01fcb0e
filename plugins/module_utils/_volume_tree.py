# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Small directory trees through libvirt's storage API (an emulated TPM's state): a dir pool lists a
subdirectory as a volume of type dir, makes one from a volume of format dir (mkdir) and deletes it with rmdir,
so a tree is looked at, copied and taken back like any disk, with the same rollback and journal.
A part of VolumeGateway (see _storage.py)."""

from __future__ import annotations

import hashlib
import os
import re
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import (
    InvalidRequest,
    OperationFailed,
    libvirt_errors,
)
from ansible_collections.kvm.migration.plugins.module_utils._volume import VolumeSpec, volume_facts

# A state tree is a handful of small files; more than this is not one.
MAX_TREE_ENTRIES = 64


def directory_xml(name, mode):
    permissions = "<permissions><mode>%s</mode></permissions>" % escape(mode) if mode else ""
    return ("<volume type='dir'><name>%s</name><capacity unit='bytes'>0</capacity><target><format type='dir'/>%s"
            "</target></volume>" % (escape(name), permissions))


class VolumeTree:
    """Look at, copy and remove a directory tree; needs the gateway's pools, create, remove and copy_from."""

    def kind(self, path):
        """'dir', 'file' or None (nothing there, or its parent directory is missing) for `path` on this host."""
        try:
            vol = self.existing(path)
        except InvalidRequest:  # the parent directory is not there
            return None
        if vol is None:
            return None
        with libvirt_errors("read %s on %s" % (path, self.client.uri)):
            return "dir" if volume_facts(vol)["type"] == "dir" else "file"

    def entries(self, directory):
        """The names in `directory` (journals and scratch files of this collection left out)."""
        def names(pool):
            pool.refresh(0)
            return pool.listVolumes()
        with libvirt_errors("list %s on %s" % (directory, self.client.uri)):
            found = sorted(n for n in self._in_pool(directory, names) if not n.startswith(".kvm-migration-"))
        if len(found) > MAX_TREE_ENTRIES:
            raise OperationFailed("%s on %s holds %d entries; a state directory has a handful"
                                  % (directory, self.client.uri, len(found)))
        return found

    def make_directory(self, path, mode="", journal=True):
        """mkdir `path` (and its missing parents) through libvirt; each counts as created, so rollback removes it."""
        parent = os.path.dirname(path)
        if parent != path and self.kind(parent) is None and not self._is_pool_root(parent):
            self.make_directory(parent, mode="0711", journal=False)
        pool = self._pool_for_dir(parent, create=True)
        if journal and self.journal_uuid:
            self._write_journal(pool, parent)
        with libvirt_errors("create directory %s on %s" % (path, self.client.uri)):
            self._in_pool(parent, lambda p: p.createXML(directory_xml(os.path.basename(path), mode), 0))
        self.created.append(path)

    def _is_pool_root(self, directory):
        try:
            return self._pool_for_dir(directory, create=True) is not None
        except InvalidRequest:
            return False

    def copy_tree_from(self, other, path, journal=True):
        """Copy the file or directory tree at `path` on `other` to the same path here, every file byte for byte
        and read back; returns {path: sha256} of the files."""
        copied = {}
        if other.kind(path) == "dir":
            with libvirt_errors("read %s on %s" % (path, other.client.uri)):
                mode = volume_facts(other.existing(path))["mode"]
            self.make_directory(path, mode=_mode_or_private(mode, "0700"), journal=journal)
            for name in other.entries(path):
                copied.update(self.copy_tree_from(other, os.path.join(path, name), journal=False))
            return copied
        with libvirt_errors("read %s on %s" % (path, other.client.uri)):
            facts = volume_facts(other.existing(path))
        mode = _mode_or_private(facts["mode"], "0600")
        if facts["physical"] == 0:  # a lock file: nothing to stream
            self.create(VolumeSpec(path, "raw", 0, mode=mode), journal=journal)
            copied[path] = hashlib.sha256(b"").hexdigest()
            return copied
        sent = self.copy_from(other, path, "raw", journal=journal, mode=mode)
        if self.digest(path) != sent:
            raise OperationFailed("The copy of %s on %s does not match the source" % (path, self.client.uri))
        copied[path] = sent
        return copied

    def remove_tree(self, path):
        """Remove the file or directory tree at `path` (files first, then each directory); returns the paths."""
        removed = []
        kind = self.kind(path)
        if kind == "dir":
            for name in self.entries(path):
                removed += self.remove_tree(os.path.join(path, name))
        if kind is not None and self.remove(path):
            removed.append(path)
        return removed


def _mode_or_private(mode, private):
    """The source's mode, or owner-only when libvirt reports none (libvirt gives the tree to swtpm's user when
    the guest starts)."""
    return mode if re.match(r"^0?[0-7]{3,4}$", mode or "") else private
