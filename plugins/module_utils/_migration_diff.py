# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The diff of a migration (--diff): where the domain runs and is defined before and after, and its definition on
the destination.  Check mode predicts the after side from the request; a real run reads it."""

from __future__ import annotations

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import error_text, libvirt


def placement_text(name, state):
    """'source qemu:///system: running, defined' and the same for the destination, one line each."""
    lines = ["# where %s runs and is defined" % name]
    for side in ("source", "destination"):
        found = state[side]
        kind = "defined" if found.get("persistent") else "transient" if found.get("active") else None
        lines.append("%s %s: %s%s" % (side, found.get("uri"), found.get("state"), ", " + kind if kind else ""))
    return "\n".join(lines) + "\n"


def predicted_state(request, before):
    """Where the domain would be after a migration that check mode reports as changed."""
    source = dict(before["source"])
    dest = dict(before["destination"])
    live = request.live and (source.get("active") or dest.get("active"))
    dest.update(state="running" if live else "shut off", active=bool(live),
                persistent=bool(request.persistent) or not live)
    if request.undefine_source or not source.get("persistent"):
        source.update(state="absent", active=False, persistent=False)
        source.pop("uuid", None)
    else:
        source.update(state="shut off", active=False)
    return {"source": source, "destination": dest}


def definition_text(domain, uri, flags=0, label="definition"):
    """A domain's XML as a diff section ('(none)' when it is absent there; the error when it cannot be read)."""
    header = "# %s on %s\n" % (label, uri)
    if domain is None:
        return header + "(none)\n"
    try:
        return header + domain.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_INACTIVE)
    except Exception as exc:  # the diff never turns a finished migration into a failure
        return header + "(could not be read: %s)\n" % error_text(exc)


def migration_diff(request, before, after, dest_before, dest_after, dest_uri, source_for_after=None):
    """{'before': ..., 'after': ...} text for Ansible's diff display.  `source_for_after` (check mode): the
    source domain whose migratable definition would be defined on the destination."""
    if source_for_after is not None:
        after_definition = definition_text(source_for_after, dest_uri, libvirt.VIR_DOMAIN_XML_MIGRATABLE,
                                           "definition to be made (from the source)")
    else:
        after_definition = definition_text(dest_after, dest_uri)
    return {
        "before": placement_text(request.name, before) + definition_text(dest_before, dest_uri),
        "after": placement_text(request.name, after) + after_definition,
    }
