# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The record an offline move writes into the destination's definition (domain metadata): where the domain
came from and each copied image's size, modification time and sha256, so a re-run recognises its own copy."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import is_error, libvirt, libvirt_errors


# The record an offline move leaves in the destination's definition (domain metadata), to recognise its own copy.
OFFLINE_RECORD_NS = "https://github.com/kvm-migration/kvm.migration/offline/1"


OFFLINE_RECORD_PREFIX = "kvmmig"


def _attr(value):
    return escape(str(value), {"'": "&apos;", '"': "&quot;"})


def offline_record_xml(source_host_uuid, source_uri, images):
    """The record an offline move writes into the destination's definition: where the domain came from, and
    each copied image's size, modification time and sha256 on the source."""
    parts = ["<move source_host_uuid='%s' source_uri='%s' at='%d'>"
             % (_attr(source_host_uuid), _attr(source_uri), int(time.time()))]
    for image in images:
        parts.append("<image path='%s' size='%d' mtime='%s' sha256='%s'/>"
                     % (_attr(image["path"]), image["size"], _attr(image["mtime"]), _attr(image["sha256"])))
    parts.append("</move>")
    return "".join(parts)


def read_offline_record(dom):
    """The offline move record of a domain's persistent definition, as a dict, or None."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OFFLINE_RECORD_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except Exception as exc:
        if is_error(exc, "VIR_ERR_NO_DOMAIN_METADATA", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_NO_SUPPORT"):
            return None
        with libvirt_errors("read the metadata of %s" % dom.name()):
            raise
    root = ET.fromstring(text)
    return {
        "source_host_uuid": root.get("source_host_uuid"),
        "source_uri": root.get("source_uri"),
        "at": int(root.get("at") or 0),
        "images": [{"path": i.get("path"), "size": int(i.get("size") or 0), "mtime": i.get("mtime") or "",
                    "sha256": i.get("sha256")} for i in root.iter() if i.tag.rsplit("}", 1)[-1] == "image"],
    }
