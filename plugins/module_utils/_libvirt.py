# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The libvirt connection layer: open and close connections, lookups that return None when the
object is absent, and the one place where libvirtError becomes the collection's own exceptions.

It imports nothing from Ansible, so it can be used and tested on its own."""

from __future__ import annotations

import contextlib
import traceback
import xml.etree.ElementTree as ET

try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None


class KvmMigrationError(Exception):
    """Base of the collection's errors.  `msg` is for humans, `details` for the result."""

    def __init__(self, msg, details=None, hint=None):
        super().__init__(msg)
        self.msg = msg
        self.details = details or {}
        self.hint = hint


class ConnectionFailed(KvmMigrationError):
    """A libvirt URI could not be opened."""


class InvalidRequest(KvmMigrationError):
    """The request cannot be carried out as asked; nothing was changed."""


class OperationFailed(KvmMigrationError):
    """A libvirt operation failed."""


# libvirt error codes, by name so that this module can be imported without libvirt.
_HINTS = {
    "VIR_ERR_AUTH_FAILED": "check the credentials or the SASL/polkit configuration of the remote libvirtd",
    "VIR_ERR_NO_CONNECT": "check the URI, that libvirtd (or virtqemud/virtproxyd) runs there, and the firewall",
    "VIR_ERR_SYSTEM_ERROR": "check that the host is reachable, its libvirt socket or port is open, "
                            "and (for qemu+ssh) that root's SSH key is trusted and the host key is known",
    "VIR_ERR_OPERATION_ABORTED": "the job was cancelled (by a timeout or by an operator with domjobabort)",
    "VIR_ERR_OPERATION_TIMEOUT": "another job holds the domain; retry when it has finished",
    "VIR_ERR_MIGRATE_UNSAFE": "use cache='none' on the disks, or shared storage that libvirt recognises",
    "VIR_ERR_NO_STORAGE_POOL": "create a storage pool for the image directory on the destination",
}


def error_code_name(code):
    """Name of a libvirt error code, e.g. 'VIR_ERR_NO_DOMAIN' (or the number if unknown)."""
    if libvirt is not None:
        for name in dir(libvirt):
            if name.startswith("VIR_ERR_") and getattr(libvirt, name) == code:
                return name
    return str(code)


@contextlib.contextmanager
def libvirt_errors(action, cls=OperationFailed):
    """Turn a libvirtError raised inside the block into `cls` with "Failed to <action>: <reason>"."""
    try:
        yield
    except Exception as exc:  # libvirt.libvirtError, when libvirt is importable
        if libvirt is None or not isinstance(exc, libvirt.libvirtError):
            raise
        code = error_code_name(exc.get_error_code())
        raise cls(
            "Failed to %s: %s" % (action, (exc.get_error_message() or str(exc)).strip()),
            details={"libvirt_error": code},
            hint=_HINTS.get(code),
        ) from exc


def is_error(exc, *names):
    """True when `exc` is a libvirtError with one of the given code names."""
    return (
        libvirt is not None
        and isinstance(exc, libvirt.libvirtError)
        and any(exc.get_error_code() == getattr(libvirt, n, None) for n in names)
    )


def _silence_default_handler():
    # libvirt prints every error to stderr by default; errors here are raised and reported instead.
    if libvirt is not None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _version_string(number):
    return "%d.%d.%d" % (number // 1000000, (number // 1000) % 1000, number % 1000)


class LibvirtClient:
    """One libvirt connection.  Lookups return None when the object does not exist."""

    def __init__(self, uri, role="host", username=None, password=None):
        self.uri = uri
        self.role = role
        self.username = username
        self.password = password
        self._conn = None

    # -- lifecycle
    def open(self):
        if libvirt is None:
            raise KvmMigrationError("libvirt-python is not importable", details={"traceback": LIBVIRT_IMPORT_ERROR})
        if self._conn is None:
            _silence_default_handler()
            # openAuth with a callback, even one that has nothing to give: only then does libvirt consult
            # auth.conf (for example SASL credentials for qemu+tcp) instead of failing "No worthy mechs found".
            auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], self._credentials, None]
            with libvirt_errors("connect to the %s %s" % (self.role, self.uri), ConnectionFailed):
                self._conn = libvirt.openAuth(self.uri, auth, 0)
        return self

    def _credentials(self, creds, _data):
        for cred in creds:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME and self.username:
                cred[4] = self.username
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE and self.password:
                cred[4] = self.password
            else:
                return -1
        return 0

    @property
    def conn(self):
        if self._conn is None:
            self.open()
        return self._conn

    def close(self):
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- host facts
    def capabilities(self):
        with libvirt_errors("read the capabilities of %s" % self.uri):
            return ET.fromstring(self.conn.getCapabilities())

    def host_uuid(self):
        return self.capabilities().findtext("host/uuid")

    def hostname(self):
        with libvirt_errors("read the hostname of %s" % self.uri):
            return self.conn.getHostname()

    def versions(self):
        with libvirt_errors("read the versions of %s" % self.uri):
            return {
                "libvirt": _version_string(self.conn.getLibVersion()),
                "hypervisor": _version_string(self.conn.getVersion()),
            }

    def free_memory(self):
        with libvirt_errors("read the free memory of %s" % self.uri):
            return self.conn.getFreeMemory()

    # -- lookups
    def lookup_domain(self, name):
        try:
            return self.conn.lookupByName(name)
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_DOMAIN"):
                return None
            with libvirt_errors("look up domain %s on %s" % (name, self.uri)):
                raise

    def lookup_domain_by_uuid(self, uuid):
        try:
            return self.conn.lookupByUUIDString(uuid)
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_DOMAIN"):
                return None
            with libvirt_errors("look up domain %s on %s" % (uuid, self.uri)):
                raise

    def lookup_pool(self, name):
        try:
            return self.conn.storagePoolLookupByName(name)
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_STORAGE_POOL"):
                return None
            with libvirt_errors("look up storage pool %s on %s" % (name, self.uri)):
                raise

    def lookup_volume_by_path(self, path):
        try:
            return self.conn.storageVolLookupByPath(path)
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_STORAGE_VOL", "VIR_ERR_NO_STORAGE_POOL"):
                return None
            with libvirt_errors("look up volume %s on %s" % (path, self.uri)):
                raise

    def list_pools(self):
        with libvirt_errors("list storage pools on %s" % self.uri):
            return self.conn.listAllStoragePools(0)
