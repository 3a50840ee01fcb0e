# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""A volume as the collection wants it (VolumeSpec), sizes in bytes, and libvirt's view of a volume or pool:
the vocabulary every volume operation shares."""

from __future__ import annotations

import dataclasses
import os
import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest, is_error

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
    mode: str = ""  # octal permissions; libvirt's default (0600) when empty

    def xml(self):
        parts = [
            "<volume>",
            "<name>%s</name>" % escape(os.path.basename(self.path)),
            "<capacity unit='bytes'>%d</capacity>" % self.capacity,
            # Allocation 0 keeps thin images thin (libvirt would otherwise preallocate raw files).
            "<allocation unit='bytes'>0</allocation>",
            "<target><format type='%s'/>%s</target>" % (escape(self.format), (
                "<permissions><mode>%s</mode></permissions>" % escape(self.mode)) if self.mode else ""),
        ]
        if self.backing_path:
            parts.append("<backingStore><path>%s</path><format type='%s'/></backingStore>"
                         % (escape(self.backing_path), escape(self.backing_format or "raw")))
        parts.append("</volume>")
        return "".join(parts)

    def as_dict(self):
        found = dataclasses.asdict(self)
        if not self.mode:
            del found["mode"]
        return found


def pool_target_path(pool):
    return ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""


def volume_facts(vol):
    """Format, virtual size and backing file of a volume, from libvirt's view of the image."""
    xml = ET.fromstring(vol.XMLDesc(0))
    fmt = xml.find("target/format")
    backing_fmt = xml.find("backingStore/format")
    return {
        "path": xml.findtext("target/path"),
        "type": xml.get("type") or "file",
        "mode": xml.findtext("target/permissions/mode") or "",
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
