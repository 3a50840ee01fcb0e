#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvm.migration contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Make a libvirt domain run on a destination host, by live or offline migration
version_added: 0.1.0
description:
  - Desired state - the domain O(name) is active on the host at O(dest_uri) (with O(live=false), defined there). If it
    already is, and it is not active on the source, nothing happens.
  - If a migration of the domain to O(dest_uri) is already running (started by another client, or by an earlier run
    that was cut off), the module waits for it instead of starting a second one (RV(operation=attach)), then
    converges as for a domain that is already there. Its timeouts apply to the job it waits for; a timeout action
    V(postcopy) then aborts, since post-copy may not be enabled for that job.
  - One run at a time per domain on the host the module runs on - a run whose controller was killed goes on to
    finish its migration there, and a run started meanwhile waits for it (up to 30 minutes, with a lock under
    C(/run/lock/kvm-migration) that is removed again), then converges from the state it left. Check mode does not
    wait and writes nothing.
  - With O(live=false) a shut-off domain moves offline - its images are copied and verified, then its definition;
    see O(live). The destination's definition records where it came from, so that a run with O(undefine_source=false)
    is a no-op while the source images are unchanged.
  - Otherwise the module live-migrates it peer-to-peer from the source (O(uri), normally the local host the task
    runs on) to the destination. The source libvirtd connects to O(dest_uri) itself, so O(dest_uri) must be
    reachable from the source host.
  - With O(storage=copy_all) every local writable disk is copied. The module first creates each destination
    volume with the same format and virtual size, so a thin qcow2 image stays thin.
  - The source definition is removed only after the domain verifiably runs (and, with O(persistent), is
    defined) on the destination.
  - If the migration fails or is aborted, the guest keeps running on the source (offline - stays defined there) and the
    module removes what it made on the destination (the half-made domain and the volumes it created), then fails with
    the reason.
  - Before anything changes, the module runs the same checks as M(kvm.migration.preflight) - connection, host UUIDs,
    the domain's state, its name on the destination, CPU, memory, machine type, devices, network interfaces (each
    network and bridge up on the destination), UEFI firmware and TPM, disk cache modes, destination storage, and the migration data path -
    and refuses with the full report when any of them fails.
author:
  - kvm.migration maintainers (@kvm-migration)
extends_documentation_fragment:
  - kvm.migration.libvirt
  - kvm.migration.migration
  - kvm.migration._attributes
  - kvm.migration._attributes.actiongroup_migration
attributes:
  check_mode:
    support: full
    details:
      - Check mode runs the preflight on both hosts and reports it with the planned flags and volumes, and changes
        nothing.
  diff_mode:
    support: full
    details:
      - The diff shows where the domain runs and is defined on both hosts, before and after, and its definition
        on the destination (in check mode, the source's migratable definition that would be made there).
  idempotent:
    support: partial
    details:
      - The first run migrates; a second run finds the domain active on the destination and reports no change.
      - When a stale, shut-off definition of the same domain (same UUID) remains on the source and
        O(undefine_source=true), a later run removes it and reports a change.
      - A domain that runs on the destination without a persistent definition is defined there when
        O(persistent=true), and that is reported as a change.
options:
  persistent:
    description:
      - Define the domain persistently on the destination.
    type: bool
    default: true
  undefine_source:
    description:
      - Remove the source definition once the domain verifiably runs on the destination. The source disk images
        are never deleted by this option.
    type: bool
    default: true
  source_cleanup:
    description:
      - After a verified migration, delete the source images that were copied. The destination must first check
        out - the domain runs there (persistent if asked), uses the copied images, and each image has the source's
        format and virtual size.
      - Images that another domain on the source still uses are kept. Nothing is ever deleted after a failure.
      - The guest's UEFI variable store and emulated TPM state on the source (libvirt keeps them when it
        undefines the domain) are deleted too, once the destination holds its own.
      - Needs O(undefine_source=true), so that no source definition is left without its disks.
    type: bool
    default: false
  verify_copies:
    description:
      - With O(live=false), read every copied image back from the destination and compare its sha256 with what was
        sent. The read-back moves each image a second time over the libvirt connection (in the other direction), so it
        about doubles the time the guest stays down; with V(false) each copy is still checked for format, virtual
        size and backing file.
      - Backing files (templates) that are copied are always verified by sha256.
    type: bool
    default: true
  tls:
    description:
      - Encrypt the migration streams (RAM and disks) with TLS (C(VIR_MIGRATE_TLS)). Both hosts need QEMU's TLS
        certificates in C(/etc/pki/qemu); the C(kvm.migration.hypervisor_prep) role sets them up for the tls
        transport.
    type: bool
    default: false
  bandwidth:
    description:
      - Bandwidth cap for the migration in MiB/s. V(0) means no cap.
      - QEMU counts every byte it processes against the cap, zero blocks of a copied disk too, so a cap also
        slows the copy of a thin disk. To tell the V(auto) strategy how fast the link is, use O(link_speed).
    type: int
    default: 0
  link_speed:
    description:
      - The speed of the migration link in MiB/s, as the operator knows it, for the prediction of the V(auto)
        strategy instead of measuring it. Not a cap.
      - Measuring sends O(measure_mib) through libvirt's own connection, which over C(qemu+ssh) is bound by SSH
        encryption and often slower than the link that QEMU's migration streams get.
      - With O(bandwidth) too, the lower of the two counts.
    type: int
    default: 0
  strategy:
    description:
      - V(auto) - before starting, measure the guest's dirty rate (and the bandwidth, unless O(bandwidth) caps it),
        predict whether pre-copy converges (see M(kvm.migration.dirtyrate)) and choose - pre-copy (with auto-converge
        as a safety net), auto-converge, or post-copy when O(postcopy) allows it; refuse, before any change, a
        migration that cannot finish. While it runs, raise the allowed downtime step by step (O(max_downtime) up to
        250 ms) as progress stalls, then switch to post-copy when allowed.
      - V(manual) - exactly the flags the options ask for, and the downtime schedule in O(downtime_schedule).
      - The result's RV(strategy) holds what was measured, predicted and chosen, and what happened.
    type: str
    choices: [auto, manual]
    default: auto
  max_downtime:
    description:
      - The longest pause of the guest at the switch-over, in milliseconds, at the start.
    type: int
    default: 250
  downtime_schedule:
    description:
      - Downtimes (ms) to step through, lowest first, each time progress stalls for O(downtime_step_interval) seconds
        (as oVirt does, 100 -> 150 -> 200 -> 300 -> 400 -> 500). Default - O(max_downtime) only with V(manual); with
        V(auto), steps of up to 100 ms from O(max_downtime) up to 250 ms (QEMU overshoots its limit by up to about 210 ms on
        a loaded host, so the real pause stays within 500 ms).
    type: list
    elements: int
  downtime_step_interval:
    description:
      - Seconds without progress before the next step of the downtime schedule.
    type: float
    default: 5
  parallel_connections:
    description:
      - Migrate RAM over this many connections (C(VIR_MIGRATE_PARALLEL), multifd); about one per 10 Gbit/s of link.
        V(0) uses one.
    type: int
    default: 0
  compression:
    description:
      - Compress the RAM stream (C(VIR_MIGRATE_COMPRESSED)). V(xbzrle) sends deltas of re-dirtied pages and helps
        guests that rewrite the same memory; V(zlib) and V(zstd) need O(parallel_connections).
    type: str
    choices: [none, xbzrle, zlib, zstd]
    default: none
  auto_converge:
    description:
      - Throttle the guest's vCPUs when pre-copy does not progress (C(VIR_MIGRATE_AUTO_CONVERGE)). Not given - off with
        V(manual), on with V(auto) (it costs nothing while pre-copy progresses).
    type: bool
  postcopy:
    description:
      - V(off) - never.
      - V(immediate) - switch to post-copy as soon as RAM is being sent (after the disk copy; a switch during the disk
        copy would be ignored by QEMU).
      - V(on_demand) - enable it, and switch when a timeout action or the V(auto) strategy asks for it.
      - Post-copy needs C(vm.unprivileged_userfaultfd=1) on the destination (the C(hypervisor_prep) role sets it with
        C(hypervisor_prep_postcopy)). Once switched, the migration cannot be aborted; if it fails, the module tries to
        resume it and never destroys either side.
    type: str
    choices: ["off", immediate, on_demand]
    default: "off"
  postcopy_bandwidth:
    description:
      - Bandwidth cap for the post-copy phase in MiB/s. V(0) means no cap, as in QEMU and C(virsh migrate
        --postcopy-bandwidth) - O(bandwidth) does not apply after the switch.
      - Every page the guest touches and the destination does not have yet waits for the network in post-copy, so
        a cap makes that phase, and the guest's slowdown, last longer; set it to protect a shared link.
    type: int
    default: 0
  completion_timeout:
    description:
      - Seconds per GiB of RAM plus copied disk after which O(completion_action) is taken (Nova's 800), at least 120
        seconds in all. O(timeout) overrides it.
    type: int
    default: 800
  completion_action:
    description:
      - What to do when the completion timeout passes - V(abort) (the guest keeps running on the source), V(postcopy)
        (switch; needs O(postcopy)), or V(pause) (pause the guest so the copy finishes, as C(virsh --timeout-suspend);
        it runs again on the destination).
    type: str
    choices: [abort, postcopy, pause]
    default: abort
  progress_timeout:
    description:
      - Seconds without progress (the data remaining does not shrink) after which O(progress_action) is taken, as
        KubeVirt's 150. V(0) never.
    type: int
    default: 150
  progress_action:
    description:
      - What to do when the progress timeout passes; see O(completion_action).
    type: str
    choices: [abort, postcopy, pause]
    default: abort
  measure_mib:
    description:
      - MiB sent to the destination to measure the bandwidth (V(auto) strategy without O(bandwidth) or
        O(link_speed)).
    type: int
    default: 32
  timeout:
    description:
      - Seconds after which O(completion_action) is taken, whatever the amount of data. V(0) uses
        O(completion_timeout).
      - libvirt and QEMU never give up on a migration that does not converge; these timeouts are what stop it.
    type: int
    default: 0
  poll_interval:
    description:
      - Seconds between two readings of the migration job's progress.
    type: float
    default: 0.5
notes:
  - The migration is peer-to-peer (C(VIR_MIGRATE_PEER2PEER)) with C(VIR_MIGRATE_ABORT_ON_ERROR).
  - libvirt and QEMU never give up on a migration that does not converge; the completion and progress timeouts are
    what stop it.
seealso:
  - module: kvm.migration.migration_info
  - name: libvirt migration documentation
    description: How libvirt migrates domains.
    link: https://libvirt.org/migration.html
"""

EXAMPLES = r"""
- name: Make web01 run on hv2 (the task runs on the current host, hv1)
  kvm.migration.migrate:
    name: web01
    dest_uri: qemu+ssh://hv2/system
  register: moved

- name: Predict what would happen, changing nothing
  kvm.migration.migrate:
    name: web01
    dest_uri: qemu+ssh://hv2/system
  check_mode: true
  register: plan

- name: Migrate over a dedicated network, capped at 500 MiB/s, giving up after 10 minutes
  kvm.migration.migrate:
    name: db01
    dest_uri: qemu+tcp://hv2/system
    migrate_uri: tcp://192.168.50.12
    disks_uri: tcp://192.168.50.12
    bandwidth: 500
    timeout: 600
"""

RETURN = r"""
strategy:
  description:
    - How the migration was steered - C(requested) (auto or manual), C(measured) (dirty rate, bandwidth, touched RAM;
      auto only), C(prediction) (see M(kvm.migration.dirtyrate); auto only), C(chosen), the C(downtime_schedule),
      C(events) (downtime steps, post-copy switch, pause, abort, each with the time and the reason) and C(finished_by)
      (pre-copy, post-copy or pausing the guest).
  returned: when operation is migrate
  type: dict
  sample: {requested: auto, chosen: auto-converge, downtime_schedule: [200, 300],
           measured: {dirty_rate_mib_s: 36.0, bandwidth: {mib_per_s: 23.8, source: bandwidth cap}},
           prediction: {converges: false, strategy: auto_converge, rho: 1.51},
           events: [{t: 12.0, event: set_downtime 300, reason: no progress for 5 s}], finished_by: pre-copy}
preflight:
  description:
    - The preflight report, see M(kvm.migration.preflight). When it has blockers, the module fails and the report is
      in the failure result.
  returned: always
  type: dict
  sample: {verdict: pass, nothing_to_do: false, blockers: [], warnings: [],
           checks: [{name: cpu, status: pass, message: "the domain's CPU (EPYC) runs on the destination (identical)"}]}
operation:
  description:
    - What the run did, or would do in check mode - V(migrate), V(none) (already there), V(attach) (waited for a
      migration that was already running), or what converging an existing copy took, joined with C(+) -
      V(persist), V(undefine_source), V(cleanup_source) (for example V(attach+undefine_source)).
  returned: always
  type: str
  sample: migrate
reason:
  description: Why that action was chosen.
  returned: always
  type: str
  sample: domain web01 runs on the source
flags:
  description: The libvirt migration flags used (lower case, without the C(VIR_MIGRATE_) prefix).
  returned: when operation is migrate
  type: list
  elements: str
  sample: [live, peer2peer, abort_on_error, persist_dest, non_shared_disk]
name:
  description: The domain's name, as given in O(name).
  returned: always
  type: str
  sample: web01
storage:
  description: The storage mode requested (O(storage)); RV(storage_plan) holds the mode actually used.
  returned: when operation is migrate
  type: str
  sample: auto
storage_plan:
  description:
    - What happens to the domain's storage - C(mode) is the mode used (C(copy_all), C(copy_incremental) or
      C(shared)), C(copied) and C(shared) list the disk targets, C(templates) the backing files copied or found,
      and C(stale_removed_first) what an interrupted run left that is removed before copying.
  returned: when operation is migrate
  type: dict
  sample: {requested: auto, mode: copy_all, copied: [vda], shared: [], templates: []}
nvram_copied:
  description: The UEFI variable store an offline move copied (checked by sha256), or null when there is none.
  returned: when operation is migrate and O(live=false)
  type: str
  sample: /var/lib/libvirt/qemu/nvram/web01_VARS.fd
tpm_state_copied:
  description:
    - The files of the emulated TPM's state (C(/var/lib/libvirt/swtpm/<uuid>), or the definition's own path) an
      offline move copied, each checked by sha256; empty when the domain has no emulated TPM, or it never ran
      with one.
    - libvirt gives the files to swtpm's user when the guest starts on the destination.
  returned: when operation is migrate and O(live=false)
  type: list
  elements: str
  sample: [/var/lib/libvirt/swtpm/5ab0c8a2-1f37-4f7e-9a35-3c3a7c1b2d10/tpm2/tpm2-00.permall]
preflight_retries:
  description:
    - Errors of objects that vanished while the checks read them (a volume or the domain deleted between lookup
      and read, typically by an interrupted run's module still finishing on the host); the checks ran again
      after each, for at most 30 seconds.
  returned: when the checks had to look again
  type: list
  elements: str
  sample: ["Failed to read volume /var/lib/libvirt/images/web01.qcow2 on qemu:///system: Storage volume not found"]
waited_for_other_run:
  description:
    - How long this run waited for another run of the module for the same domain on this host (C(seconds)), and
      that run's process and start time (C(holder)).
  returned: when another run held the domain's lock
  type: dict
  sample: {seconds: 41.5, holder: {pid: 43122, since: 1764840000}}
timeout:
  description: The timeout in seconds that applied to the migration job.
  returned: when operation is migrate and O(live=true)
  type: int
  sample: 200
disks:
  description: The domain's disks as read from its definition.
  returned: when operation is migrate
  type: list
  elements: dict
  sample: [{target: vda, device: disk, type: file, source: /var/lib/libvirt/images/web01.qcow2, format: qcow2,
            cache: none, readonly: false, shareable: false, backing: []}]
volumes:
  description: The destination volumes planned (path, format, capacity in bytes).
  returned: when operation is migrate
  type: list
  elements: dict
  sample: [{path: /var/lib/libvirt/images/web01.qcow2, format: qcow2, capacity: 67108864, backing_path: "",
            backing_format: ""}]
copied:
  description: The images an offline migration copied, each with its size, modification time and sha256 on the
    source, and C(read_back) - whether the destination's copy was read back and gave the same sha256 (O(verify_copies)).
  returned: when an offline migration ran
  type: list
  elements: dict
  sample: [{target: vda, path: /var/lib/libvirt/images/web01.qcow2, size: 1376256, mtime: "1764652800.123456789",
            sha256: 3f0c2b1e..., read_back: true}]
events:
  description: What the module did to a migration it attached to (a pause or an abort on a timeout), with the time
    and the reason.
  returned: when operation is attach
  type: list
  elements: dict
  sample: []
stale_removed:
  description:
    - Files that an interrupted run of the same migration left on the destination (recognised by its journal file
      C(.kvm-migration-journal-UUID.raw)), removed before copying; and the journals themselves, removed when
      the domain is found already on the destination (the interrupted run got it there). A failed run's result instead carries
      C(guest_location), C(cause) (the error, the causes found and their kind) and C(strategy).
  returned: when such files were found
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/web01.qcow2]
volumes_created:
  description: Paths of the volumes the module created on the destination.
  returned: when a migration ran
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/web01.qcow2]
stats:
  description:
    - The completed job statistics as libvirt reports them (C(virDomainGetJobStats)), merged from the destination
      and the source (the source's view holds the disk figures). Times in milliseconds, sizes in bytes.
  returned: when a migration ran
  type: dict
  sample: {time_elapsed: 1843, downtime: 61, data_total: 289406976, data_processed: 121634816,
           memory_dirty_rate: 0, memory_iteration: 3, disk_total: 67108864, disk_processed: 67108864}
summary:
  description: The figures an operator reads first.
  returned: when a migration ran
  type: dict
  contains:
    wall_time_s:
      description: Seconds from the start of the module's work to the verified result.
      type: float
    time_elapsed_ms:
      description: Duration of the migration job.
      type: int
    downtime_ms:
      description: How long the guest was paused for the switch-over.
      type: int
    data_total_bytes:
      description: Total data the job had to consider (RAM and disks).
      type: int
    data_processed_bytes:
      description: Data actually transferred.
      type: int
    memory_processed_bytes:
      description: RAM transferred.
      type: int
    disk_processed_bytes:
      description: Disk data transferred.
      type: int
    memory_dirty_rate_pages_s:
      description: The guest's dirty page rate during the last iteration.
      type: int
    iterations:
      description: Number of pre-copy iterations over RAM.
      type: int
    memory_bps:
      description: Memory transfer rate at the end, in bytes per second.
      type: int
  sample: {wall_time_s: 3.1, time_elapsed_ms: 1843, downtime_ms: 61, data_processed_bytes: 121634816, iterations: 3}
source_disks_removed:
  description: Source images deleted by O(source_cleanup) after the verified migration.
  returned: when O(source_cleanup=true) and a migration ran
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/web01.qcow2]
source_state_removed:
  description:
    - What the guest kept on the source outside its disks (its UEFI variable store, its emulated TPM's state
      directory) and O(source_cleanup) deleted, once the destination holds its own copy.
    - Nothing in a directory both hosts share is deleted.
  returned: when O(source_cleanup=true) and a migration ran, or the domain was already on the destination
  type: list
  elements: str
  sample: [/var/lib/libvirt/swtpm/5ab0c8a2-1f37-4f7e-9a35-3c3a7c1b2d10]
progress:
  description: Samples of the running job, taken every O(poll_interval) seconds (thinned out on long runs).
  returned: when a live migration ran, or one was attached to
  type: list
  elements: dict
  sample: [{t: 0.5, data_processed: 52428800, data_remaining: 236978176, memory_bps: 104857600, iteration: 1}]
state:
  description: The domain on both hosts after the run (or now, in check mode).
  returned: always
  type: dict
  contains:
    source:
      description: C(state) (V(absent), V(running), V(shutoff), ...), C(active), C(persistent), C(uuid) and C(uri).
      type: dict
    destination:
      description: The same for the destination.
      type: dict
  sample: {source: {state: absent, active: false, persistent: false, uri: "qemu:///system"},
           destination: {state: running, active: true, persistent: true, uuid: 3f0c..., uri: "qemu+ssh://hv2/system"}}
"""

from ansible_collections.kvm.migration.plugins.module_utils._migration import Migration, MigrationRequest
from ansible_collections.kvm.migration.plugins.module_utils._module import MIGRATION_ARGUMENT_SPEC, LibvirtModule
from ansible_collections.kvm.migration.plugins.module_utils._run_lock import RunLock


def run_module(module):
    request = MigrationRequest.from_params(module.params)
    request.validate()  # before any connection: bad input changes nothing anywhere
    source = module.client(role="source")
    dest = module.client(request.dest_uri, role="destination", connect=False)
    migration = Migration(source, dest, request)
    if module.check_mode:
        result = migration.execute(check_mode=True)
    else:
        # A run whose controller was killed may still be finishing this domain's migration here: wait for it.
        with RunLock(request.name) as lock:
            result = migration.execute()
            if module.diff_mode:
                result["diff"] = migration.diff(result)
        if lock.holder is not None:
            result["waited_for_other_run"] = {"seconds": round(lock.waited, 1), "holder": lock.holder}
    if module.check_mode and module.diff_mode:
        result["diff"] = migration.diff(result, check_mode=True)
    module.exit_json(**result)


def main():
    argument_spec = dict(MIGRATION_ARGUMENT_SPEC)
    argument_spec.update({
        "persistent": {"type": "bool", "default": True},
        "undefine_source": {"type": "bool", "default": True},
        "source_cleanup": {"type": "bool", "default": False},
        "tls": {"type": "bool", "default": False},
        "verify_copies": {"type": "bool", "default": True},
        "strategy": {"type": "str", "default": "auto", "choices": ["auto", "manual"]},
        "max_downtime": {"type": "int", "default": 250},
        "downtime_schedule": {"type": "list", "elements": "int"},
        "downtime_step_interval": {"type": "float", "default": 5},
        "parallel_connections": {"type": "int", "default": 0},
        "compression": {"type": "str", "default": "none", "choices": ["none", "xbzrle", "zlib", "zstd"]},
        "auto_converge": {"type": "bool"},
        "postcopy": {"type": "str", "default": "off", "choices": ["off", "immediate", "on_demand"]},
        "postcopy_bandwidth": {"type": "int", "default": 0},
        "completion_timeout": {"type": "int", "default": 800},
        "completion_action": {"type": "str", "default": "abort", "choices": ["abort", "postcopy", "pause"]},
        "progress_timeout": {"type": "int", "default": 150},
        "progress_action": {"type": "str", "default": "abort", "choices": ["abort", "postcopy", "pause"]},
        "measure_mib": {"type": "int", "default": 32},
        "bandwidth": {"type": "int", "default": 0},
        "link_speed": {"type": "int", "default": 0},
        "timeout": {"type": "int", "default": 0},
        "poll_interval": {"type": "float", "default": 0.5},
    })
    module = LibvirtModule(argument_spec=argument_spec, supports_check_mode=True)
    module.run(run_module)


if __name__ == "__main__":
    main()
