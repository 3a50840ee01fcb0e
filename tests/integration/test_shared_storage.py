"""NFS as far as this machine allows: the kernel has no NFS server and no NFS client, so nothing can be served
or mounted.  What runs for real: the exports file and exportfs (userspace, it fills /var/lib/nfs/etab), the
persistent mount definitions, the netfs pool definitions, and the clear refusal to start an NFS server where
the kernel has no nfsd.  The data path of shared storage is proven in test_storage.py with a directory both
hosts mount at the same path, and with a disk served over NBD."""

from __future__ import annotations

import pytest
from helpers import ROOT

pytestmark = pytest.mark.usefixtures("lab")

SERVER, OTHER = "hv-b", "hv-a"
PLAYBOOK = ROOT / "playbooks" / "shared_storage.yml"
EXPORTS = "/etc/exports.d/export-vmstore.exports"
EXPORT_OPTIONS = ("rw", "sync", "no_root_squash", "no_subtree_check")


def share(ansible, check=False, **args):
    return ansible.module(SERVER, "kvm.migration.nfs_share", {"path": "/export/vmstore", **args}, check=check,
                          diff=True).task("probe")


def test_shared_storage_role_and_nfs_share(lab, ansible):
    role_vars = {"shared_storage_server": SERVER, "shared_storage_mount_state": "present",
                 "shared_storage_pool_state": "present"}
    # No kernel nfsd here: the role refuses to start the server, and says why.
    run = ansible.playbook(PLAYBOOK, role_vars)
    assert run.failed
    refusal = run.task("Refuse to go on without a kernel NFS server", host=SERVER)
    assert "its kernel has no nfsd filesystem" in refusal["msg"]

    # Without starting the server, the role does everything else.
    role_vars["shared_storage_server_service"] = False
    run = ansible.playbook(PLAYBOOK, role_vars)
    assert not run.failed, run.stdout[-4000:]
    exports = lab.exec(SERVER, ["cat", EXPORTS]).stdout
    # The role exports to every hypervisor of the inventory (the lab may hold two or three).
    assert exports.splitlines()[-1] == "/export/vmstore " + " ".join(
        "%s(%s)" % (host.ip, ",".join(EXPORT_OPTIONS)) for host in lab.hosts)
    assert "/export/vmstore" in lab.exec(SERVER, ["exportfs", "-v"]).stdout
    for host in (SERVER, OTHER):
        # libvirt owns the mount (the default): a netfs pool, and nothing in fstab.
        assert "/var/lib/libvirt/shared" not in lab.exec(host, ["cat", "/etc/fstab"]).stdout
        pool = lab.exec(host, ["virsh", "pool-dumpxml", "shared"]).stdout
        assert "<pool type='netfs'>" in pool and "<dir path='/export/vmstore'/>" in pool
        assert "<path>/var/lib/libvirt/shared</path>" in pool
    again = ansible.playbook(PLAYBOOK, role_vars)
    assert not again.failed and again.changed == 0

    # fstab owns the mount: a persistent mount, and a plain dir pool over the mount point.
    for host in (SERVER, OTHER):
        lab.exec(host, ["virsh", "pool-undefine", "shared"])
    by_fstab = dict(role_vars, shared_storage_mount_owner="fstab")
    run = ansible.playbook(PLAYBOOK, by_fstab)
    assert not run.failed, run.stdout[-4000:]
    for host in (SERVER, OTHER):
        fstab = lab.exec(host, ["cat", "/etc/fstab"]).stdout
        assert "hv-b:/export/vmstore /var/lib/libvirt/shared nfs rw,hard,proto=tcp,vers=4.2,_netdev 0 0" in fstab
        pool = lab.exec(host, ["virsh", "pool-dumpxml", "shared"]).stdout
        assert "<pool type='dir'>" in pool and "<path>/var/lib/libvirt/shared</path>" in pool
        assert "/export/vmstore" not in pool
    again = ansible.playbook(PLAYBOOK, by_fstab)
    assert not again.failed and again.changed == 0

    # nfs_share itself: idempotent, check mode with a diff, validation before any change, absent.
    assert not share(ansible, clients=[{"host": host.ip, "options": list(EXPORT_OPTIONS)}
                                       for host in lab.hosts])["changed"]
    planned = share(ansible, check=True, clients=[{"host": "10.88.0.11", "options": ["ro"]}])
    assert planned["changed"] and "10.88.0.11(ro)" in planned["diff"]["after"]
    assert lab.exec(SERVER, ["cat", EXPORTS]).stdout == exports
    for clients, message in (
        ([{"host": "*", "options": ["rw"]}], "needs allow_any_client: true"),
        ([{"host": "10.88.0.0/24", "options": ["rw", "no_root_squash"]}], "allow it only for single hypervisors"),
        ([{"host": "10.88.0.11", "options": ["rw", "bogus"]}], "unknown export option 'bogus'"),
    ):
        refused = share(ansible, clients=clients)
        assert refused["failed"] and message in refused["msg"], refused["msg"]
        assert lab.exec(SERVER, ["cat", EXPORTS]).stdout == exports
    missing = ansible.module(SERVER, "kvm.migration.nfs_share",
                             {"path": "/export/nowhere", "clients": [{"host": "10.88.0.11"}]}).task("probe")
    assert missing["failed"] and "Export path /export/nowhere does not exist" in missing["msg"]
    assert lab.exec(SERVER, ["test", "-e", "/etc/exports.d/export-nowhere.exports"], check=False).returncode != 0
    gone = share(ansible, state="absent")
    assert gone["changed"] and lab.exec(SERVER, ["test", "-e", EXPORTS], check=False).returncode != 0
    assert "/export/vmstore" not in lab.exec(SERVER, ["exportfs", "-v"]).stdout
    assert lab.exec(SERVER, ["test", "-d", "/export/vmstore"], check=False).returncode == 0
    for host in (SERVER, OTHER):
        lab.exec(host, "virsh pool-undefine shared; sed -i '\\#/var/lib/libvirt/shared#d' /etc/fstab", check=False)
