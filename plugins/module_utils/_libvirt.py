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
import json
import threading
import time
import traceback
import xml.etree.ElementTree as ET

try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt_qemu
except ImportError:  # part of libvirt-python; only post-copy recovery asks QEMU directly
    libvirt_qemu = None

# The exceptions are re-exported: callers import them from the connection layer.
from ansible_collections.kvm.migration.plugins.module_utils._errors import (  # noqa: F401 pylint: disable=unused-import
    ConnectionFailed,
    InvalidRequest,
    KvmMigrationError,
    OperationFailed,
)


# What the connection layer knows about libvirt's errors: which ones mean a connection is gone (the message
# patterns matter, libvirt reports lost sockets as system or internal errors), and a hint for each kind.
CONNECTION_LOST_PATTERNS = (
    "broken pipe", "connection reset", "end of file while reading data", "cannot recv data", "cannot write data",
    "client socket is closed", "no route to host", "connection refused", "unable to connect to server",
    "lost connection", "connection timed out", "keepalive", "network is unreachable", "host is down",
    "failed to connect socket", "is not connected", "connection closed", "ssh: could not resolve",
    "temporary failure in name resolution", "host key verification failed",
)
_KIND_CODES = {
    "auth": ("VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_CANCELLED", "VIR_ERR_AUTH_UNAVAILABLE"),
    "connection": ("VIR_ERR_NO_CONNECT", "VIR_ERR_INVALID_CONN", "VIR_ERR_RPC"),
    "aborted": ("VIR_ERR_OPERATION_ABORTED",),
    "busy": ("VIR_ERR_OPERATION_TIMEOUT",),
    "unsafe": ("VIR_ERR_MIGRATE_UNSAFE",),
    "no_pool": ("VIR_ERR_NO_STORAGE_POOL",),
}
HINTS = {
    "auth": "check the credentials or the SASL/polkit configuration of the remote libvirtd",
    "connection": "check that the host is reachable, that libvirtd (or virtqemud/virtproxyd) runs there and its "
                  "socket or port is open through the firewall, and (for qemu+ssh) that root's SSH key is trusted "
                  "and the host key is known",
    "aborted": "the job was cancelled (by a timeout of this module or by an operator with domjobabort)",
    "busy": "another job holds the domain; retry when it has finished",
    "unsafe": "use cache='none' on the disks, or shared storage that libvirt recognises",
    "no_pool": "create a storage pool for the image directory on the destination",
    "space": "free space on the destination, or migrate to a host with more room",
}


def error_code_name(code):
    """Name of a libvirt error code, e.g. 'VIR_ERR_NO_DOMAIN' (or the number if unknown)."""
    if libvirt is not None:
        for name in dir(libvirt):
            if name.startswith("VIR_ERR_") and getattr(libvirt, name) == code:
                return name
    return str(code)


def error_text(exc):
    """The message of a libvirtError (or any exception), stripped."""
    get = getattr(exc, "get_error_message", None)
    return ((get() if get else None) or str(exc)).strip()


def error_kind(exc):
    """What a libvirt error is about: 'connection', 'auth', 'aborted', 'busy', 'unsafe', 'no_pool', 'space', or
    'other'.  The one place where libvirt's codes and messages are classified."""
    text = error_text(exc).lower()
    if "no space left on device" in text or "disk quota exceeded" in text:
        return "space"
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        for kind, names in _KIND_CODES.items():
            if is_error(exc, *names):
                return kind
    if any(p in text for p in CONNECTION_LOST_PATTERNS):
        return "connection"
    return "other"


@contextlib.contextmanager
def libvirt_errors(action, cls=OperationFailed):
    """Turn a libvirtError raised inside the block into `cls` with "Failed to <action>: <reason>".  The hint fits
    the kind of error: a connection hint only for errors about connections."""
    try:
        yield
    except Exception as exc:  # libvirt.libvirtError, when libvirt is importable
        if libvirt is None or not isinstance(exc, libvirt.libvirtError):
            raise
        kind = error_kind(exc)
        if kind == "connection" and cls is OperationFailed:
            cls = ConnectionFailed
        raise cls(
            "Failed to %s: %s" % (action, error_text(exc)),
            details={"libvirt_error": error_code_name(exc.get_error_code()), "error_kind": kind},
            hint=HINTS.get(kind),
        ) from exc


def is_error(exc, *names):
    """True when `exc` is a libvirtError with one of the given code names."""
    return (
        libvirt is not None
        and isinstance(exc, libvirt.libvirtError)
        and any(exc.get_error_code() == getattr(libvirt, n, None) for n in names)
    )


def qemu_migration_status(dom):
    """QEMU's own migration status on `dom` ('postcopy-paused', 'completed', ...), or None when it cannot be
    asked.  libvirt's job view lags behind QEMU after a failed post-copy (a completion it missed never shows), so
    post-copy recovery asks QEMU: a read-only query, at the price of libvirt's 'custom-monitor' taint."""
    if libvirt_qemu is None or dom is None:
        return None
    try:
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-migrate"}', 0))
    except Exception:  # no answer (a host gone, QEMU gone); the caller goes by libvirt's view
        return None
    return (reply.get("return") or {}).get("status") or None


def _silence_default_handler():
    # libvirt prints every error to stderr by default; errors here are raised and reported instead.
    if libvirt is not None:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


_EVENT_LOOP = []


def _start_event_loop():
    """libvirt's default event loop in a daemon thread, once per process.  Without one, remote connections
    have no keepalive: a call on a connection whose peer vanished (a cut link, a killed daemon) waits forever.
    With it, libvirt closes such a connection after about 30 s and the call fails."""
    if _EVENT_LOOP or libvirt is None:
        return
    try:
        libvirt.virEventRegisterDefaultImpl()
    except Exception:  # another event loop is registered already: keepalive works through it
        _EVENT_LOOP.append(None)
        return

    def run():
        while True:
            try:
                libvirt.virEventRunDefaultImpl()
            except Exception:  # keep serving the other connections
                time.sleep(0.1)

    thread = threading.Thread(target=run, name="libvirt-event-loop", daemon=True)
    thread.start()
    _EVENT_LOOP.append(thread)


def _version_string(number):
    return "%d.%d.%d" % (number // 1000000, (number // 1000) % 1000, number % 1000)


# Client keepalive: a peer that misses 5 probes 5 s apart is gone (libvirt's own defaults for its daemons).
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 5


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
            _start_event_loop()
            # openAuth with a callback, even one that has nothing to give: only then does libvirt consult
            # auth.conf (for example SASL credentials for qemu+tcp) instead of failing "No worthy mechs found".
            auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], self._credentials, None]
            with libvirt_errors("connect to the %s %s" % (self.role, self.uri), ConnectionFailed):
                self._conn = libvirt.openAuth(self.uri, auth, 0)
            with contextlib.suppress(Exception):  # local and test connections have no keepalive
                self._conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
        return self

    def twin(self, role=None):
        """Another, independent connection to the same URI (calls on it never queue behind this one's)."""
        return LibvirtClient(self.uri, role=role or self.role, username=self.username, password=self.password)

    def alive(self):
        """Whether the connection is open and its peer still answers."""
        if self._conn is None:
            return False
        try:
            return bool(self._conn.isAlive())
        except Exception:  # a closed connection
            return False

    def reconnect(self, within=0.0, interval=2.0):
        """Drop the connection and open it again, retrying for up to `within` seconds.  Returns self; raises
        ConnectionFailed with the last reason when the host stays unreachable."""
        deadline = time.monotonic() + within
        while True:
            self.close()
            try:
                return self.open()
            except ConnectionFailed:
                if time.monotonic() + interval > deadline:
                    raise
            time.sleep(interval)

    def last_error(self):
        """The last error libvirt recorded on this connection (a message), or None."""
        if self._conn is None:
            return None
        try:
            err = self._conn.virConnGetLastError()
        except Exception:  # the binding or the connection cannot tell
            return None
        return (err[2] or "").strip() or None if err else None

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

    def network_state(self, name):
        """'active', 'inactive' or 'absent': a libvirt virtual network on this host."""
        try:
            net = self.conn.networkLookupByName(name)
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_NETWORK"):
                return "absent"
            with libvirt_errors("look up network %s on %s" % (name, self.uri)):
                raise
        with libvirt_errors("read the state of network %s on %s" % (name, self.uri)):
            return "active" if net.isActive() else "inactive"

    def host_interface_state(self, name):
        """'active', 'inactive' or 'absent': a host network interface (a bridge, a NIC).  Asks the interface
        driver, or else the node-device driver (Debian ships no interface driver); None when neither answers."""
        try:
            iface = self.conn.interfaceLookupByName(name)
            with libvirt_errors("read the state of interface %s on %s" % (name, self.uri)):
                return "active" if iface.isActive() else "inactive"
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_INTERFACE"):
                return "absent"
            if not is_error(exc, "VIR_ERR_NO_SUPPORT", "VIR_ERR_NO_CONNECT"):
                with libvirt_errors("look up interface %s on %s" % (name, self.uri)):
                    raise
        try:
            devices = self.conn.listAllDevices(getattr(libvirt, "VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET", 1 << 4))
        except Exception as exc:
            if is_error(exc, "VIR_ERR_NO_SUPPORT", "VIR_ERR_NO_CONNECT"):
                return None
            with libvirt_errors("list the network devices of %s" % self.uri):
                raise
        for dev in devices:
            # An empty bridge has no carrier (link state down) and is still usable: being there is enough.
            if ET.fromstring(dev.XMLDesc(0)).findtext("capability/interface") == name:
                return "active"
        return "absent"

    def list_pools(self):
        with libvirt_errors("list storage pools on %s" % self.uri):
            return self.conn.listAllStoragePools(0)

    def list_domains(self):
        with libvirt_errors("list the domains on %s" % self.uri):
            return self.conn.listAllDomains(0)

    # -- objects made through the connection
    def define_domain(self, xml):
        with libvirt_errors("define a domain on %s" % self.uri):
            return self.conn.defineXML(xml)

    def create_transient_pool(self, xml):
        """A pool that exists until destroyed (or the host reboots); raises the raw libvirtError so that the
        caller can tell a missing directory from other failures."""
        return self.conn.storagePoolCreateXML(xml, 0)

    def define_pool(self, xml):
        return self.conn.storagePoolDefineXML(xml, 0)

    def new_stream(self):
        with libvirt_errors("open a data stream to %s" % self.uri):
            return self.conn.newStream(0)

    def domain_stats(self, domain, stats):
        """domainListGetStats for one domain: its typed parameters as a dict."""
        with libvirt_errors("read the statistics of %s on %s" % (domain.name(), self.uri)):
            return self.conn.domainListGetStats([domain], stats)[0][1]

    # -- CPU models
    def domain_capabilities(self, arch, machine, virttype):
        with libvirt_errors("read the domain capabilities of %s" % self.uri):
            return ET.fromstring(self.conn.getDomainCapabilities(None, arch, machine, virttype, 0))

    def baseline_hypervisor_cpu(self, arch, virttype, cpu_xmls, flags):
        return self.conn.baselineHypervisorCPU(None, arch, None, virttype, list(cpu_xmls), flags)

    def baseline_cpu(self, cpu_xmls, flags):
        return self.conn.baselineCPU(list(cpu_xmls), flags)

    def compare_hypervisor_cpu(self, arch, virttype, cpu_xml):
        return self.conn.compareHypervisorCPU(None, arch, None, virttype, cpu_xml, 0)
