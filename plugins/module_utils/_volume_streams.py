# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Volume bytes through libvirt streams: the sha256 of a volume as stored, and a byte-for-byte copy from one
host to another (holes stay holes).  A part of VolumeGateway (see _storage.py)."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import KvmMigrationError, libvirt, libvirt_errors
from ansible_collections.kvm.migration.plugins.module_utils._volume import STREAM_CHUNK, VolumeSpec


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


class VolumeStreams:
    """Digest and copy volumes; needs the gateway's existing, create, facts and pool lookup."""

    def digest(self, path, offset=0, length=0, sparse=False):
        """sha256 of the volume's bytes as stored (length 0: to the end), read through libvirt.  With `sparse`,
        holes travel as lengths and are hashed as the zeros they read as."""
        sha = hashlib.sha256()
        vol = self.existing(path)
        sparse = sparse and _sparse_streams()
        with libvirt_errors("read %s on %s" % (path, self.client.uri)):
            stream = self.client.new_stream()
            vol.download(stream, offset, length, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM if sparse else 0)
            _pump(stream, None, sha, sparse)
            stream.finish()
        return sha.hexdigest()

    def copy_from(self, other, path, fmt, sparse=False, journal=True, mode=""):
        """Copy the volume at `path` on `other` (another host's stager) byte for byte to the same path here,
        through libvirt streams; returns the sha256 of what was sent.  The new volume counts as created.
        With `sparse`, holes in the file are sent as lengths, so a sparse raw image stays sparse."""
        source = other.existing(path)
        size = other.physical_size(path)
        target = self.create(VolumeSpec(path, "raw", max(size, 512), mode=mode), journal=journal)
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
