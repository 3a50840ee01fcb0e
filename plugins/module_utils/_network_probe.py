# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The data path: the destination's name as the source resolves it, and the migration ports through the
firewall, probed from the source."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from urllib.parse import urlparse


from ansible_collections.kvm.migration.plugins.module_utils._report import FAIL, PASS, SKIP


# qemu.conf migration_port_min: the first port carries RAM, the next one the NBD disk copy.
MIGRATION_PORTS = (49152, 49153)


PORT_TIMEOUT = 2.0


def resolve(host):
    """(address, None) or (None, reason), as the source host resolves `host`."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return None, exc.strerror
    return infos[0][4][0], None


def probe_port(address, port, timeout=PORT_TIMEOUT):
    """(True, note) if a TCP connection reaches the host's port (accepted, or refused because nothing
    listens yet); (False, reason) if a firewall or the network stops it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        return True, "open"
    except ConnectionRefusedError:
        return True, "closed (nothing listens until a migration starts)"
    except socket.timeout:
        return False, "no answer within %.0f s (filtered)" % timeout
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
            return False, "%s (rejected by a firewall)" % os.strerror(exc.errno)
        return False, os.strerror(exc.errno) if exc.errno else str(exc)
    finally:
        sock.close()


class NetworkChecks:
    """The network check of the preflight.

    A part of Preflight (see _preflight.py), which holds the connections, the request, the stagers, the
    report and what was located."""

    def _network(self):
        req = self.request
        if self.offline:
            self.report.add("network", SKIP, "offline: the disks and the definition travel over the libvirt "
                            "connection, not the migration ports")
            return
        if urlparse(self.source.uri).hostname:
            self.report.add("network", SKIP, "the module runs away from the source host (uri %s); run it on the "
                            "source to check the migration data path" % self.source.uri)
            return
        problems, notes = [], []
        targets = []
        if req.migrate_uri:
            targets.append(("migrate_uri", urlparse(req.migrate_uri).hostname or req.migrate_uri))
        else:
            targets.append(("destination hostname", self.dest.hostname()))
        if req.disks_uri:
            targets.append(("disks_uri", urlparse(req.disks_uri).hostname or req.disks_uri))
        checked = set()
        for label, host in targets:
            address, error = resolve(host)
            if error:
                problems.append("the %s %s does not resolve on the source (%s)" % (label, host, error))
                continue
            if ipaddress.ip_address(address).is_loopback:
                problems.append("the %s %s resolves to %s, a loopback address, on the source" % (label, host, address))
                continue
            notes.append("%s %s -> %s" % (label, host, address))
            if address in checked:
                continue
            checked.add(address)
            for port in MIGRATION_PORTS:
                reachable, why = probe_port(address, port)
                if not reachable:
                    problems.append("port %d on %s (%s) is not reachable from the source: %s" % (port, host, address, why))
        if problems:
            self.report.add("network", FAIL, "; ".join(problems),
                            "open 49152-49215/tcp on the destination's firewall (firewall-cmd --add-port); make the "
                            "destination's name resolve on the source, set migration_host in its qemu.conf, or "
                            "pass migrate_uri/disks_uri with its address")
        else:
            self.report.add("network", PASS, "migration data path open: %s; ports %s reachable"
                            % (", ".join(notes), ", ".join(map(str, MIGRATION_PORTS))))
