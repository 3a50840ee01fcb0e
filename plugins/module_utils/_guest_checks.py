# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# FOR INTERNAL COLLECTION USE ONLY.
# This file is private to kvm.migration and may change in any release without notice.

"""The preflight's checks of what the guest's definition needs from the destination: the machine type and
emulator, devices that cannot move, the networks and bridges its NICs plug into, and what lives outside the
disks (UEFI firmware and variable store, an emulated TPM's state)."""

from __future__ import annotations

import os

from ansible_collections.kvm.migration.plugins.module_utils._libvirt import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._report import FAIL, PASS, WARN


class GuestFitChecks:
    """Checks of the guest against the destination; a part of Preflight (see _preflight.py), which holds the
    connections, the request, the stagers, the report and what it located."""

    def _machine(self):
        spec = self.located.spec
        machines, emulators = set(), set()
        for guest in self.dest.capabilities().findall("guest"):
            arch = guest.find("arch")
            if arch is None or arch.get("name") != spec.arch:
                continue
            for m in arch.iter("machine"):
                machines.add(m.text)
                if m.get("canonical"):
                    machines.add(m.get("canonical"))
            emulators.update((e.text or "").strip() for e in arch.iter("emulator"))
        problems, hints, details = [], [], {}
        if spec.machine and spec.machine not in machines:
            problems.append("machine type %s (%s) is not supported by the destination's QEMU" % (spec.machine, spec.arch))
            hints.append("upgrade QEMU on the destination; migration to an older QEMU is not supported")
            details["supported"] = sorted(m for m in machines if m)
        if spec.emulator and emulators and spec.emulator not in emulators:
            # libvirt keeps the <emulator> path across a migration (RHEL's /usr/libexec/qemu-kvm, Debian's
            # /usr/bin/qemu-system-x86_64).
            problems.append("the domain's emulator %s does not exist on the destination (it has %s)"
                            % (spec.emulator, ", ".join(sorted(emulators))))
            hints.append("set <emulator> in the domain to a path the destination has (a symlink there also works)")
            details["emulators"] = sorted(emulators)
        if problems:
            self.report.add("machine", FAIL, "; ".join(problems), " / ".join(hints), **details)
        else:
            self.report.add("machine", PASS, "machine type %s and emulator %s are available on the destination"
                            % (spec.machine, spec.emulator or "(default)"))

    def _devices(self):
        blockers = []
        for dev in self.located.spec.hostdevs:
            blockers.append("host device passthrough (%s %s)" % (dev["type"], dev["address"] or dev["model"] or ""))
        blockers += self.located.spec.unmigratable_devices
        if blockers and self.offline:
            self.report.add("devices", WARN, "offline: the destination needs the same host devices before the domain "
                            "starts there: %s" % ", ".join(blockers),
                            "make the devices available on the destination, or detach them", devices=blockers)
        elif blockers:
            self.report.add("devices", FAIL, "devices that cannot migrate: %s" % ", ".join(blockers),
                            "detach them before migrating (virsh detach-device), or migrate offline", devices=blockers)
        else:
            self.report.add("devices", PASS, "no device that prevents migration")

    def _interfaces(self):
        """Every network, bridge and device the guest's NICs plug into must exist and be up on the destination,
        or the migration fails late (after the disk copy began) with QEMU's tap error."""
        problems, unknown = [], []
        for nic in self.located.spec.interfaces:
            kind = "network" if nic["type"] == "network" else "host interface"
            what = "%s %s (NIC %s)" % (kind, nic["source"], nic["mac"] or "?")
            if nic["type"] == "network":
                state = self.dest.network_state(nic["source"])
            else:
                state = self.dest.host_interface_state(nic["source"])
            if state is None:
                unknown.append(what)
            elif state != "active":
                problems.append("%s is %s" % (what, "missing" if state == "absent" else "not active"))
        hint = ("create or start them on the destination (virsh net-start NAME for a libvirt network; the bridge "
                "in the host's network configuration), or change the guest's interface source")
        if problems and self.offline:
            self.report.add("interfaces", WARN, "offline: the domain will not start on the destination until these "
                            "exist there: %s" % "; ".join(problems), hint, interfaces=problems)
        elif problems:
            self.report.add("interfaces", FAIL, "the destination lacks what the guest's network interfaces use: %s"
                            % "; ".join(problems), hint, interfaces=problems)
        elif unknown:
            self.report.add("interfaces", WARN, "the destination's libvirt cannot list host interfaces, so these were "
                            "not checked: %s" % "; ".join(unknown), "make sure they exist there", interfaces=unknown)
        elif self.located.spec.interfaces:
            self.report.add("interfaces", PASS, "every network and bridge the guest uses is up on the destination: %s"
                            % ", ".join(sorted({n["source"] for n in self.located.spec.interfaces})))
        else:
            self.report.add("interfaces", PASS, "no interface that needs a network or bridge on the destination")

    def _dest_has(self, path):
        try:
            return self.stager.existing(path) is not None
        except InvalidRequest:  # its directory does not exist there
            return False

    def _dest_journal(self, path):
        """Whether an interrupted run of this move left its journal next to `path` on the destination."""
        try:
            return self.stager.has_journal(os.path.dirname(path), self.located.spec.uuid)
        except InvalidRequest:  # its directory does not exist there
            return False

    def _firmware(self):
        """UEFI firmware, the guest's variable store (NVRAM) and an emulated TPM live outside the disks.  A live
        move needs the firmware and a way to make the variable store on the destination (QEMU then writes the
        guest's variables into it after the switch) and swtpm there; an offline move copies the store."""
        spec = self.located.spec
        if not (spec.loader or spec.nvram or spec.tpm_emulator):
            self.report.add("firmware", PASS, "no UEFI variable store or emulated TPM to carry")
            return
        problems, warnings, notes = [], [], []
        if spec.loader and not self._dest_has(spec.loader):
            (warnings if self.offline else problems).append("the firmware %s is missing" % spec.loader)
        if spec.nvram and self.offline:
            if self._dest_has(spec.nvram) and not self._dest_journal(spec.nvram):
                problems.append("the destination already has a variable store at %s; refusing to overwrite it"
                                % spec.nvram)
            else:
                notes.append("the variable store %s is copied with the disks" % spec.nvram)
        elif spec.nvram and not self._dest_has(spec.nvram):
            if spec.nvram_template and not self._dest_has(spec.nvram_template):
                problems.append("the variable store %s is not there and its template %s is missing too"
                                % (spec.nvram, spec.nvram_template))
            else:
                notes.append("libvirt makes the variable store %s from %s, QEMU writes the guest's variables into "
                             "it after the switch" % (spec.nvram, spec.nvram_template or "the firmware's template"))
        if spec.tpm_emulator:
            caps = self.dest.domain_capabilities(spec.arch, spec.machine, spec.domain_type)
            models = [v.text for v in caps.findall("devices/tpm/enum[@name='backendModel']/value")]
            if "emulator" not in models:
                # Offline too: libvirt refuses to define the domain there, after the disks were copied.
                problems.append("the destination's libvirt offers no emulated TPM (swtpm is not installed)")
            elif self.offline:
                self._tpm_state(spec, problems, warnings, notes)
            else:
                notes.append("QEMU carries the emulated TPM's state in the migration stream")
        hint = ("install the firmware (ovmf / edk2-ovmf) and swtpm (hypervisor_prep_swtpm) on the destination; a variable "
                "store or TPM state left there by an earlier copy of this guest can be removed (migrate with "
                "source_cleanup removes what the guest leaves behind when it moves)")
        if problems:
            self.report.add("firmware", FAIL, "; ".join(problems), hint, problems=problems)
        elif warnings:
            self.report.add("firmware", WARN, "; ".join(warnings + notes), hint)
        else:
            self.report.add("firmware", PASS, "; ".join(notes) or "firmware present on the destination")

    def _tpm_state(self, spec, problems, warnings, notes):
        """Offline: the emulated TPM's state travels as the tree libvirt keeps it in, unless the destination
        already holds one for this guest that this move did not leave."""
        if not spec.tpm_state:
            warnings.append("the emulated TPM's state is kept where this collection does not copy it from: the guest "
                            "starts with a new TPM there")
        elif self.source_stager.kind(spec.tpm_state) is None:
            notes.append("the emulated TPM has no state on the source yet (the guest never ran with it)")
        elif self.stager.kind(spec.tpm_state) is not None and not self._dest_journal(spec.tpm_state):
            problems.append("the destination already holds TPM state at %s; refusing to overwrite it"
                            % spec.tpm_state)
        else:
            notes.append("the emulated TPM's state %s is copied with the disks" % spec.tpm_state)
