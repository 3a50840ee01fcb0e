# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""NFS exports (exports(5)): validate clients and options, render and parse export lines, work out an exports
file's wanted content, and write it with exportfs applied, put back as it was when exportfs fails.  Plain Python:
nothing here imports the libvirt layer."""

from __future__ import annotations

import ipaddress
import os
import re

from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest, OperationFailed

# exports(5) options; those with "=" take a value.
FLAG_OPTIONS = {
    "rw", "ro", "sync", "async", "secure", "insecure", "wdelay", "no_wdelay", "hide", "nohide", "crossmnt",
    "subtree_check", "no_subtree_check", "secure_locks", "insecure_locks", "auth_nlm", "no_auth_nlm", "mountpoint",
    "mp", "nordirplus", "pnfs", "no_pnfs", "security_label", "root_squash", "no_root_squash", "all_squash",
    "no_all_squash",
}
VALUE_OPTIONS = {"fsid", "refer", "replicas", "anonuid", "anongid", "sec", "mountpoint", "mp", "xprtsec"}
CONTRADICTIONS = [("rw", "ro"), ("sync", "async"), ("root_squash", "no_root_squash"), ("all_squash", "no_all_squash"),
                  ("secure", "insecure"), ("wdelay", "no_wdelay"), ("hide", "nohide"),
                  ("subtree_check", "no_subtree_check")]
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
WILDCARD = re.compile(r"^[A-Za-z0-9*?.\[\]-]+$")


def client_kind(host):
    """'any', 'host', 'address', 'network', 'wildcard' or 'netgroup' for an exports(5) client."""
    if host == "*":
        return "any"
    if host.startswith("@"):
        return "netgroup"
    try:
        net = ipaddress.ip_network(host, strict=False)
    except ValueError:
        net = None
    if net is not None:
        return "address" if net.num_addresses == 1 else "network"
    if any(c in host for c in "*?["):
        if not WILDCARD.match(host):
            raise InvalidRequest("Client %r is not a valid hostname pattern" % host)
        return "wildcard"
    if not HOSTNAME.match(host):
        raise InvalidRequest("Client %r is not a hostname, address, network, wildcard or @netgroup" % host)
    return "host"


def validate_options(host, options):
    """The options of one client, checked against exports(5); returns them without duplicates, in order."""
    seen = []
    for opt in options:
        name, _sep, value = opt.partition("=")
        if not re.match(r"^[a-z_]+$", name):
            raise InvalidRequest("Client %s: %r is not an export option" % (host, opt))
        if value and name not in VALUE_OPTIONS:
            raise InvalidRequest("Client %s: option %s takes no value" % (host, name))
        if not value and name not in FLAG_OPTIONS:
            raise InvalidRequest(
                "Client %s: unknown export option %r" % (host, opt)
                if name not in VALUE_OPTIONS else "Client %s: option %s needs a value (%s=...)" % (host, name, name))
        if any(c in value for c in " ,()"):
            raise InvalidRequest("Client %s: the value of %s may not contain spaces, commas or parentheses" % (host, name))
        if opt not in seen:
            seen.append(opt)
    names = {o.partition("=")[0] for o in seen}
    for a, b in CONTRADICTIONS:
        if a in names and b in names:
            raise InvalidRequest("Client %s: options %s and %s contradict each other" % (host, a, b))
    return seen


def validate_export(path, clients, allow_any_client=False):
    """Check an export; returns the normalized clients [{'host', 'options'}]."""
    if not path.startswith("/") or any(c.isspace() or ord(c) < 32 or c in '"#\\' for c in path) \
            or ".." in path.split("/"):
        raise InvalidRequest("Export path %r must be absolute, without '..', and without spaces, newlines, quotes, "
                             "'#' or backslashes (exports(5) would read them differently)" % path)
    if not clients:
        raise InvalidRequest("Export %s has no clients; name the hypervisors that may mount it" % path)
    result = []
    for client in clients:
        host = client["host"]
        kind = client_kind(host)
        if kind == "any" and not allow_any_client:
            raise InvalidRequest(
                "Export %s to every host ('*') needs allow_any_client: true; list the hypervisors instead" % path)
        options = validate_options(host, client.get("options") or [])
        if "no_root_squash" in options and kind not in ("host", "address"):
            raise InvalidRequest(
                "Client %s: no_root_squash gives root on every matching machine root on the export; allow it only for "
                "single hypervisors (a hostname or one address), not %s"
                % (host, {"any": "every host ('*')"}.get(kind, "a " + kind)))
        result.append({"host": host, "options": options})
    hosts = [c["host"] for c in result]
    duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
    if duplicates:
        raise InvalidRequest("Export %s lists clients more than once: %s" % (path, ", ".join(duplicates)))
    return result


def render_line(path, clients):
    return "%s %s" % (path, " ".join("%s(%s)" % (c["host"], ",".join(c["options"])) if c["options"] else c["host"]
                                     for c in clients))


def find_line(text, path):
    """Index of the line that exports `path` in an exports file's text, or None."""
    for i, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped.split()[0].strip('"') == path:
            return i
    return None


HEADER = "# Managed by kvm.migration.nfs_share - local changes are overwritten.\n"


def exports_file(name, path, exports_file_path=None):
    """The file an export lives in: the one given, or /etc/exports.d/<name>.exports (a name with '/' or '..' is
    refused by the caller's check, so it never leaves that directory)."""
    return exports_file_path or "/etc/exports.d/%s.exports" % name


def desired_content(current, path, line, present, shared_file):
    """The wanted text of the exports file: in a shared file (exports_file) only the line for `path` changes;
    a file of our own holds the header and the one line.  None: the file should not exist."""
    if shared_file:
        lines = current.splitlines()
        index = find_line(current, path)
        if not present:
            if index is not None:
                del lines[index]
        elif index is None:
            lines.append(line)
        else:
            lines[index] = line
        return "\n".join(lines) + "\n" if lines else ""
    return HEADER + line + "\n" if present else None


def write_file(target, content, atomic_move):
    """Write `content` to `target` through a temporary file and `atomic_move`; None removes the file."""
    if content is None:
        if os.path.exists(target):
            os.unlink(target)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = "%s.kvm-migration.tmp" % target
    with open(tmp, "w") as handle:
        handle.write(content)
    os.chmod(tmp, 0o644)
    atomic_move(tmp, target)


def apply_exports(target, wanted, before, atomic_move, exportfs=None):
    """Write the wanted content and, with `exportfs` (a callable running `exportfs -ra` that returns (rc, out,
    err)), apply it.  A failed apply puts the file back as it was (`before`: its text, or None when it did not
    exist), so no half-made export is left.  Returns exportfs's output."""
    write_file(target, wanted, atomic_move)
    if exportfs is None:
        return None
    rc, out, err = exportfs()
    if rc != 0:
        write_file(target, before, atomic_move)
        raise OperationFailed(
            "exportfs -ra failed (rc=%d) after writing %s, which was restored: %s" % (rc, target, (err or out).strip()),
            hint="is the NFS server installed and running? (systemctl status nfs-server; on a kernel without nfsd "
                 "it cannot run)")
    return (out + err).strip()
