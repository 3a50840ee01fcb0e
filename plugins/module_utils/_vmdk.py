# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Read a VMDK's descriptor (a text descriptor file, or the one embedded in a monolithicSparse or streamOptimized
image) and find every file the disk is made of: its extents and, for a snapshot delta, its parents.  Every file
must sit next to the descriptor under a plain name, so nothing a .vmdk names can lead outside its datastore
directory.  Plain Python, no libvirt."""

from __future__ import annotations

import os
import re
import struct

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest

MAX_DESCRIPTOR_BYTES = 64 * 1024
MAX_CHAIN = 32  # ESXi allows 32 snapshots in a chain
SPARSE_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = struct.pack("<Q", 0x00000000CAFEBABE)
NO_PARENT = "ffffffff"
CREATE_TYPES = ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "vmfs",
                "vmfsSparse", "vmfsThin", "streamOptimized", "seSparse")
REFUSED_TYPES = {
    "vmfsrdm": "a raw device mapping (the data is on a SAN LUN, not in a file)",
    "vmfsrawdevicemap": "a raw device mapping (the data is on a SAN LUN, not in a file)",
    "vmfspassthroughrawdevicemap": "a raw device mapping (the data is on a SAN LUN, not in a file)",
    "fulldevice": "a whole host device",
    "partitioneddevice": "host disk partitions",
}
_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$')
_PAIR = re.compile(r'^([A-Za-z][A-Za-z0-9_.]*)\s*=\s*"?([^"]*)"?\s*$')
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\\]")


def _plain_name(name, what, descriptor):
    if not name or name in (".", "..") or "/" in name or _UNSAFE_NAME.search(name):
        raise InvalidRequest(
            "%s names its %s as %r; only a plain file name in the same directory is accepted (no '/', '\\', '..' "
            "or control characters)" % (descriptor, what, name),
            hint="copy the disk's files into one directory and make the descriptor name them without a path")
    return name


def _embedded_descriptor(path, head):
    """The descriptor text embedded in a sparse extent, or None for an extent without one."""
    try:
        (_version, _flags, _capacity, _grain, offset, size) = struct.unpack_from("<IIQQQQ", head, 4)
    except struct.error:
        raise InvalidRequest("%s is not a VMDK: its sparse header is cut short" % path)
    if offset == 0 or size == 0:
        return None
    if size * 512 > MAX_DESCRIPTOR_BYTES:
        raise InvalidRequest("%s is not a valid VMDK: its embedded descriptor claims %d bytes" % (path, size * 512))
    with open(path, "rb") as f:
        f.seek(offset * 512)
        data = f.read(size * 512)
    return data.split(b"\0", 1)[0]


def read_descriptor(path):
    """(descriptor text, whether it is embedded in a sparse image) for a .vmdk, or InvalidRequest."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_DESCRIPTOR_BYTES + 1)
    except OSError as exc:
        raise InvalidRequest("cannot read the disk %s: %s" % (path, exc.strerror or exc))
    if head.startswith(SPARSE_MAGIC):
        text = _embedded_descriptor(path, head)
        if text is None:
            raise InvalidRequest("%s is a sparse extent without a descriptor; give the .vmdk descriptor that "
                                 "lists it" % path)
        embedded = True
    elif head.startswith(COWD_MAGIC) or head.startswith(SESPARSE_MAGIC):
        raise InvalidRequest("%s is a snapshot extent, not a descriptor; give the .vmdk descriptor that lists it" % path)
    else:
        # qemu-img pads descriptors with NULs; anything after them makes it binary
        text, _nul, rest = head.partition(b"\0")
        if len(head) > MAX_DESCRIPTOR_BYTES or rest.strip(b"\0\n"):
            raise InvalidRequest("%s is not a VMDK descriptor: it is binary or larger than %d KiB (for a "
                                 "monolithicFlat or vmfs disk, give the small .vmdk, not the -flat.vmdk)"
                                 % (path, MAX_DESCRIPTOR_BYTES // 1024))
        embedded = False
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = text.decode("latin-1")
    if not re.search(r"^\s*createType\s*=", decoded, re.M):
        raise InvalidRequest("%s is not a VMDK: it has no descriptor with a createType" % path)
    return decoded, embedded


def parse_descriptor(text, path):
    """The descriptor's fields (lower-case keys) and its extents [{access, sectors, type, file, offset}]."""
    fields, extents = {}, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        extent = _EXTENT.match(line)
        if extent:
            extents.append({"access": extent.group(1), "sectors": int(extent.group(2)), "type": extent.group(3),
                            "file": extent.group(4), "offset": int(extent.group(5) or 0)})
            continue
        pair = _PAIR.match(line)
        if pair:
            fields[pair.group(1).lower()] = pair.group(2).strip()
    create_type = fields.get("createtype", "")
    if create_type.lower() in REFUSED_TYPES:
        raise InvalidRequest("%s is %s (createType %s), which cannot be converted from files"
                             % (path, REFUSED_TYPES[create_type.lower()], create_type),
                             hint="copy the LUN's data to a file-backed disk in VMware first (Storage vMotion)")
    if create_type not in CREATE_TYPES:
        raise InvalidRequest("%s has createType %r, which is not a VMDK type this module converts (%s)"
                             % (path, create_type, ", ".join(CREATE_TYPES)))
    if not extents:
        raise InvalidRequest("%s lists no extent: the descriptor is cut short or corrupt" % path)
    return fields, extents


def _check_extent(directory, descriptor, extent, embedded):
    if extent["type"] == "ZERO":
        return None
    name = _plain_name(extent["file"], "extent", descriptor)
    extent_path = os.path.join(directory, name)
    if embedded and os.path.abspath(extent_path) == os.path.abspath(descriptor):
        return extent_path
    try:
        size = os.stat(extent_path).st_size
    except OSError:
        raise InvalidRequest("%s lists the extent %r, which is missing from %s" % (descriptor, name, directory),
                             hint="copy every file of the disk from the datastore (ls the VM's folder there)")
    if extent["type"] in ("FLAT", "VMFS"):
        needed = (extent["offset"] + extent["sectors"]) * 512
        if size < needed:
            raise InvalidRequest("the extent %s has %d bytes but %s says it holds %d: it was copied incompletely"
                                 % (extent_path, size, descriptor, needed))
    else:
        with open(extent_path, "rb") as f:
            magic = f.read(8)
        if not (magic.startswith(SPARSE_MAGIC) or magic.startswith(COWD_MAGIC) or magic == SESPARSE_MAGIC):
            raise InvalidRequest("the extent %s is not a sparse VMDK extent (bad magic %r): it is corrupt"
                                 % (extent_path, magic[:4]))
    return extent_path


def read_layer(path):
    """One VMDK (a descriptor and its extents): its files, type, size in bytes and parent's file name."""
    text, embedded = read_descriptor(path)
    fields, extents = parse_descriptor(text, path)
    directory = os.path.dirname(os.path.abspath(path))
    files = [os.path.abspath(path)]
    for extent in extents:
        extent_path = _check_extent(directory, path, extent, embedded)
        if extent_path and os.path.abspath(extent_path) not in files:
            files.append(os.path.abspath(extent_path))
    parent = None
    if fields.get("parentcid", NO_PARENT).lower() != NO_PARENT:
        hint_name = fields.get("parentfilenamehint", "")
        if not hint_name:
            raise InvalidRequest("%s is a snapshot delta (parentCID %s) without a parentFileNameHint"
                                 % (path, fields.get("parentcid")))
        parent = os.path.join(directory, _plain_name(hint_name, "parent disk", path))
    return {"path": os.path.abspath(path), "create_type": fields["createtype"], "files": files,
            "size": sum(e["sectors"] for e in extents) * 512, "parent": parent, "cid": fields.get("cid", ""),
            "parent_cid": fields.get("parentcid", NO_PARENT).lower()}


def read_chain(path):
    """The disk's layers from the one the .vmx names down to its base; every file checked."""
    chain, seen = [], set()
    current = path
    while current:
        real = os.path.realpath(current)
        if real in seen:
            raise InvalidRequest("the snapshot chain of %s loops back to %s" % (path, current))
        if len(chain) >= MAX_CHAIN:
            raise InvalidRequest("the snapshot chain of %s is longer than %d" % (path, MAX_CHAIN))
        seen.add(real)
        if not os.path.isfile(current):
            what = "the parent disk" if chain else "the disk"
            raise InvalidRequest("%s %s is missing" % (what, current),
                                 hint="copy every file of the VM's datastore folder, snapshot deltas and their "
                                      "parents included")
        layer = read_layer(current)
        if chain and chain[-1]["parent_cid"] != layer["cid"].lower():
            raise InvalidRequest("%s says its parent %s has CID %s, but that disk has CID %s: the chain was "
                                 "changed after the snapshot" % (chain[-1]["path"], current, chain[-1]["parent_cid"],
                                                                 layer["cid"]))
        chain.append(layer)
        current = layer["parent"]
    return chain
