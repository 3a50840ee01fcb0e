# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""Storage pools as desired state, for the storage_pool module: a pool described by options or XML, made to
exist (defined, built, started, autostarted) or to be gone, with the volumes it should hold."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
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
from ansible_collections.kvm.migration.plugins.module_utils._storage import VolumeGateway
from ansible_collections.kvm.migration.plugins.module_utils._volume import (
    MAX_VOLUME_BYTES,
    pool_target_path,
    volume_facts,
)

POOL_TYPES = ("dir", "netfs")
NETFS_FORMATS = ("auto", "nfs", "glusterfs", "cifs")


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
        stager = VolumeGateway(self.client)
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
