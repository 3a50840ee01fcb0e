# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The collection's exceptions.  Plain Python: code that has nothing to do with libvirt (NFS exports, option
checks) raises these without importing the libvirt layer."""

from __future__ import annotations


class KvmMigrationError(Exception):
    """Base of the collection's errors.  `msg` is for humans, `details` for the result, `hint` says what to do."""

    def __init__(self, msg, details=None, hint=None):
        super().__init__(msg)
        self.msg = msg
        self.details = details or {}
        self.hint = hint

    def append(self, text):
        """Add a sentence to the message (for example where the guest now runs)."""
        self.msg = "%s. %s" % (self.msg.rstrip(". "), text)
        self.args = (self.msg,)


class ConnectionFailed(KvmMigrationError):
    """A libvirt URI could not be opened, or a connection broke."""


class InvalidRequest(KvmMigrationError):
    """The request cannot be carried out as asked; nothing was changed."""


class OperationFailed(KvmMigrationError):
    """A libvirt operation failed."""
